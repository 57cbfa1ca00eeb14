"""The stepping-while-held scenario (pd-disagg/stepping-while-held): pd_drive.py's `drain` steps the engine core as
its busy loop does, and engine_pd_nixl.judge_drain passes only an engine that had work while blocks were held and
freed them all without a new request; the stock contract tells its outcome in the nixl-transport item's line."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from toolkit.conformance.engine_pd import FAIL, PASS
from toolkit.conformance.engine_pd_nixl import judge_drain
from toolkit.contracts.engine_stock import SCHEDULER_SUFFIXES, told
from toolkit.serving.engine.pd_drive import drain

TOTAL = 100


class Core:
    """An engine core whose held blocks come back `after` steps; `has_work` says whether its scheduler counts them."""

    def __init__(self, held: int, after: int, has_work: bool) -> None:
        self.free, self.held, self.after, self.has_work, self.steps = TOTAL - held, held, after, has_work, 0
        self.scheduler = SimpleNamespace(has_requests=lambda: self.has_work and self.held > 0)
        self.scheduler.kv_cache_manager = SimpleNamespace(block_pool=SimpleNamespace(get_num_free_blocks=self.free_now))

    def free_now(self) -> int:
        return self.free

    def step_fn(self) -> None:
        self.steps += 1
        if self.steps >= self.after:
            self.free, self.held = TOTAL, 0


def _llm(core: Core) -> Any:
    return SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace(engine_core=core)))


def test_an_engine_that_steps_while_blocks_are_held_frees_them_and_passes() -> None:
    core = Core(held=13, after=3, has_work=True)
    drained = drain(_llm(core), {"max_steps": 50, "max_seconds": 5})
    assert (drained["has_requests_at_start"], drained["steps"], drained["free_after"]) == (True, 3, TOTAL)
    assert judge_drain(drained, TOTAL) == PASS
    assert (drained["held_at_start"], drained["left_after"]) == (13, 0)


def test_an_engine_with_no_work_while_blocks_are_held_fails() -> None:
    # vLLM up to 0.21 without patch 0011: has_requests() is false once the last request finished.
    core = Core(held=13, after=1, has_work=False)
    drained = drain(_llm(core), {"max_steps": 50, "max_seconds": 5})
    assert (drained["steps"], drained["free_after"]) == (0, TOTAL - 13)
    assert judge_drain(drained, TOTAL) == FAIL
    assert drained["left_after"] == 13


def test_the_drain_is_bounded_and_blocks_never_freed_fail() -> None:
    core = Core(held=4, after=10**9, has_work=True)
    drained = drain(_llm(core), {"max_steps": 7, "max_seconds": 5})
    assert drained["steps"] == 7 and drained["has_requests_after"]
    assert judge_drain(drained, TOTAL) == FAIL


def test_nothing_held_is_nothing_judged() -> None:
    drained = drain(_llm(Core(held=0, after=1, has_work=True)), {"max_steps": 5, "max_seconds": 5})
    assert judge_drain(drained, TOTAL) == FAIL and drained["held_at_start"] == 0


def test_the_stock_contract_tells_the_scenario_and_does_not_judge_it() -> None:
    assert "nixl-steps-while-held".endswith(SCHEDULER_SUFFIXES)
    drained = drain(_llm(Core(held=13, after=2, has_work=True)), {"max_steps": 50, "max_seconds": 5})
    judge_drain(drained, TOTAL)
    line = told("nixl-steps-while-held", PASS, drained)
    assert line == "nixl-steps-while-held: pass (13 blocks held after the reads, has_requests True, 2 steps, 0 left)"
