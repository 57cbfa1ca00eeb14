"""The kv-routing contract, judged per worker from the consumer's observations and the engine's trace.

Items (each pass, fail with a diff, or not-provided):

- `cached-prefixes`: after every engine step, the set of block hashes the consumer's `KVIndex` holds for
  the worker equals the engine's own cached blocks (the runner's `cached_hashes`);
- `overlap`: after every step, for every prompt of the workload, the overlap the project's `Router`
  computes equals the number of leading blocks the engine's block pool holds (by its own block hash);
- `load-figures`: after every step, the running and waiting counts, KV-cache usage and prefix-cache hit
  rate the router weighs equal the scheduler's own figures; a build whose batches carry no metrics at
  all does not provide this item. For stock + the dynamo-base plugin the figures come on the plugin's own
  endpoint (`load_endpoint`), not inside the event batches, in a LoadMetrics message for every step that
  changed them (each message's `step` says which SchedulerStats it carries): after step N of a workload (the
  runner's `stats_handed`: SchedulerStats handed to the frontend's stat loggers so far) the router holds that
  engine's newest message with `step` <= `stats_handed - 1`, and its figures must be the scheduler's of
  step N. So a change the plugin did not send fails the step it was made in; a step before any message
  arrived fails too; no message at all is "not provided".

Alignment: the runner records `published` (batches handed to the publisher so far) per step, so after a
step the consumer must hold the state after the batch with seq `published - 1` of that workload's engine
(a new engine per workload: the Subscriber counts it as a restart, `epoch`). A step whose batch the
consumer passed over in one replay answer is not observable and is counted, not judged. Each side is
compared with its own engine only: no normalization between builds.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from toolkit.records.contract import FigureComparison, ItemResult, Observation
from toolkit.records.status import Status

FEATURE = "kv-routing"
ITEMS = ("cached-prefixes", "overlap", "load-figures")
LOAD_KEYS = ("num_running", "num_waiting", "kv_cache_usage", "prefix_cache_hit_rate")
SHOWN = 10  # mismatching steps listed in a diff
EMPTY = Observation(worker="", epoch=-1, seq=None, batches=0, hashes=[], overlaps={})


class Timeline:
    """The consumer's observations of one worker, looked up by (epoch, seq)."""

    def __init__(self, observations: Sequence[Observation]) -> None:
        ordered = sorted(
            (o for o in observations if o.seq is not None), key=lambda o: (o.epoch, o.seq if o.seq is not None else -1)
        )
        self.keys = [(o.epoch, o.seq if o.seq is not None else -1) for o in ordered]
        self.observations = ordered

    def at(self, epoch: int, seq: int) -> Observation | None:
        """The consumer's state once it had applied batch `seq` of engine `epoch`: the observation made
        right then; EMPTY or an earlier one when it never got there (what a router would have used);
        None when it jumped over that batch in one replay answer (not observable)."""
        position = bisect_right(self.keys, (epoch, seq))
        if position and self.keys[position - 1] == (epoch, seq):
            return self.observations[position - 1]
        if position < len(self.keys) and self.keys[position][0] == epoch:
            return None
        return self.observations[position - 1] if position else EMPTY


def judge(
    build: str, trace: list[dict], observations: Sequence[Observation], *, load_endpoint: str | None = None
) -> list[ItemResult]:
    """The three items for one worker: `build` names it in the results (e.g. `stock 0.9.0`); `load_endpoint`:
    the plugin endpoint the consumer followed for the load figures (stock + plugin), else None."""
    steps = [r for r in trace if not r.get("summary")]
    workloads = list(dict.fromkeys(r["workload"] for r in steps))
    if not steps:
        why = "the engine recorded no steps"
        return [ItemResult(FEATURE, item, Status.FAIL, why) for item in ITEMS]
    loads = [o for o in observations if o.stream == "load"]
    observations = [o for o in observations if o.stream == "events"]
    timeline = Timeline(observations)
    index_bad: list[str] = []
    overlap_bad: list[str] = []
    load_bad: list[str] = []
    judged = unobservable = probes = load_judged = 0
    metrics_seen = any(o.metrics is not None for o in observations)
    for row in steps:
        epoch = workloads.index(row["workload"])
        published = row.get("published", 0)
        state = EMPTY if not published else timeline.at(epoch, published - 1)
        if state is None:
            unobservable += 1
            continue
        judged += 1
        where = f"{row['workload']} step {row['step']}"
        held, cached = set(state.hashes), set(row["cached_hashes"])
        if held != cached:
            extra, missing = sorted(held - cached), sorted(cached - held)
            index_bad.append(
                f"{where}: consumer holds {len(held)}, engine caches {len(cached)} "
                f"(only consumer: {_few(extra)}; only engine: {_few(missing)})"
            )
        for probe, expected in sorted(row.get("probe_overlap", {}).items()):
            probes += 1
            # before the engine's first batch the consumer rightly holds nothing: its router's overlap is 0
            got = state.overlaps.get(probe, 0 if not published else None)
            if got != expected:
                overlap_bad.append(f"{where}: {probe}: router overlap {got}, engine holds {expected} leading blocks")
        if published and metrics_seen and row.get("load") is not None:
            load_judged += 1
            diff = _load_diff(state.metrics, row["load"])
            if diff:
                load_bad.append(f"{where}: {diff}")
    span = f"{judged} steps over {len(workloads)} workload(s)" + (
        f" ({unobservable} passed over by replay, not judged)" if unobservable else ""
    )
    never = "" if observations else "; the consumer applied no batch at all"
    results = [
        _item(
            "cached-prefixes",
            index_bad,
            f"{span}: the consumer's index equals the engine's cached blocks after every step",
            f"{len(index_bad)} of {judged} steps: the consumer's index differs from the engine's cached blocks{never}",
        ),
        _item(
            "overlap",
            overlap_bad,
            f"{span}: all {probes} probe overlaps equal the engine's",
            f"{len(overlap_bad)} of {probes} probe overlaps differ from the engine's{never}",
        ),
    ]
    if load_endpoint is not None:
        results.append(judge_plugin_load(build, steps, workloads, loads, load_endpoint))
    elif not observations:
        results.append(
            ItemResult(FEATURE, "load-figures", Status.FAIL, "nothing arrived, so no load figure either" + never)
        )
    elif not metrics_seen:
        results.append(
            ItemResult(
                FEATURE,
                "load-figures",
                Status.NOT_PROVIDED,
                f"{build} publishes no load metrics: none of the {observations[-1].batches} batches the consumer "
                "applied carried running/waiting/KV usage/hit rate",
            )
        )
    else:
        results.append(
            _item(
                "load-figures",
                load_bad,
                f"{load_judged} steps: running, waiting, KV usage and hit rate equal the scheduler's own",
                f"{len(load_bad)} of {load_judged} steps: the load figures differ from the scheduler's",
            )
        )
    return results


