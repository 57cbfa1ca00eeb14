"""The statistic of bench/engine_steps.py: per-repetition ratios of two runs of the same batch (mean step, median
step, whole-batch process CPU), their median with IQR and min-max, the order the sides run in, and the run's
header and subscriber summary. Pure functions, no engine (tests/unit/bench/test_bench_engine_steps.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

STEP_CLOCKS = ("wall", "thread", "process")


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(p25, median, p75), linear interpolation between order statistics (one value: itself three times)."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        return values[0], values[0], values[0]
    p25, p50, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return p25, p50, p75


def summary(values: list[float]) -> dict[str, float]:
    """Median, IQR bounds, min, max and count of a non-empty list."""
    p25, p50, p75 = quartiles(values)
    return {"median": p50, "p25": p25, "p75": p75, "min": min(values), "max": max(values), "n": len(values)}


def step_ratio(ours: dict[str, Any], base: dict[str, Any], clock: str, how: str) -> float:
    """One repetition's ratio of two runs of the same batch: their mean step ("mean", i.e. the sum over the steps)
    or median step ("median") on `clock`; "batch" is the process CPU of the whole drained batch."""
    if how == "batch":
        return float(ours["batch_process"]) / float(base["batch_process"])
    a, b = ours[clock], base[clock]
    if len(a) != len(b):
        raise ValueError(f"the two runs took {len(a)} and {len(b)} steps: not the same batch")
    if how == "mean":
        return sum(a) / sum(b)
    if how == "median":
        return statistics.median(a) / statistics.median(b)
    raise ValueError(f"unknown ratio {how!r}")


def ratios(ours: list[dict[str, Any]], base: list[dict[str, Any]], clock: str, how: str) -> list[float]:
    """Per-repetition ratios (run i of `ours` against run i of `base`, measured in the same repetition)."""
    return [step_ratio(a, b, clock, how) for a, b in zip(ours, base, strict=True)]


def toggle_order(turn: int) -> tuple[str, str, str]:
    """The one process's three batches of a repetition, back to back: features on, off, and off again (the
    in-process A/A control); on, off, off-b in even repetitions, off-b, off, on in odd ones (ABBA...: "on" and
    "off" always adjacent, neither always first)."""
    order = ("on", "off", "off-b")
    return order if turn % 2 == 0 else order[::-1]


def rotated(items: list[str], turn: int) -> list[str]:
    """`items` rotated left by `turn`, reversed every other cycle (every side leads equally often)."""
    k = turn % len(items)
    order = items[k:] + items[:k]
    return order[::-1] if (turn // len(items)) % 2 else order


def fmt_ratio(values: list[float]) -> str:
    s = summary(values)
    return f"{s['median']:.3f}x (IQR {s['p25']:.3f}-{s['p75']:.3f}, min {s['min']:.3f}, max {s['max']:.3f})"


def verdict(value: float, goal: float, at_most: bool) -> str:
    ok = value <= goal if at_most else value >= goal
    return f"{'PASS' if ok else 'MISS'} (goal {'≤' if at_most else '≥'} {goal})"


# "features on" publishes the KV events through the plugin's inline publisher (docs/plugin.md) unless
# `--publisher upstream` asks for vLLM's own ZmqEventPublisher (its thread); the engine's log says which it built
PUBLISHERS = ("inline", "upstream")
INLINE_ENV = {"DYNAMO_KV_EVENTS_PUBLISHER": "inline"}
INLINE_LINE = "dynamo-base plugin: KV events published inline on the engine thread"


def publisher_env(publisher: str) -> dict[str, str]:
    """The plugin-on engine's extra environment for `--publisher`."""
    return dict(INLINE_ENV) if publisher == "inline" else {}


