"""`vpatch kv-watch ENDPOINT...`: follow engines' KV-cache event streams (docs/kv-events.md) live."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.options import Options

if TYPE_CHECKING:  # zmq and rich's live display load only when kv-watch runs
    from rich.console import Group
    from rich.live import Live
    from rich.table import Table

    from toolkit.contracts.recorder import Recorder
    from toolkit.serving.kv.subscriber import Subscriber

REFRESH_MS = 250
UNTIL_DRAIN_S = 1.5

EPILOG = """\
Which side binds: dynamo-base engines bind their PUB endpoint (and replay ROUTER); kv-watch connects.
Stock vLLM 0.9.0+ binds only when the endpoint has '*' or '::' or is ipc:// / inproc://; for an endpoint
such as tcp://127.0.0.1:5557 the engine *connects*, so nothing arrives unless kv-watch binds it: pass --bind.
Encodings read: dynamo-base maps, upstream arrays (vLLM 0.9.0-0.23), upstream tagged maps (0.24.0+).
Load of stock vLLM workers: stock vLLM publishes none; with the dynamo-base plugin installed beside it
(docs/plugin.md), follow its load endpoint too: --metrics tcp://HOST:5559 (one per ENDPOINT, '-' for none).
Exit status: 1 when batches arrived but none could be decoded; 0 otherwise (a worker from which nothing
arrived is reported as 'no messages received').
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kv-watch",
        help="watch the KV-cache events (and load metrics) vLLM engines publish",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "endpoints", nargs="+", metavar="ENDPOINT", help="an engine's PUB endpoint, e.g. tcp://127.0.0.1:5557"
    )
    parser.add_argument(
        "--replay",
        metavar="ENDPOINT",
        action="append",
        default=[],
        help="replay (ROUTER) endpoint, to fill gaps: one per ENDPOINT, in order ('-' for none)",
    )
    parser.add_argument(
        "--metrics",
        metavar="ENDPOINT",
        action="append",
        default=[],
        help="the dynamo-base plugin's load-metrics endpoint: one per ENDPOINT, in order ('-' for none)",
    )
    parser.add_argument("--topic", default="", help="topic the engines publish under (default: empty)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument(
        "--worker", action="append", default=[], help="names for the engines in the summary (default: w0, w1, ...)"
    )
    parser.add_argument("--bind", action="store_true", help="bind the ENDPOINTs (for engines that connect, see below)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end instead of a live view")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="PATH",
        help="write what the consumer holds after every applied batch, one JSON line each (the contract judge's input)",
    )
    parser.add_argument(
        "--probes",
        type=Path,
        metavar="PATH",
        help="with --record: JSON {probe id: [token ids]} whose router overlap is recorded (read once it exists)",
    )
    parser.add_argument("--until", type=Path, metavar="PATH", help="stop (after a last drain) once PATH exists")
    parser.set_defaults(run=run)


def gaps_text(gaps: list[list[int]], shown: int = 5) -> str:
    if not gaps:
        return "[green]none[/]"
    text = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in gaps[-shown:])
    if len(gaps) > shown:
        text = f"{len(gaps) - shown} earlier, " + text
    return f"[red]{text} unrecoverable[/]"


def problems(summary: dict[str, Any]) -> list[str]:
    """What a reader must not miss about one worker (plain text: callers escape it)."""
    found = []
    if not summary["received"] and not summary["batches"]:
        found.append(f"{summary['worker']}: no messages received from {summary['endpoint']}")
    elif summary["decode_errors"] and not summary["batches"]:
        found.append(f"{summary['worker']}: received {summary['decode_errors']} batches, decoded none")
    if summary["restarts"]:
        found.append(f"{summary['worker']}: engine restarted {summary['restarts']} time(s); index reset")
    load = summary.get("load")
    if load is not None and not load["received"]:
        found.append(f"{summary['worker']}: no load messages received from {load['endpoint']}")
    elif load is not None and load["decode_errors"] and not load["applied"]:
        found.append(f"{summary['worker']}: received {load['decode_errors']} load messages, decoded none")
    return found


def render_one(summary: dict[str, Any], elapsed: float) -> Table:
    from rich.markup import escape

    head = ui.table(f"kv-watch {escape(summary['endpoint'])} ({elapsed:.1f}s)", ["", ""])
    head.show_header = False
    head.add_row("worker", escape(summary["worker"]) + (" [red](stale)[/]" if summary["stale"] else ""))
    head.add_row("encoding", escape(", ".join(summary["encodings"]) or "-"))
    head.add_row("replay", escape(summary["replay_endpoint"]) if summary["replay_endpoint"] else "[dim]none[/]")
    head.add_row("last seq", "-" if summary["last_seq"] is None else str(summary["last_seq"]))
    late = {None: "unknown", True: "yes", False: "no"}[summary["joined_late"]]
    head.add_row(
        "batches",
        f"{summary['batches']} applied ({summary['replayed']} from {summary['replay_requests']} replays), "
        f"{summary['duplicates']} duplicates ignored, {summary['decode_errors']} undecodable; joined late: {late}",
    )
    head.add_row("events", escape(", ".join(f"{name} {count}" for name, count in summary["events"].items())))
    head.add_row(
        "hashes",
        f"{summary['hashes_cached']} cached ({summary['blocks_stored']} stored, {summary['blocks_removed']} removed)",
    )
    metrics = summary["metrics"]
    if metrics:
        via = " (plugin)" if summary.get("metrics_source") == "plugin-load-metrics" else ""
        head.add_row(
            "load",
            f"{metrics['num_running']} running, {metrics['num_waiting']} waiting, "
            f"KV cache {metrics['kv_cache_usage']:.1%} used, prefix hit rate {metrics['prefix_cache_hit_rate']:.1%} "
            f"({metrics['prefix_cache_hits']}/{metrics['prefix_cache_queries']} "
            f"{escape(summary.get('metrics_unit') or 'blocks')}){via}",
        )
    elif summary.get("load") is not None:
        head.add_row("load", "[dim]no load messages yet from the plugin endpoint[/]")
    else:
        head.add_row("load", "[dim]no metrics (stock vLLM publishes none; see --metrics)[/]")
    head.add_row("gaps", gaps_text(summary["unrecoverable"]))
    return head


