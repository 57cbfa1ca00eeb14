"""The abort-while-loading scenario's verdict: the load in flight at the abort, its blocks kept over it, none
left allocated on either engine afterwards, and the next P/D decode loaded and equal to the aggregated tokens."""

from __future__ import annotations

from typing import Any

import pytest

from toolkit.conformance.engine_pd import FAIL, PASS, Check
from toolkit.conformance.engine_pd_abort import judge_abort

EXPECTED = [5, 6, 7]


def _state(**changes: Any) -> dict[str, Any]:
    state = {
        "status_at_abort": "WAITING_FOR_REMOTE_KVS",
        "landed_before_abort": False,
        "held_before_abort": 3,
        "held_after_abort": 3,
        "steps": 1,
        "free_before": 500,
    }
    return {**state, **changes}


SERVED = {"outputs": [EXPECTED], "external_hits": 32, "error": None}


def test_kept_then_freed_and_serving_again_passes() -> None:
    check = judge_abort(_state(), {}, SERVED, EXPECTED, "nixl-abort-while-loading")
    assert (check.name, check.status, check.details["problems"]) == ("nixl-abort-while-loading", PASS, [])


def test_blocks_freed_at_the_abort_fail() -> None:  # vLLM 0.13.0's finish_requests
    check = judge_abort(_state(held_after_abort=0), {}, SERVED, EXPECTED, "n")
    assert check.status == FAIL
    assert check.details["problems"] == [
        "the decode freed the blocks at the abort, while the READ may still write into them"
    ]


def test_a_load_that_landed_before_the_abort_proves_nothing() -> None:
    for state in (_state(landed_before_abort=True), _state(status_at_abort="RUNNING"), _state(status_at_abort=None)):
        check = judge_abort(state, {}, SERVED, EXPECTED, "n")
        assert check.status == FAIL and check.details["problems"] == ["the load was not in flight at the abort"]


def test_blocks_left_allocated_on_either_engine_fail() -> None:
    check = judge_abort(_state(), {"prefill": 3}, SERVED, EXPECTED, "n")
    assert check.status == FAIL and check.details["leaked"] == {"prefill": 3}


def test_an_engine_that_does_not_serve_afterwards_fails() -> None:
    recomputed = {"outputs": [EXPECTED], "external_hits": 0, "error": None}
    different = {"outputs": [[5, 6, 8]], "external_hits": 32, "error": None}
    failed = {"error": "RuntimeError: gone"}
    for served in (recomputed, different, failed):
        check = judge_abort(_state(), {}, served, EXPECTED, "n")
        assert check.status == FAIL
        assert check.details["problems"] == ["the next P/D decode did not load and equal the aggregated tokens"]
    assert judge_abort(_state(), {}, failed, EXPECTED, "n").details["next_pd"]["error"] == "RuntimeError: gone"


def test_an_engine_without_stats_is_judged_by_its_cached_tokens() -> None:  # vLLM 0.11.1: pd_drive.stats_args
    loaded = {"outputs": [EXPECTED], "external_hits": None, "cached_tokens": [32], "error": None}
    check = judge_abort(_state(), {}, loaded, EXPECTED, "n")
    assert check.status == PASS and check.details["next_pd"]["loaded_tokens"] == 32
    assert check.details["next_pd"]["counted_by"] == "num_cached_tokens (engine without stats)"
    recomputed = {**loaded, "cached_tokens": [0]}
    assert judge_abort(_state(), {}, recomputed, EXPECTED, "n").status == FAIL


def test_each_connector_has_its_own_documented_fail_path() -> None:
    from toolkit.conformance.engine_pd_nixl import SERIES, UPSTREAM, failed_load_path

    # upstream: kv_load_failure_policy "fail" -> FINISHED_ERROR; the series (patch 0007): aborted, with the reason
    assert failed_load_path(UPSTREAM, "error", None)
    assert not failed_load_path(UPSTREAM, "abort", {"error": "remote KV load failed: x"})
    assert failed_load_path(SERIES, "abort", {"error": "remote KV load failed: NIXL_ERR_REMOTE_DISCONNECT"})
    assert not failed_load_path(SERIES, "abort", None)  # an abort without the reason is not the failure path
    assert not failed_load_path(SERIES, "error", None)


def test_a_run_whose_load_landed_before_the_abort_is_run_again_and_other_failures_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """abort_while_loading reruns the scenario only while it was not set up (the READ beat the stop), at most
    ATTEMPTS times, and says how many runs it took."""
    from toolkit.conformance import engine_pd_abort as abort

    def outcomes(*problem_lists: list[str]):
        runs = iter(problem_lists)

        def once(*_args: object) -> Check:
            problems = next(runs)
            return Check("x-abort-while-loading", FAIL if problems else PASS, {"problems": problems})

        return once

    monkeypatch.setattr(abort, "_abort_once", outcomes([abort.NOT_IN_FLIGHT], []))
    check = abort.abort_while_loading(None, None, {}, {}, "x")  # type: ignore[arg-type]
    assert (check.status, check.details["runs"]) == (PASS, 2)
    monkeypatch.setattr(abort, "_abort_once", outcomes(*[[abort.NOT_IN_FLIGHT]] * abort.ATTEMPTS, []))
    check = abort.abort_while_loading(None, None, {}, {}, "x")  # type: ignore[arg-type]
    assert (check.status, check.details["runs"]) == (FAIL, abort.ATTEMPTS)
    leaked = ["blocks left allocated: {'decode': 3}"]
    monkeypatch.setattr(abort, "_abort_once", outcomes(leaked, []))
    check = abort.abort_while_loading(None, None, {}, {}, "x")  # type: ignore[arg-type]
    assert (check.status, check.details["runs"], check.details["problems"]) == (FAIL, 1, leaked)
