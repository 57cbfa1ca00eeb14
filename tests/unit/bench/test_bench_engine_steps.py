"""bench/engine_steps.py's pure parts: the statistic it prints (per-repetition ratios of the mean and the median
step, their median and IQR), the on/off order and the rotation of sides. No engine, no timing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.harness.paths import REPO_ROOT

BENCH = REPO_ROOT / "bench"


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stats() -> ModuleType:
    return load("_step_stats", BENCH / "_step_stats.py")


@pytest.fixture(scope="module")
def bench(stats: ModuleType) -> ModuleType:
    # The script imports its sibling by name (run by path, bench/ is first on its sys.path): give it this one.
    saved = sys.modules.get("_step_stats")
    sys.modules["_step_stats"] = stats
    try:
        return load("bench_engine_steps", BENCH / "engine_steps.py")
    finally:
        if saved is None:
            del sys.modules["_step_stats"]
        else:
            sys.modules["_step_stats"] = saved


def run(wall: list[float], batch: float = 1.0) -> dict[str, object]:
    return {"wall": wall, "thread": wall, "process": wall, "batch_process": batch}


def test_summary_is_median_with_iqr_min_max(stats: ModuleType) -> None:
    s = stats.summary([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["median"], s["p25"], s["p75"], s["min"], s["max"], s["n"]) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    assert stats.quartiles([1.0, 2.0]) == (1.25, 1.5, 1.75)  # interpolated between the two
    assert stats.quartiles([7.0]) == (7.0, 7.0, 7.0)
    with pytest.raises(ValueError):
        stats.summary([])


def test_mean_step_ratio_sees_a_cost_on_few_steps_that_the_median_step_misses(stats: ModuleType) -> None:
    off = run([1.0, 1.0, 1.0, 1.0])
    on = run([1.0, 1.0, 1.0, 1.4])  # one publishing step of four
    assert stats.step_ratio(on, off, "wall", "median") == 1.0
    assert stats.step_ratio(on, off, "wall", "mean") == pytest.approx(1.1)
    assert stats.step_ratio(run([1.0], 3.0), run([1.0], 2.0), "", "batch") == 1.5
    with pytest.raises(ValueError, match="not the same batch"):
        stats.step_ratio(run([1.0, 2.0]), run([1.0]), "wall", "mean")
    with pytest.raises(ValueError, match="unknown"):
        stats.step_ratio(on, off, "wall", "p90")


def test_ratios_pair_runs_of_the_same_repetition(stats: ModuleType) -> None:
    ours = [run([2.0]), run([3.0])]
    base = [run([1.0]), run([3.0])]
    assert stats.ratios(ours, base, "thread", "mean") == [2.0, 1.0]
    with pytest.raises(ValueError):
        stats.ratios(ours, base[:1], "thread", "mean")
    assert stats.fmt_ratio([1.0, 2.0, 3.0]) == "2.000x (IQR 1.500-2.500, min 1.000, max 3.000)"


def test_on_and_off_alternate_which_goes_first(stats: ModuleType) -> None:
    orders = [stats.toggle_order(turn) for turn in range(4)]
    assert orders[0] == orders[2] == ("on", "off", "off-b") and orders[1] == orders[3] == ("off-b", "off", "on")
    assert all(abs(o.index("on") - o.index("off")) == 1 for o in orders)  # the A/B pair always back to back
    sides = ["a", "b", "c"]
    leads = [stats.rotated(sides, turn)[0] for turn in range(6)]
    assert sorted(leads) == ["a", "a", "b", "b", "c", "c"]
    assert stats.rotated(sides, 3) == ["c", "b", "a"]  # the second cycle reversed


def test_verdict_directions(stats: ModuleType) -> None:
    assert stats.verdict(1.05, 1.05, True).startswith("PASS")
    assert stats.verdict(1.051, 1.05, True).startswith("MISS")
    assert stats.verdict(0.97, 0.98, False) == "MISS (goal ≥ 0.98)"


def test_prompts_fit_the_engine(bench: ModuleType) -> None:
    prompts = bench.batch_prompts()
    assert max(len(p) for p in prompts) + bench.MAX_TOKENS <= 512  # the drivers' max_model_len
    assert len({tuple(p[: bench.BLOCK_SIZE]) for p in prompts}) == len(prompts)
    assert all(3 <= t < 2048 for p in prompts for t in p)
