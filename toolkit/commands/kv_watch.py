"""`vpatch kv-watch ENDPOINT`: follow a patched engine's KV-cache event stream (docs/kv-events.md) live."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from toolkit import ui
from toolkit.errors import VpatchError
from toolkit.options import Options

if TYPE_CHECKING:  # zmq and rich's live display load only when kv-watch runs
    from rich.console import Group
    from rich.live import Live
    from rich.table import Table

    from toolkit.kvindex import Subscriber

REFRESH_MS = 250


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kv-watch", help="watch the KV-cache events and load metrics a dynamo-base engine publishes"
    )
    parser.add_argument("endpoint", metavar="ENDPOINT", help="the engine's PUB endpoint, e.g. tcp://127.0.0.1:5557")
    parser.add_argument("--replay", metavar="ENDPOINT", help="the engine's replay (ROUTER) endpoint, to fill gaps")
    parser.add_argument("--topic", default="", help="topic the engine publishes under (default: empty)")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--worker", default="w0", help="name for this engine in the summary (default: w0)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end instead of a live view")
    parser.set_defaults(run=run)


def gaps_text(gaps: list[list[int]], shown: int = 5) -> str:
    if not gaps:
        return "[green]none[/]"
    text = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in gaps[-shown:])
    if len(gaps) > shown:
        text = f"{len(gaps) - shown} earlier, " + text
    return f"[red]{text} unrecoverable[/]"


def render(subscriber: Subscriber, elapsed: float) -> Group:
    from rich.console import Group

    summary = subscriber.summary()
    head = ui.table(f"kv-watch {summary['endpoint']} ({elapsed:.1f}s)", ["", ""])
    head.show_header = False
    head.add_row("worker", summary["worker"] + (" [red](stale)[/]" if summary["stale"] else ""))
    head.add_row("replay", summary["replay_endpoint"] or "[dim]none[/]")
    head.add_row("last seq", "-" if summary["last_seq"] is None else str(summary["last_seq"]))
    head.add_row(
        "batches",
        f"{summary['batches']} applied ({summary['replayed']} from {summary['replay_requests']} replays), "
        f"{summary['duplicates']} duplicates ignored",
    )
    head.add_row("events", ", ".join(f"{name} {count}" for name, count in summary["events"].items()))
    head.add_row(
        "hashes",
        f"{summary['hashes_cached']} cached ({summary['blocks_stored']} stored, {summary['blocks_removed']} removed)",
    )
    metrics = summary["metrics"]
    if metrics:
        head.add_row(
            "load",
            f"{metrics['num_running']} running, {metrics['num_waiting']} waiting, "
            f"KV cache {metrics['kv_cache_usage']:.1%} used, prefix hit rate {metrics['prefix_cache_hit_rate']:.1%} "
            f"({metrics['prefix_cache_hits']}/{metrics['prefix_cache_queries']} blocks)",
        )
    else:
        head.add_row("load", "[dim]no metrics yet[/]")
    head.add_row("gaps", gaps_text(summary["unrecoverable"]))
    parts: list[Table | str] = [head]
    parts += [f"[yellow]warning:[/] {error}" for error in summary["errors"][-3:]]
    return Group(*parts)


def watch(subscriber: Subscriber, seconds: float | None, live: Live | None) -> float:
    start = time.monotonic()
    deadline = None if seconds is None else start + seconds
    if subscriber.replay_endpoint is not None:
        subscriber.catch_up()
    try:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = REFRESH_MS if deadline is None else min(REFRESH_MS, (deadline - now) * 1000)
            subscriber.poll(wait)
            if live is not None:
                live.update(render(subscriber, time.monotonic() - start))
    except KeyboardInterrupt:
        pass
    return time.monotonic() - start


def run(args: argparse.Namespace, options: Options) -> int:
    import zmq
    from rich.live import Live

    from toolkit.kvindex import Subscriber

    if args.seconds is not None and args.seconds <= 0:
        raise VpatchError(f"--seconds must be positive, got {args.seconds:g}")
    try:
        subscriber = Subscriber(args.endpoint, args.replay, args.topic.encode(), args.worker)
    except zmq.ZMQError as exc:
        raise VpatchError(f"cannot connect to {args.endpoint} / {args.replay}: {exc}") from None
    with subscriber:
        if options.json:
            elapsed = watch(subscriber, args.seconds, None)
            ui.print_json({**subscriber.summary(), "seconds": round(elapsed, 3)})
            return 0
        with Live(render(subscriber, 0), console=ui.out, refresh_per_second=4) as live:
            elapsed = watch(subscriber, args.seconds, live)
            live.update(render(subscriber, elapsed))
    return 0
