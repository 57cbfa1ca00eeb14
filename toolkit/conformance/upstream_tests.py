"""vLLM's own tests (selected files of tests/v1/core from the pinned source) against both builds, and the
tests the series itself ships (test files its patches add under tests/, as upstream asks of a PR) in the
dynamo-base build.

The same test files run in the stock venv and in the dynamo-base venv; the check passes when every test
has the same outcome in both. The tests are vLLM's; the offline shims they need are ours, a driver
(toolkit/serving/drivers/upstream_conftest.py) copied as the conftest.py beside them:

- vLLM finds no platform on a machine without a GPU: the CPU platform is selected before the tests import
  vLLM (its V1 scheduler and KV-cache manager are plain Python).
- The tests build VllmConfig without a device config, which the CPU platform needs: DeviceConfig("cpu").
- The tests name Hugging Face models ("facebook/opt-125m"); nothing can be downloaded here, so ModelConfig
  gets a local directory holding a small OPT config.json and a four-token tokenizer for those names (the
  scheduler tests never tokenize, but vLLM 0.9 loads the tokenizer), and HF_HUB_OFFLINE=1.
- The CPU platform refuses block sizes other than 16 without intel_extension_for_pytorch (its attention
  kernels need it); the tests run no attention, so the check is told the extension is there.
- vLLM 0.8.5 replaces a missing triton with a stand-in module that the CPU runtime's torch mistakes for
  triton: torch's compile stack is imported with the stand-in hidden, and OPT is registered in-process.
Tests that need more (a Qwen config from the hub, torchvision or the llava config for multimodal tests)
fail the same way in both builds.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path, PurePosixPath

from toolkit.conformance.checks import FAIL, PASS, CheckResult
from toolkit.envs import install, offline_env, uv_binary, venv_python
from toolkit.git import Git
from toolkit.model import Series
from toolkit.serving.drivers import driver_path
from toolkit.sources import Base

TEST_FILES = (
    "tests/v1/core/test_prefix_caching.py",
    "tests/v1/core/test_specialized_manager.py",
    "tests/v1/core/test_kv_cache_utils.py",
    "tests/v1/core/test_scheduler.py",
)
# A release that renamed one of TEST_FILES ships it under the later name (0.10.x:
# test_single_type_kv_cache_manager.py); HELPER_FILES are taken beside them when the release has them
# (0.10.x's test_scheduler.py imports `.utils`).
RENAMED = {"tests/v1/core/test_specialized_manager.py": "tests/v1/core/test_single_type_kv_cache_manager.py"}
HELPER_FILES = ("tests/v1/core/utils.py",)
# Helpers a release's test files import by their absolute name (0.11.1's tests/v1/core/utils.py imports
# tests.v1.kv_connector.unit.utils): taken at their own path under the run's root, which is on sys.path.
ABSOLUTE_HELPERS = ("tests/v1/kv_connector/unit/utils.py",)


def release_test_files(repo: Git, commit: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(test files, helper files) of TEST_FILES and HELPER_FILES present at `commit`, under the release's
    own names."""
    listed = set(repo.blob_ids(commit, ["tests/v1/core"]))
    tests = tuple(path if path in listed or path not in RENAMED else RENAMED[path] for path in TEST_FILES)
    return tests, tuple(path for path in HELPER_FILES if path in listed)


def ensure_pytest(venv: Path) -> None:
    if subprocess.run([str(venv_python(venv)), "-c", "import pytest"], capture_output=True).returncode != 0:
        install(venv, ["pytest"], installer="uv" if uv_binary() else "pip")


def run_upstream_tests(venv: Path, base: Base, scratch: Path) -> dict[str, str]:
    """{test id: passed | failed | error | skipped} for TEST_FILES of `base` (release_test_files), run in
    `venv`."""
    ensure_pytest(venv)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upstream-tests-", dir=scratch) as tmp:
        root = Path(tmp)
        lay_out_release_tests(Git(base.repo), base.commit, root)
        shutil.copyfile(driver_path("upstream_conftest"), root / "conftest.py")
        return _run_pytest(venv, root, [str(root)])


