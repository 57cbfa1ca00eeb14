"""Session fixtures for the real-vLLM tests: the repository's pins and series, wheels and venvs."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.conformance.envs import vllm_env
from toolkit.index import fetch_artifact
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.wheel.overlay import build_overlay

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_project() -> Project:
    return Project.load(load_options({"root": str(REPO)}))


@pytest.fixture(scope="session")
def patched_wheel_084(repo_project: Project, tmp_path_factory) -> Path:
    """The dynamo-base overlay wheel of the committed vLLM 0.8.4 series."""
    out = tmp_path_factory.mktemp("dist-084")
    return build_overlay(repo_project, repo_project.pins.get("0.8.4"), out).path


@pytest.fixture(scope="session")
def stock_env_084(repo_project: Project) -> Path:
    pin = repo_project.pins.get("0.8.4")
    wheel = fetch_artifact(repo_project.options.cache_dir, pin.wheels[0])
    return vllm_env(repo_project.options.cache_dir, wheel, sha256=pin.wheels[0].sha256)


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
