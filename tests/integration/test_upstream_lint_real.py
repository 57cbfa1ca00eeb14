"""vLLM 0.8.4's own lint configuration, from the real sdist, run over the committed series (ruff only: fast).

The series as committed, plus one more commit that breaks the release's line length: that commit is
blamed for exactly its line, and no finding lands on a line upstream wrote.
"""

from __future__ import annotations

import pytest

from tests.harness import commit_in
from tests.harness.paths import REPO_ROOT
from toolkit.apply import PatchOutcome, apply_series
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.upstream_lint import lint_series
from toolkit.upstream_lint.config import load_lint_config

REPO = REPO_ROOT
pytestmark = pytest.mark.real
MYPY_DEPS = ("mypy==1.11.1", "types-cachetools", "types-setuptools", "types-PyYAML", "types-requests")


def test_the_release_configuration_and_per_patch_attribution_on_the_real_tree():
    project = Project.load(load_options({"root": str(REPO)}))
    pin = project.pins.get("0.8.4")
    series = project.series(pin)
    with project.scratch_checkout(pin) as checkout:
        config = load_lint_config(checkout.path)
        assert config is not None
        assert {h.id: h.requirements for h in config.hooks} == {
            "yapf": ("yapf==0.43.0", "toml"),
            "ruff": ("ruff==0.9.3",),
            "codespell": ("codespell==2.4.0", "tomli"),
            "isort": ("isort==6.0.0",),  # pinned by commit id, with `# 6.0.0` beside it
            "check-spdx-header": (),
            **{f"mypy-3.{minor}": MYPY_DEPS for minor in (9, 10, 11, 12)},  # tools/mypy.sh 1 "3.x" in CI
        }
        assert {h.label for h in config.hooks if h.tool == "mypy"} == {
            f"mypy 1.11.1 (py3.{minor})" for minor in (9, 10, 11, 12)
        }
        result = apply_series(checkout, series)
        assert result.ok
        path = "vllm/v1/core/sched/scheduler.py"
        text = (checkout.path / path).read_text()
        added = "TOO_LONG_FOR_VLLM = " + repr("x" * 70)  # 92 characters; [tool.ruff] line-length = 80
        commit = commit_in(checkout.path, {path: text + added + "\n"}, subject="[Test] one long line")
        extra = PatchOutcome("9999-test-one-long-line.patch", "[Test] one long line", "clean", commit=commit)
        linted = lint_series(checkout, [*result.outcomes, extra], project.options.cache_dir, tools={"ruff"})
    assert linted.configured and linted.tools == ["ruff 0.9.3"] and path in linted.files
    mine = [f for f in linted.findings if f.patch == extra.name]
    assert [(f.path, f.line, f.code) for f in mine] == [(path, len(text.splitlines()) + 1, "E501")]
    # Every other finding is on a line one of the committed patches wrote.
    assert {f.patch for f in linted.findings} <= {p.name for p in series.patches} | {extra.name}


def test_the_release_scripts_that_read_the_staged_diff_see_the_whole_series():
    """0.9.0's own tools/enforce_regex_import.py and tools/check_triton_import.py (they read `git diff
    --cached`): a commit on the series that imports `re` and `triton` is blamed for both lines."""
    project = Project.load(load_options({"root": str(REPO)}))
    pin = project.pins.get("0.9.0")
    with project.scratch_checkout(pin) as checkout:
        result = apply_series(checkout, project.series(pin))
        assert result.ok
        path = "vllm/v1/outputs.py"
        text = (checkout.path / path).read_text()
        commit = commit_in(checkout.path, {path: "import re\nimport triton\n" + text}, subject="[Test] imports")
        extra = PatchOutcome("9999-test-imports.patch", "[Test] imports", "clean", commit=commit)
        wanted = {"regex-import", "triton-import"}
        linted = lint_series(checkout, [*result.outcomes, extra], project.options.cache_dir, tools=wanted)
        assert checkout.git.out("rev-parse", "HEAD") == commit and checkout.git.is_clean()  # restored
    assert linted.tools == ["enforce-import-regex-instead-of-re", "forbid-direct-triton-import"]
    assert [(f.patch, f.path, f.line, f.tool) for f in linted.findings] == [
        (extra.name, path, 1, "enforce-import-regex-instead-of-re"),
        (extra.name, path, 2, "forbid-direct-triton-import"),
    ]
