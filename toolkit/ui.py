"""Terminal output: rich tables on stdout, logged steps with timings on stderr, JSON when asked.

rich is imported on first use (`ui.out`, `ui.err`, `table`): importing it costs 30 ms on a quiet machine
and several times that on a loaded one, which commands printing a few plain lines need not pay.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from toolkit.records.outcome import Outcome

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    out: Console
    err: Console

_consoles: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # `ui.out` / `ui.err`: the rich consoles, made when first asked for.
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _consoles:
        from rich.console import Console

        _consoles[name] = Console(stderr=name == "err", soft_wrap=True)
    return _consoles[name]


_thread = threading.local()  # the log prefix of the work this thread does (a release, side by side)
_side_by_side = [0]  # work running side by side: no spinners anywhere (only one live display can be shown)


@contextmanager
def side_by_side(prefix: str) -> Iterator[None]:
    """Work of one of several threads at once: its step lines start with `prefix`, spinners are off."""
    _side_by_side[0] += 1
    _thread.prefix = prefix
    try:
        yield
    finally:
        _thread.prefix = ""
        _side_by_side[0] -= 1


def stderr_is_terminal() -> bool:
    if "err" in _consoles:
        return bool(_consoles["err"].is_terminal)
    return sys.stderr.isatty()


def stdout_is_terminal() -> bool:
    if "out" in _consoles:
        return bool(_consoles["out"].is_terminal)
    return sys.stdout.isatty()


class StepMark:
    """What a step's body says of its own result when it ends without an exception (a verification that
    found problems): `failed = True` makes the end line ✗."""

    failed: bool = False
    note: str = ""  # said after the time on the end line ("reused")


@contextmanager
def step(title: str, *, quiet: bool = False, live: bool = True) -> Iterator[StepMark]:
    """Log a pipeline step and how long it took, as cibuildwheel does.

    On a terminal a spinner with the elapsed time runs while the step works (builds, venvs, test runs
    take minutes); in logs (CI) the start and end lines are printed instead. The step fails when its body
    raises, or sets `failed` on the mark it is given. `live=False`: the log lines even on a terminal (steps
    running side by side, where only one spinner can be shown).
    """
    start = time.perf_counter()
    live = live and not _side_by_side[0] and not quiet and stderr_is_terminal()
    if not quiet and not live:
        _log(f"▶ {title}")
    mark = StepMark()
    try:
        with __getattr__("err").status(f"[bold]{title}[/]", spinner="dots") if live else nullcontext():
            yield mark
    except BaseException:
        if not quiet:
            _log(f"✗ {title} ({time.perf_counter() - start:.2f}s)", "red")
        raise
    if not quiet:
        if mark.failed:
            _log(f"✗ {title} ({time.perf_counter() - start:.2f}s)", "red")
        else:
            note = f", {mark.note}" if mark.note else ""
            _log(f"✓ {title} ({time.perf_counter() - start:.2f}s{note})", "green")


def _log(line: str, style: str = "bold") -> None:
    """A step line on stderr: styled on a terminal, plain (without loading rich) in logs."""
    line = getattr(_thread, "prefix", "") + line
    if stderr_is_terminal():
        from rich.markup import escape

        __getattr__("err").print(f"[{style}]{escape(line)}[/]")
    else:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def table(title: str, columns: list[str]) -> Table:
    from rich.table import Table

    result = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        result.add_column(column, overflow="fold")
    return result


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# Styles of the outcome strings (toolkit.records.outcome), keyed by string: callers pass what they read from files.
STATUS_STYLE = {outcome.value: outcome.style for outcome in Outcome if outcome.style}


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status