def lay_out_release_tests(repo: Git, commit: str, root: Path) -> None:
    """Write the release's test files (and helpers) under `root`, the directory pytest runs in."""
    tests, helpers = release_test_files(repo, commit)

    def write(path: str, target: Path) -> None:
        target.write_bytes(repo.show_file(commit, path).checked("show", f"{commit}:{path}").stdout)

    # tests that import helpers relatively run as one package beside the conftest
    where = root / "tests_v1_core" if helpers else root
    where.mkdir(exist_ok=True)
    if helpers:
        (where / "__init__.py").touch()
    for path in (*tests, *helpers):
        write(path, where / Path(path).name)
    listed = set(repo.blob_ids(commit, [str(PurePosixPath(p).parent) for p in ABSOLUTE_HELPERS]))
    for path in (p for p in ABSOLUTE_HELPERS if helpers and p in listed):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        for package in PurePosixPath(path).parents[:-1]:  # tests/, tests/v1/, ...: packages
            (root / package / "__init__.py").touch()
        write(path, root / path)


def series_test_files(series: Series) -> tuple[str, ...]:
    """The pytest files the series' patches add (tests/**/test_*.py), in series order."""
    return tuple(
        f.new_path
        for patch in series.patches
        for f in patch.files
        if f.old_path is None
        and f.new_path is not None
        and f.new_path.startswith("tests/")
        and PurePosixPath(f.new_path).name.startswith("test_")
        and f.new_path.endswith(".py")
    )


def run_series_tests(venv: Path, tree: Path, files: tuple[str, ...], scratch: Path) -> dict[str, str]:
    """{test id: outcome} for the series' own test files, taken from the patched `tree` and run in `venv`.

    Each file's directory is copied (its .py files: the helpers and __init__.py the tests import relatively)
    as one package beside the offline conftest, so the installed vLLM is the one under test, not the tree's.
    """
    ensure_pytest(venv)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="series-tests-", dir=scratch) as tmp:
        root = Path(tmp)
        targets = []
        for path in files:
            parent = PurePosixPath(path).parent
            package = root / "_".join(parent.parts)
            if not package.exists():
                package.mkdir()
                for source in sorted((tree / parent).glob("*.py")):
                    shutil.copyfile(source, package / source.name)
                (package / "__init__.py").touch()
            targets.append(str(package / PurePosixPath(path).name))
        shutil.copyfile(driver_path("upstream_conftest"), root / "conftest.py")
        return _run_pytest(venv, root, targets)


def series_tests_result(files: tuple[str, ...], outcomes: dict[str, str]) -> CheckResult:
    counts = {kind: sum(1 for v in outcomes.values() if v == kind) for kind in ("passed", "failed", "error", "skipped")}
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    if not outcomes:
        return CheckResult("series-tests", FAIL, f"none of the {len(files)} test file(s) the series ships ran")
    failing = [name for name, v in outcomes.items() if v in ("failed", "error")]
    if failing:
        return CheckResult(
            "series-tests", FAIL, f"{len(failing)} of the series' own tests fail ({summary})", "\n".join(failing)
        )
    return CheckResult(
        "series-tests",
        PASS,
        f"{len(outcomes)} tests from the {len(files)} test files the series ships pass in dynamo-base ({summary})",
        "\n".join(files),
    )


def _run_pytest(venv: Path, root: Path, targets: list[str]) -> dict[str, str]:
    report = root / "junit.xml"
    env = offline_env()
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run(
        [str(venv_python(venv)), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(report), *targets],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=1800,
    )
    if not report.exists():
        raise RuntimeError("pytest wrote no report (it could not start in the venv)")
    return _outcomes(report)


def _outcomes(report: Path) -> dict[str, str]:
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[name] = (
            "failed"
            if "failure" in kinds
            else "error"
            if "error" in kinds
            else "skipped"
            if "skipped" in kinds
            else "passed"
        )
    return dict(sorted(outcomes.items()))


def compare_outcomes(stock: dict[str, str], patched: dict[str, str]) -> CheckResult:
    differing = sorted(name for name in set(stock) | set(patched) if stock.get(name) != patched.get(name))
    counts = {kind: sum(1 for v in stock.values() if v == kind) for kind in ("passed", "failed", "error", "skipped")}
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    if not stock:
        return CheckResult("upstream-tests", FAIL, "no test ran in the stock build")
    if differing:
        lines = [
            f"{name}: stock {stock.get(name, 'absent')}, dynamo-base {patched.get(name, 'absent')}"
            for name in differing
        ]
        return CheckResult(
            "upstream-tests", FAIL, f"{len(differing)} test(s) differ between the builds", "\n".join(lines)
        )
    failing = [n for n, v in stock.items() if v in ("failed", "error")]
    diff = "same outcome in both builds; failing in both:\n" + "\n".join(failing) if failing else ""
    return CheckResult(
        "upstream-tests",
        PASS,
        f"{len(stock)} tests of vLLM's tests/v1/core, same outcome in both builds ({summary})",
        diff,
    )
