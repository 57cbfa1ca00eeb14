"""The download and checkout cache, file locks and atomic writes.

Everything the toolkit keeps outside the repository lives under one cache root
(`~/.cache/vpatch` unless overridden). Entries are written under a temporary name
and renamed into place, and each entry has a lock file so that two processes
never build the same entry at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from toolkit import faults, tempnames
from toolkit.errors import VpatchError, display_path

HASH_CHUNK = 1 << 20


def default_cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "vpatch"


# Locks this process holds: (thread, path) -> (fd, depth), so that nested `locked(path)` calls in one
# thread re-enter (other threads open their own descriptor, which flock excludes like another process).
_held: dict[tuple[int, str], tuple[int, int]] = {}
_held_guard = threading.Lock()
LOCK_POLL = 0.05


@contextlib.contextmanager
def locked(path: Path, timeout: float = 1800) -> Iterator[None]:
    """Hold an exclusive lock on `path.lock` (created beside it) for the duration.

    An flock(2) on the lock file, as the `filelock` package takes it (so processes using either agree);
    written here because importing that package cost 70-100 ms at every start-up.
    """
    name = os.path.abspath(str(path) + ".lock")
    key = (threading.get_ident(), name)
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
    if held is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(name, timeout)
        with _held_guard:
            _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _held_guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def _acquire(name: str, timeout: float) -> int:
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if not _flock_within(fd, timeout):
            message = f"timed out after {timeout:.0f}s waiting for another vpatch process"
            raise VpatchError(message, path=name)
        with contextlib.suppress(OSError):  # the entry's last use, for `vpatch cache gc` (toolkit/cache_gc.py)
            os.utime(fd)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _flock_within(fd: int, timeout: float) -> bool:
    """Take an exclusive flock on `fd`, polling until `timeout` (seconds); False if it never came free."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stat_stamp(path: Path) -> list[int]:
    """What must stay equal for a file to still hold the bytes it held when it was hashed.

    Any write to a file changes its ctime, which no user-level call can set back (mtime can be:
    `os.utime`); a replaced file has a new inode and ctime.
    """
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def verified_stamp(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def mark_verified(target: Path, sha: str) -> None:
    """Record that `target` hashed to `sha`, with its stat stamp taken after the hash."""
    atomic_write_text(verified_stamp(target), json.dumps({"sha256": sha, "stat": stat_stamp(target)}) + "\n")


def still_verified(target: Path, sha: str) -> bool:
    """True when `target` was hashed to `sha` and nothing about the file changed since."""
    try:
        stamp = json.loads(verified_stamp(target).read_text(encoding="utf-8"))
        return stamp.get("sha256") == sha and stamp.get("stat") == stat_stamp(target)
    except (OSError, ValueError):
        return False


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


RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two names atomically
AT_FDCWD = -100


def replace_file(new: Path, target: Path) -> None:
    """`os.replace(new, target)`, but an existing regular target is swapped out rather than renamed over.

    On ext4 a rename over an existing file starts writeback of the new one (`auto_da_alloc`), 0.1-0.2 s
    for a 300 MB wheel still in the page cache; an atomic exchange, then unlinking the old file (now
    under the temporary name), does not. Readers see the old file or the new one either way.
    """
    if sys.platform == "linux" and target.is_file() and not target.is_symlink() and _exchange(new, target):
        new.unlink()
        return
    os.replace(new, target)


def _exchange(first: Path, second: Path) -> bool:
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without renameat2 (glibc < 2.28, musl)
        return False
    result = renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE)
    return result == 0  # EINVAL on file systems without exchange: the caller renames instead


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def require_writable_dir(path: Path, what: str) -> None:
    """Refuse, before anything is made, a directory vpatch is to write into (or create) but cannot.

    os.access honours read-only mounts even for root, and needs no probe file (nothing is written).
    """
    if path.exists() and not path.is_dir():
        raise VpatchError(f"{what} must be a directory, and this is a file", path=path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise VpatchError(f"{what} cannot be created: {existing} is a file", path=path)
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else "permission denied"
        where = "" if existing == path else f" (cannot create it in {display_path(existing)})"
        raise VpatchError(f"{what} is not writable: {reason}{where}", path=path)


PROJECT_LOCK_TIMEOUT = 600.0
_dir_locks: dict[Path, tuple[threading.RLock, list[int]]] = {}  # directory -> (thread lock, [depth, fd])
_dir_locks_guard = threading.Lock()


@contextlib.contextmanager
def project_lock(path: Path, timeout: float = PROJECT_LOCK_TIMEOUT) -> Iterator[None]:
    """Exclusive lock for changing `path`, a file of the project (pins.toml, CHANGELOG.md).

    The lock is flock(2) on the file's directory, not a lock file: the project tree is committed, and a
    `pins.toml.lock` would show up in it. A file replaced atomically has a new inode each time, so the
    file itself cannot carry the lock. Re-entrant within a process (one flock per directory).
    """
    directory = path.parent.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with _dir_locks_guard:
        thread_lock, state = _dir_locks.setdefault(directory, (threading.RLock(), [0, -1]))
    with thread_lock:
        if state[0] == 0:
            state[1] = _flock_dir(directory, path, timeout)
        state[0] += 1
        try:
            yield
        finally:
            state[0] -= 1
            if state[0] == 0:
                os.close(state[1])  # closing the descriptor releases the flock
                state[1] = -1


def _flock_dir(directory: Path, path: Path, timeout: float) -> int:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    if _flock_within(fd, timeout):
        return fd
    os.close(fd)
    raise VpatchError(
        f"another vpatch command has held the lock on {directory} for {timeout:.0f} s; try again when it has finished",
        path=path,
    )


def update_file(path: Path, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
    """Locked read-modify-write of a project file: `change(old)` gets the current bytes (None: no file)
    and returns the new bytes, or None to leave the file alone. The lock is held across the read, the
    change and the atomic replace, so concurrent commands never lose each other's update."""
    with project_lock(path):
        try:
            old: bytes | None = path.read_bytes()
        except FileNotFoundError:
            old = None
        new = change(old)
        if new is not None and new != old:
            atomic_write_bytes(path, new)
        return new


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
