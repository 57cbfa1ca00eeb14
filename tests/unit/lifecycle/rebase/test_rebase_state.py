"""The rebase state record: states the code before `RebaseState` wrote read and re-encode to their own bytes."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from toolkit.errors import VpatchError
from toolkit.lifecycle.rebase.state import STATE_KEY, RebaseState, rebase_state
from toolkit.records.outcome import Outcome

P1, P2, P3 = "0001-a.patch", "0002-b.patch", "0003-c.patch"
BASE, HEAD = "7f0811cc90c3a94f284bfdef14c3b4d0ae5ec56d", "49ea7768c2e278a371c30c8f8c697d719e1af6b1"

# As the hand-built dict wrote them: just started (a retired patch settled), stopped at a conflict,
# inside a batch `git am`, continuing a hand resolution, and from before `old_head_made` and `force`.
STARTED = {
    "old_version": "1.0",
    "new_version": "1.3",
    "old_base": HEAD,
    "old_head": None,
    "old_head_made": False,
    "patches": [P1, P2, P3],
    "remaining": [P1, P2],
    "outcomes": [
        {"name": P3, "subject": "c", "status": "retired", "details": ["retired since 1.2: x"], "commit": None}
    ],
    "current": None,
    "stopped": None,
    "force": False,
    "pending_pin": True,
}
STOPPED = {
    **STARTED,
    "old_head": HEAD,
    "old_head_made": True,
    "remaining": [P2],
    "current": P1,
    "current_start": 0,
    "current_head": BASE,
    "stopped": {
        "name": P1,
        "status": "conflict",
        "files": [{"path": "vllm/core/scheduler.py", "kind": "content conflict", "hunks": [[22, 26]]}],
        "details": ["vllm/core/scheduler.py: content conflict at lines 22-26"],
    },
}
IN_BATCH = {**STARTED, "am_from": BASE}
CONTINUING = {**STOPPED, "continuing": "conflict resolved by hand", "force": True}
OLDER = {k: v for k, v in STOPPED.items() if k not in ("old_head_made", "force")}


@pytest.mark.parametrize("raw", [STARTED, STOPPED, IN_BATCH, CONTINUING, OLDER], ids=lambda r: str(len(r)))
def test_states_the_old_writer_made_reencode_to_their_bytes(raw: dict) -> None:
    state = msgspec.convert(raw, RebaseState)
    again = msgspec.to_builtins(state)
    assert json.dumps(again, indent=1, sort_keys=True) == json.dumps(raw, indent=1, sort_keys=True)


def test_the_record_reads_the_fields_the_replay_uses() -> None:
    state = msgspec.convert(CONTINUING, RebaseState)
    assert state.stopped is not None and state.stopped.status is Outcome.CONFLICT
    assert state.stopped.files[0].hunks == [[22, 26]]
    assert state.outcomes[0].status is Outcome.RETIRED and state.outcomes[0].commit is None
    assert (state.am_from, state.continuing, state.current_start) == (None, "conflict resolved by hand", 0)
    assert msgspec.convert(OLDER, RebaseState).old_head_made is None  # made, by the code of the time


def test_a_state_with_an_unknown_outcome_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    bad = {**STARTED, "outcomes": [{**STARTED["outcomes"][0], "status": "exploded"}]}
    (tmp_path / ".git").mkdir()
    state_file = tmp_path / ".git" / "vpatch.json"
    state_file.write_text(json.dumps({"version": "1.3", STATE_KEY: bad}))
    with pytest.raises(VpatchError) as caught:
        rebase_state(tmp_path)
    assert caught.value.path == state_file
    assert "outcomes[0].status" in str(caught.value) and "\n" not in str(caught.value)
    state_file.write_text(json.dumps({"version": "1.3"}))
    assert rebase_state(tmp_path) is None
