"""The download and checkout cache, file locks and atomic writes.

Everything the toolkit keeps outside the repository lives under one cache root
(`~/.cache/vpatch` unless overridden). Entries are written under a temporary name
and renamed into place, and each entry has a lock file so that two processes
never build the same entry at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from toolkit import faults, tempnames

HASH_CHUNK = 1 << 20


def default_cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "vpatch"


@contextlib.contextmanager
def locked(path: Path, timeout: float = 1800) -> Iterator[None]:
    """Hold an exclusive lock on `path.lock` (created beside it) for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        yield


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tempnames.prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        faults.reached("atomic.write")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A temporary directory beside `final`; removed unless the caller renamed it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tempnames.sweep(final.parent)  # staging dirs of killed runs
    tmp = Path(tempfile.mkdtemp(prefix=tempnames.prefix(final.name), suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
