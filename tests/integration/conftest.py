"""Session fixtures for the real-vLLM tests: the repository's pins and series, wheels and venvs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import patched_wheel_of, stock_env_of
from tests.harness.paths import REPO_ROOT
from toolkit.conformance.envs import vllm_env
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
def patched_env_084(repo_project: Project, patched_wheel_084: Path) -> Path:
    return vllm_env(repo_project.options.cache_dir, patched_wheel_084)


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