def judge_plugin_load(
    build: str, steps: list[dict], workloads: list[str], loads: Sequence[Observation], endpoint: str
) -> ItemResult:
    """`load-figures` from the plugin's own stream: per step, the figures of the newest message sent by then."""
    held: dict[int, list[tuple[int, Observation]]] = {}  # per epoch (engine): its messages, by the stats they carry
    for o in loads:
        held.setdefault(o.epoch, []).append((o.step if o.step is not None else o.seq or 0, o))
    for messages in held.values():
        messages.sort(key=lambda m: m[0])
    carried = {epoch: [m[0] for m in messages] for epoch, messages in held.items()}
    bad: list[str] = []
    judged = 0
    for row in steps:
        handed, truth = row.get("stats_handed"), row.get("load")
        if not handed or truth is None:
            continue  # no SchedulerStats this step: nothing was published, nothing to hold
        judged += 1
        where = f"{row['workload']} step {row['step']}"
        epoch = workloads.index(row["workload"])
        newest = bisect_right(carried.get(epoch, []), handed - 1)
        if not newest:
            figures = _figures(truth)
            bad.append(f"{where}: the message of stats {handed - 1} never reached the consumer (scheduler: {figures})")
            continue
        state = held[epoch][newest - 1][1]
        diff = _load_diff(state.metrics, truth)
        if diff:
            bad.append(f"{where}: {diff}")
    if not loads:
        more = f"\n... {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        return ItemResult(
            FEATURE,
            "load-figures",
            Status.NOT_PROVIDED,
            f"{build}: no LoadMetrics message arrived on the plugin endpoint {endpoint} in {judged} steps "
            "(is the plugin installed and DYNAMO_LOAD_METRICS_ENDPOINT set?)",
            "\n".join(bad[:SHOWN]) + more,
        )
    return _item(
        "load-figures",
        bad,
        f"{judged} steps: running, waiting, KV usage and hit rate, in {len(loads)} LoadMetrics messages on "
        f"{endpoint} (one per step that changed them), equal the scheduler's own",
        f"{len(bad)} of {judged} steps: the plugin's load figures on {endpoint} differ from the scheduler's",
    )


def compare_figures(config: str, old_trace: list[dict], new_trace: list[dict]) -> FigureComparison:
    """NEW's load figures against OLD's, step by step, where both engines scheduled alike."""
    old = {(r["workload"], r["step"]): r for r in old_trace if not r.get("summary") and r.get("load")}
    new = [r for r in new_trace if not r.get("summary") and r.get("load")]
    equal = dict.fromkeys(LOAD_KEYS, 0)
    alike = 0
    for row in new:
        twin = old.get((row["workload"], row["step"]))
        if twin is None or twin.get("scheduled") != row.get("scheduled"):
            continue
        alike += 1
        for key in LOAD_KEYS:
            if abs(float(twin["load"][key]) - float(row["load"][key])) <= 1e-9:
                equal[key] += 1
    return FigureComparison(config, alike, equal, len(old), len(new))


def _figures(truth: dict) -> str:
    return ", ".join(f"{key} {truth[key]}" for key in LOAD_KEYS)


def _load_diff(metrics: dict[str, float] | None, truth: dict) -> str:
    if metrics is None:
        return "the consumer holds no load figures"
    wrong = [
        f"{key} {metrics.get(key)} != {truth[key]}"
        for key in LOAD_KEYS
        if metrics.get(key) is None or abs(float(metrics[key]) - float(truth[key])) > 1e-9
    ]
    return ", ".join(wrong)


def _few(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:3])
    return (shown + (f" +{len(values) - 3}" if len(values) > 3 else "")) or "-"


def _item(item: str, bad: list[str], good: str, failed: str) -> ItemResult:
    if bad:
        more = f"\n... {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        return ItemResult(FEATURE, item, Status.FAIL, failed, "\n".join(bad[:SHOWN]) + more)
    return ItemResult(FEATURE, item, Status.PASS, good)
