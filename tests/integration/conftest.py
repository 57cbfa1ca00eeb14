"""Session fixtures for the real-vLLM tests: the repository's pins and series, wheels and venvs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import patched_wheel_of, run_vpatch, stock_env_of
from toolkit.conformance.envs import read_trace, vllm_env
from toolkit.options import load_options
from toolkit.project import Project

REPO = Path(__file__).resolve().parents[2]


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
def patched_env_084(repo_project: Project, patched_wheel_084: Path) -> Path:
    return vllm_env(repo_project.options.cache_dir, patched_wheel_084)


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


@pytest.fixture
def free_ports():
    import socket

    def pick(count: int) -> list[int]:
        sockets = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        ports = [s.getsockname()[1] for s in sockets]
        for sock in sockets:
            sock.close()
        return ports

    return pick
