"""bench/engine_step_costs.py's and its helpers' pure parts: the in-engine probe's timed wrappers and per-batch
differences (bench/_step_probe.py, here without an engine), the per-step grouping of the forward pass's on - off
CPU, and the larger model's sizes (bench/_larger_model.py). No engine, no timing asserted."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.harness.paths import REPO_ROOT

BENCH = REPO_ROOT / "bench"


@pytest.fixture(scope="module")
def bench_path() -> Iterator[None]:
    # The scripts import their siblings by name (run by path, bench/ is first on their sys.path).
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def probe_module(bench_path: None) -> ModuleType:
    import _step_probe

    return _step_probe


@pytest.fixture(scope="module")
def costs(bench_path: None) -> ModuleType:
    import engine_step_costs

    return engine_step_costs


class Holder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def events(self, n: int) -> list[int]:
        self.seen.append(n)
        return list(range(n))

    def fails(self) -> None:
        raise RuntimeError("boom")


def test_probe_wraps_one_instance_and_counts_each_call(probe_module: ModuleType) -> None:
    probe = probe_module.Probe()
    try:
        holder, other = Holder(), Holder()
        probe.wrap(holder, "events", "take", series=True, count=True)
        probe_module.PROBE_SERIES.update(probe.series)
        before = probe.snapshot()
        assert holder.events(3) == [0, 1, 2]  # the wrapped call's result and arguments go through
        holder.events(0)
        other.events(5)  # another instance of the class is not wrapped
        after = probe_module.since(before, probe.snapshot())
        assert holder.seen == [3, 0] and other.seen == [5]
        assert after["calls"] == {"take": 2}
        assert after["series"]["take:n"] == [3, 0]
        assert len(after["series"]["take"]) == 2 and after["cpu"]["take"] >= 0.0
        probe.wrap(holder, "fails", "fails")
        with pytest.raises(RuntimeError, match="boom"):
            holder.fails()
        assert probe.calls["fails"] == 1  # counted although it raised
    finally:
        gc.callbacks.remove(probe._gc)


def test_probe_counts_collections_on_the_engine_thread(probe_module: ModuleType) -> None:
    probe = probe_module.Probe()
    try:
        before = probe.snapshot()
        gc.collect(0)
        gc.collect(2)
        found = probe_module.since(before, probe.snapshot())
        assert found["gc_counts"][0] >= 1 and found["gc_counts"][2] >= 1
        assert found["calls"]["gc"] >= 2
    finally:
        gc.callbacks.remove(probe._gc)


def batch(execute: list[float], events: list[int], sends: list[int]) -> dict[str, Any]:
    return {"probe": {"series": {"execute": execute, "take_events:n": events}}, "load_send_steps": sends}


def test_forward_pass_deltas_are_grouped_by_what_the_step_before_did(costs: ModuleType) -> None:
    off = batch([1e-3] * 5, [0] * 5, [])
    # step 0 published events, step 1 sent load figures, step 2 did both, step 3 neither
    on = batch([1e-3, 2e-3, 3e-3, 4e-3, 5e-3], [2, 0, 1, 0, 0], [1, 2])
    groups = costs.step_groups(on, off)
    assert groups["after events"] == pytest.approx([1000.0])
    assert groups["after load"] == pytest.approx([2000.0])
    assert groups["after both"] == pytest.approx([3000.0])
    assert groups["after neither"] == pytest.approx([4000.0])


def test_larger_model_sizes_override_the_defaults_and_reject_unknown_keys(bench_path: None) -> None:
    import _larger_model

    sizes = _larger_model.parse_sizes("hidden=256,layers=4")
    assert sizes == {**_larger_model.SIZES, "hidden": 256, "layers": 4}
    assert _larger_model.label(sizes).startswith("h256-") and "-l4-" in _larger_model.label(sizes)
    assert _larger_model.parse_sizes("") == _larger_model.SIZES
    with pytest.raises(SystemExit, match="depth"):
        _larger_model.parse_sizes("depth=3")
    with pytest.raises(SystemExit):
        _larger_model.parse_sizes("hidden=big")
