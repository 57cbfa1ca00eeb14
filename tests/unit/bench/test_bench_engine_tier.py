"""bench/engine_tier.py's pure parts: the figures it prints (medians, spreads, ratios, verdicts), the rotation of
sides between repetitions and its fixed prompts. No engine, no timing."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.harness.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "engine_tier.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_engine_tier", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ratio_is_of_the_medians_and_paired_is_per_repetition(bench: ModuleType) -> None:
    ours, base = [2.0, 9.0, 3.0], [1.0, 1.0, 3.0]
    assert bench.ratio(ours, base) == 3.0  # median 3 / median 1
    assert bench.paired(ours, base) == "2.000x (1.000-9.000)"  # ratios 2, 9, 1
    with pytest.raises(ValueError):
        bench.paired([1.0], [1.0, 2.0])


def test_fmt_scales_and_shows_the_spread(bench: ModuleType) -> None:
    assert bench.fmt([0.0015, 0.001, 0.004], "ms", 1e3, 1) == "1.5 ms (1.0-4.0, n=3)"
    assert bench.spread([5.0]) == {"median": 5.0, "min": 5.0, "max": 5.0}


def test_verdict_directions(bench: ModuleType) -> None:
    assert bench.verdict(1.05, 1.05, True).startswith("PASS")
    assert bench.verdict(1.051, 1.05, True).startswith("MISS")
    assert bench.verdict(0.98, 0.98, False).startswith("PASS")
    assert bench.verdict(0.97, 0.98, False) == "MISS (goal ≥ 0.98)"


def test_every_side_leads_in_turn(bench: ModuleType) -> None:
    sides = ["a", "b", "c"]
    orders = [bench.rotated(sides, turn) for turn in range(6)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert orders[3:] == [["c", "b", "a"], ["a", "c", "b"], ["b", "a", "c"]]  # the next cycle reversed
    assert sorted(o[0] for o in orders) == ["a", "a", "b", "b", "c", "c"]  # every side leads equally
    followers = {o[o.index("a") + 1] for o in orders if o.index("a") < 2}
    assert followers == {"b", "c"}  # "a" is not always followed by the same side


def test_prompts_fit_the_engine_and_share_no_block(bench: ModuleType) -> None:
    prompts = bench.batch_prompts()
    assert [len(p) for p in prompts] == [72 + 18 * i for i in range(8)]
    assert max(len(p) for p in prompts) + bench.MAX_TOKENS <= 512  # the drivers' max_model_len
    firsts = {tuple(p[: bench.BLOCK_SIZE]) for p in prompts}
    assert len(firsts) == len(prompts)
    assert all(3 <= t < 2048 for p in [*prompts, bench.pd_prompt()] for t in p)  # the tiny model's vocab
    assert len(bench.pd_prompt()) % bench.BLOCK_SIZE == 0
