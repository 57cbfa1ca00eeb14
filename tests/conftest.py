from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import LocalIndex, Workspace


@pytest.fixture
def index(tmp_path: Path):
    served = LocalIndex(tmp_path / "index")
    served.start()
    yield served
    served.stop()


@pytest.fixture
def workspace(tmp_path: Path, index: LocalIndex, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path / "project", tmp_path / "cache", index)


@pytest.fixture
def pinned(workspace: Workspace) -> Workspace:
    """A workspace with vllm 1.0 published on the local index and pinned."""
    workspace.publish("1.0")
    assert workspace.run("pin", "add", "1.0") == 0
    return workspace