def check_publisher(publisher: str, log: Path) -> str:
    """The publisher the plugin-on engine built, from its log; exits when it is not the one asked for."""
    text = log.read_text("utf-8", "replace") if log.exists() else ""
    built = "inline" if INLINE_LINE in text else "upstream"
    if built != publisher:
        raise SystemExit(f"{log}: the engine built the {built} KV-event publisher, not the {publisher} one asked for")
    return (
        "the plugin's inline publisher (DYNAMO_KV_EVENTS_PUBLISHER=inline: encoded and sent on the engine thread)"
        if built == "inline"
        else "vLLM's ZmqEventPublisher (its publisher thread)"
    )


def header(found: dict[str, Any], times: dict[str, str]) -> None:
    loads = summary(found["loads"])
    print(f"uptime at start: {times['start']}")
    print(f"uptime at end:   {times['end']}")
    spread = f"min {loads['min']:.1f}, max {loads['max']:.1f}"
    print(f"1-min load during the repetitions: median {loads['median']:.1f} ({spread})")


def watch_summary(out: str) -> str:
    try:
        data = json.loads(out)
    except ValueError:
        return f"no summary ({out.strip()[-200:]!r})"
    if isinstance(data, dict) and isinstance(data.get("workers"), list) and data["workers"]:
        data = data["workers"][0]
    load = data.get("load") or {}
    figures = ", ".join(f"{k} {v}" for k, v in load.items() if isinstance(v, int | float | str))
    kept = ("batches", "blocks_stored", "decode_errors", "duplicates", "unrecoverable")
    return ", ".join(f"{k} {data.get(k)}" for k in kept) + (f"; load messages: {figures}" if figures else "")


def clock_lines(ours: list[dict[str, Any]], base: list[dict[str, Any]], indent: str) -> list[str]:
    lines = []
    for clock in STEP_CLOCKS:
        lines.append(
            f"{indent}{clock:7} mean step {fmt_ratio(ratios(ours, base, clock, 'mean'))}; "
            f"median step {fmt_ratio(ratios(ours, base, clock, 'median'))}"
        )
    lines.append(
        f"{indent}process CPU of the whole batch, publisher drained: {fmt_ratio(ratios(ours, base, '', 'batch'))}"
    )
    return lines


def per_step(runs: list[dict[str, Any]], clock: str) -> str:
    means = [sum(r[clock]) / len(r[clock]) * 1e6 for r in runs]
    s = summary(means)
    return f"{s['median']:.0f} µs (IQR {s['p25']:.0f}-{s['p75']:.0f})"


def per_batch(runs: list[dict[str, Any]], get: Any) -> float:
    """Median over runs of one figure of a run."""
    return statistics.median([float(get(r)) for r in runs])


def cost_lines(on: list[dict[str, Any]], off: list[dict[str, Any]], steps: int) -> list[str]:
    """Where the features' CPU goes, µs per step: their own calls on the engine thread, and the other threads."""
    us = 1e6 / steps
    inline = {k: per_batch(on, lambda r, k=k: r[k]) * us for k in ("publish_cpu", "plugin_cpu")}
    kinds = ("engine", "publisher", "zmq", "other")
    threads = {
        k: (per_batch(on, lambda r, k=k: r["threads"][k]) * us, per_batch(off, lambda r, k=k: r["threads"][k]) * us)
        for k in kinds
    }
    direct = inline["publish_cpu"] + inline["plugin_cpu"] + sum(threads[k][0] - threads[k][1] for k in kinds[1:3])
    base = per_batch(off, lambda r: r["batch_process"]) * us
    return [
        "   where it goes, µs per step (medians; on vs off): on the engine thread, inside publish() (upstream's:"
        f" queue put, notify; the inline one: msgpack, send) {inline['publish_cpu']:.1f}, inside the plugin's"
        f" record() (figures, msgpack, send)"
        f" {inline['plugin_cpu']:.1f};",
        "   CPU per thread kind: " + ", ".join(f"{k} {threads[k][0]:.0f} vs {threads[k][1]:.0f}" for k in kinds),
        "   the features' own work (those two calls + the publisher and libzmq threads' extra):"
        f" {direct:.0f} µs per step = {direct / base:.1%} of the off step's process CPU ({base:.0f} µs); the events'"
        " recording in the block pool"
        " is inside the engine thread's figure, not in this sum",
    ]
