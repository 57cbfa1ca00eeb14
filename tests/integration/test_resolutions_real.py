"""One real step of the chain replayed from the resolutions kept in the tree: `vpatch rebase 0.9.0 --onto
0.9.1` from a fresh state (a project root outside git, so an empty rr-cache of its own) runs to the end
without a stop, says which recorded resolutions it reused, and its patches' post-images of the conflicted
files are the recorded resolutions (tests/harness/replay.py). Nothing under the repository's patches/ is
written. The 0.16.0 -> 0.22.1 step is replayed the same way in test_lifecycle_real.py."""

from __future__ import annotations

import pytest

from tests.harness.paths import REPO_ROOT
from tests.harness.replay import assert_replayed, replay_step

REPO = REPO_ROOT
OLD, NEW = "0.9.0", "0.9.1"
pytestmark = pytest.mark.real


def test_the_0_9_1_step_replays_from_the_recorded_resolutions(repo_project, tmp_path):
    replay = replay_step(REPO, repo_project, OLD, NEW, tmp_path / "project")
    assert {entry.patch[:4] for entry in replay.index.resolutions} == {"0006", "0007"}  # what NOTES.md says
    assert_replayed(replay, NEW)
