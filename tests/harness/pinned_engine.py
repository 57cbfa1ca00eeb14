"""The stock engine venv of a pinned release's CPU build, for the opt-in real-engine tests of carried releases
(tests/integration/test_engine_nixl_*.py): built, or taken from the cache, as the engine tier builds it."""

from __future__ import annotations

from pathlib import Path

from tests.harness.paths import REPO_ROOT
from toolkit.conformance.engine_apply import applicability
from toolkit.conformance.engine_env import EngineEnv, engine_env
from toolkit.options import load_options
from toolkit.project import Project


def pinned_stock_engine(version: str) -> tuple[Path, EngineEnv]:
    """This repository's cache directory and the stock engine venv of `version`'s pinned CPU flavor."""
    project = Project.load(load_options({"root": str(REPO_ROOT)}))
    cache = project.options.cache_dir
    found = applicability(cache, project.pins.get(version), project.pins.path)
    assert found.runs and found.artifact is not None, found.reason
    return cache, engine_env(cache, found.artifact, quiet=True)
