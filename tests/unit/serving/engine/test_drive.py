"""The engine drivers' shared environment defaults (toolkit/serving/engine/drive.py `set_engine_env`): each of the
five drivers sets them first thing in `main()`, before its first vLLM import; importing a driver (by its directory,
as the drivers import each other, or as a package module, as tests/integration/test_plugin_engine.py does) sets
nothing. This interpreter has no vLLM: the parts that need none run for real, the import order is read from the
source."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT

ENGINE = REPO_ROOT / "toolkit" / "serving" / "engine"
DRIVERS = ("drive", "kv_drive", "load_drive", "pd_drive", "step_drive")


def run_python(code: str, cwd: Path = ENGINE, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in _engine_keys()}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**environ, **env}, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _engine_keys() -> list[str]:
    sys.path.insert(0, str(ENGINE))
    try:
        import drive

        return list(drive.ENGINE_ENV)
    finally:
        sys.path.remove(str(ENGINE))


def test_set_engine_env_fills_in_the_defaults_and_keeps_the_callers_values() -> None:
    keys = _engine_keys()
    assert {"VLLM_ENABLE_V1_MULTIPROCESSING", "OMP_NUM_THREADS", "VLLM_CPU_KVCACHE_SPACE"} <= set(keys)
    code = (
        "import json, os, sys; sys.path.insert(0, '.'); import drive; drive.set_engine_env(); "
        f"print(json.dumps({{k: os.environ.get(k) for k in {keys!r}}}))"
    )
    seen = run_python(code, OMP_NUM_THREADS="3")
    assert seen["OMP_NUM_THREADS"] == "3"  # the caller's value wins
    assert seen["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and seen["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert None not in seen.values()


@pytest.mark.parametrize("name", DRIVERS)
def test_importing_a_driver_sets_nothing(name: str) -> None:
    keys = _engine_keys()
    report = f"import json, os; print(json.dumps([k for k in {keys!r} if k in os.environ]))"
    assert run_python(f"import {name}; {report}") == []  # as the drivers import each other: by their directory


def test_load_drive_imports_as_a_package_module_outside_its_directory() -> None:
    # tests/integration/test_plugin_engine.py takes its path this way: no top-level `from drive import` there
    code = "import toolkit.serving.engine.load_drive as d; print(__import__('json').dumps(d.__file__))"
    assert run_python(code, cwd=REPO_ROOT) == str(ENGINE / "load_drive.py")


def imports_vllm(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "vllm" for a in node.names)
    return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm"


@pytest.mark.parametrize("name", DRIVERS)
def test_every_driver_sets_the_defaults_before_its_first_vllm_import(name: str) -> None:
    tree = ast.parse((ENGINE / f"{name}.py").read_text(encoding="utf-8"))
    assert not [n for n in tree.body if imports_vllm(n)], f"{name}: vLLM imported at module level"
    (main,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    order = []
    for statement in main.body:
        for node in ast.walk(statement):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "set_engine_env"
            if call or imports_vllm(node):
                order.append("set" if call else "vllm")
    assert order and order[0] == "set" and "vllm" in order, f"{name}: {order}"