def render(subscribers: list[Subscriber], elapsed: float) -> Group:
    from rich.console import Group
    from rich.markup import escape

    parts: list[Table | str] = []
    for subscriber in subscribers:
        summary = subscriber.summary()
        parts.append(render_one(summary, elapsed))
        # everything from the wire is escaped: an event type like "[/yellow]" is text, not markup
        parts += [f"[yellow]warning:[/] {escape(error)}" for error in summary["errors"][-3:]]
    return Group(*parts)


def watch(
    subscribers: list[Subscriber],
    seconds: float | None,
    live: Live | None,
    *,
    recorder: Recorder | None = None,
    until: Path | None = None,
) -> float:
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds
    try:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if until is not None and until.exists():
                # the engines are done: take what is still queued, then stop
                deadline = min(deadline or math.inf, now + UNTIL_DRAIN_S)
                until = None
            wait = REFRESH_MS if deadline is None else min(REFRESH_MS, (deadline - now) * 1000)
            for subscriber in subscribers:
                if recorder is None:
                    subscriber.poll(wait / len(subscribers), deadline=deadline)
                elif subscriber.poll(wait / len(subscribers), max_messages=1, deadline=deadline):
                    recorder.observe(subscriber)  # one stream message at a time: one line per batch
            if live is not None:
                live.update(render(subscribers, time.monotonic() - start))
    except KeyboardInterrupt:
        pass
    return time.monotonic() - start


def open_subscribers(args: argparse.Namespace) -> list[Subscriber]:
    import zmq

    from toolkit.serving.kv.index import KVIndex
    from toolkit.serving.kv.subscriber import Subscriber

    count = len(args.endpoints)
    if len(args.replay) > count or len(args.worker) > count or len(args.metrics) > count:
        raise VpatchError(
            f"{len(args.replay)} --replay / {len(args.metrics)} --metrics / {len(args.worker)} --worker "
            f"for {count} ENDPOINT(s)"
        )
    replays = [None if r == "-" else r for r in args.replay] + [None] * (count - len(args.replay))
    loads = [None if m == "-" else m for m in args.metrics] + [None] * (count - len(args.metrics))
    workers = args.worker + [f"w{i}" for i in range(len(args.worker), count)]
    if len(set(workers)) != count:
        raise VpatchError(f"worker names must differ: {', '.join(workers)}")
    index = KVIndex()
    subscribers: list[Subscriber] = []
    try:
        for endpoint, replay, load, worker in zip(args.endpoints, replays, loads, workers, strict=True):
            try:
                subscribers.append(
                    Subscriber(
                        endpoint,
                        replay,
                        args.topic.encode(),
                        worker,
                        index=index,
                        bind=args.bind,
                        metrics_endpoint=load,
                    )
                )
            except zmq.ZMQError as exc:
                verb = "bind" if args.bind else "connect to"
                raise VpatchError(f"cannot {verb} {endpoint} / {replay} / {load}: {exc}") from None
    except BaseException:
        for subscriber in subscribers:
            subscriber.close()
        raise
    return subscribers


def run(args: argparse.Namespace, options: Options) -> int:
    from rich.live import Live
    from rich.markup import escape

    if args.seconds is not None and args.seconds <= 0:
        raise VpatchError(f"--seconds must be positive, got {args.seconds:g}")
    if args.probes is not None and args.record is None:
        raise VpatchError("--probes needs --record PATH")
    subscribers = open_subscribers(args)
    recorder = None
    try:
        if args.record is not None:
            from toolkit.contracts.recorder import Recorder

            recorder = Recorder(args.record, subscribers, args.probes)
        if options.json:
            elapsed = watch(subscribers, args.seconds, None, recorder=recorder, until=args.until)
            summaries = [s.summary() for s in subscribers]
            for summary in summaries:
                summary["problems"] = problems(summary)
            if len(summaries) == 1:
                ui.print_json({**summaries[0], "seconds": round(elapsed, 3)})
            else:
                ui.print_json({"workers": summaries, "seconds": round(elapsed, 3)})
        else:
            with Live(render(subscribers, 0), console=ui.out, refresh_per_second=4) as live:
                elapsed = watch(subscribers, args.seconds, live, recorder=recorder, until=args.until)
                live.update(render(subscribers, elapsed))
            summaries = [s.summary() for s in subscribers]
            for summary in summaries:
                for problem in problems(summary):
                    ui.err.print(f"[yellow]kv-watch:[/] {escape(problem)}")
    finally:
        if recorder is not None:
            recorder.close()
        for subscriber in subscribers:
            subscriber.close()
    undecoded = [s for s in summaries if s["decode_errors"] and not s["batches"]]
    return 1 if undecoded else 0
