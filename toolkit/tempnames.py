"""Names for vpatch's temporary files, and the sweep that removes stale ones.

Every temporary file or directory vpatch makes is named `.vpatch-<pid>-<what>` so that a later run can
recognise it as its own, and remove it once the process that made it is gone (killed). Nothing else in
a directory is ever touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

PREFIX = ".vpatch-"
_OWNED = re.compile(r"^\.vpatch-(\d+)-")
# Before these names, temp dirs under patches/ were `.vllm-X.old-PID` (the swap's old copy) and
# `.vllm-X.<8 random>.tmp` (the staged copy; no PID: removed once an hour old, no run takes that long).
_LEGACY_OLD = re.compile(r"^\.vllm-.+\.old-(\d+)$")
_LEGACY_STAGED = re.compile(r"^\.vllm-.+\.[a-z0-9_]{8}\.tmp$")
LEGACY_AGE = 3600


def prefix(what: str) -> str:
    """The start of a temporary name for this process (tempfile's `prefix=`)."""
    return f"{PREFIX}{os.getpid()}-{what}."


def owner_pid(name: str) -> int | None:
    match = _OWNED.match(name) or _LEGACY_OLD.match(name)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def sweep(directory: Path, *, keep: frozenset[str] = frozenset()) -> list[str]:
    """Remove this tool's temp files in `directory` whose process is gone; the names removed."""
    removed: list[str] = []
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return removed
    now = time.time()
    for entry in entries:
        pid = owner_pid(entry.name)
        if _LEGACY_STAGED.match(entry.name):
            with contextlib.suppress(OSError):
                if now - entry.lstat().st_mtime > LEGACY_AGE:
                    pid = -1
        if pid is None or entry.name in keep or (pid != -1 and pid_alive(pid)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        removed.append(entry.name)
    return removed
