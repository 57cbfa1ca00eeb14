"""The crash log: what an unexpected exception leaves behind for a bug report, while the user sees one line.

Each crash appends one record (time, argv, working directory, the versions of Python, vpatch and git, and
the traceback) to `<cache>/log/vpatch.log`, in a single append-mode write so concurrent crashes do not
interleave and a kill mid-way cannot damage earlier records. Past 1 MiB the log is rotated to
`vpatch.log.1` (one generation is enough to report the latest crashes).
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from toolkit import __version__
from toolkit.cache import default_cache_root
from toolkit.git import Git

LOG_NAME = "vpatch.log"
ROTATE_BYTES = 1 << 20


def log_path(cache_dir: Path | None) -> Path:
    """Where the crash log lives: the cache the options named, else the default cache."""
    if cache_dir is None:
        env = os.environ.get("VPATCH_CACHE_DIR")
        cache_dir = Path(env).expanduser() if env else default_cache_root()
    return cache_dir / "log" / LOG_NAME


def git_version(cwd: Path) -> str:
    try:
        return Git(cwd).version()
    except Exception as exc:  # git missing or broken: the log still gets written
        return f"unknown ({type(exc).__name__}: {exc})"


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError as exc:  # the working directory was removed under the command
        return f"unknown ({exc})"


def crash_record(error: BaseException, argv: Sequence[str], cwd: Path) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"### vpatch internal error at {now}",
        f"argv: {shlex.join(['vpatch', *argv])}",
        f"cwd: {_cwd()}",
        f"vpatch: {__version__}",
        f"python: {platform.python_version()} ({sys.executable})",
        f"platform: {platform.platform()}",
        f"git: {git_version(cwd)}",
        "",
        *traceback.format_exception(error),
    ]
    return "\n".join(line.rstrip("\n") for line in lines) + "\n\n"


def write_crash_log(error: BaseException, argv: Sequence[str], cache_dir: Path | None) -> Path:
    """Append the record for `error` to the crash log and return the log's path (OSError if it cannot)."""
    path = log_path(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = crash_record(error, argv, path.parent).encode("utf-8", "replace")
    try:
        if path.stat().st_size > ROTATE_BYTES:
            os.replace(path, path.with_name(LOG_NAME + ".1"))
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:  # one write in practice; the loop covers a short write
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


def internal_error_line(error: BaseException, argv: Sequence[str], cache_dir: Path | None) -> str:
    """The one line the user sees for an unexpected exception; the details go to the crash log."""
    message = " ".join(str(error).split())  # one line even when the message has several
    what = f"{type(error).__name__}: {message}" if message else type(error).__name__
    try:
        where = f"details in {write_crash_log(error, argv, cache_dir)}"
    except OSError as exc:
        where = f"no crash log: {exc}"
    return f"vpatch: internal error: {what} ({where})"
