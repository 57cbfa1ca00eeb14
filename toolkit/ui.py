"""Terminal output: rich tables on stdout, logged steps with timings on stderr, JSON when asked."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@contextmanager
def step(title: str, *, quiet: bool = False) -> Iterator[None]:
    """Log a pipeline step and how long it took, as cibuildwheel does.

    On a terminal a spinner with the elapsed time runs while the step works (builds, venvs, test runs
    take minutes); in logs (CI) the start and end lines are printed instead.
    """
    start = time.perf_counter()
    live = not quiet and err.is_terminal
    if not quiet and not live:
        err.print(f"[bold]▶ {title}[/]")
    try:
        with err.status(f"[bold]{title}[/]", spinner="dots") if live else nullcontext():
            yield
    except BaseException:
        if not quiet:
            err.print(f"[red]✗ {title}[/] ({time.perf_counter() - start:.2f}s)")
        raise
    if not quiet:
        err.print(f"[green]✓ {title}[/] ({time.perf_counter() - start:.2f}s)")


def table(title: str, columns: list[str]) -> Table:
    result = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        result.add_column(column, overflow="fold")
    return result


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


STATUS_STYLE = {
    "clean": "green",
    "offset": "yellow",
    "fuzz": "yellow",
    "merged": "cyan",
    "failed": "red",
    "conflict": "red",
    "not applied": "dim",
}


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status
