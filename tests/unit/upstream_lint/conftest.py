"""The upstream-lint tests' workspace: a project over the local index, with one tool cache per test module, so a
module builds each lint tool's venv once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import LocalIndex, Workspace


@pytest.fixture(scope="module")
def tool_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lint-cache")


@pytest.fixture
def lint_ws(tmp_path: Path, index: LocalIndex, tool_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path / "project", tool_cache, index)
