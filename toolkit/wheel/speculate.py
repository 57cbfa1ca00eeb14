"""The overlay build's copy, started speculatively at process start from the plan the last same build left.

Why: the copy of a stock wheel's unchanged members (~300 MB, as long as `cp`) is the build's longest piece, and
it cannot start before the build knows what to copy: ~170 ms in, after the interpreter, the build's imports and
loading the project. The same build of the same inputs copies the same byte ranges to the same offsets, so the
console script (`toolkit.console`) looks up the plan the last such build saved (`<cache>/build-plans/`) and,
with the standard library alone, starts that work in a temporary file beside the target before importing the
rest; the build then runs as always.

Why it is safe: the speculation only ever writes its own temporary file. The build works out its own plan
(`RawZipWriter.plan`: every copy and write up to `settle()`, the written bytes included) and takes the
speculative file over only when that plan equals the speculation's job for job and the stock wheel it copies
from is the same file (device, inode, size, mtime, ctime); then it writes the rest there exactly as it would
have in its own file, renames it into place once the copy finished, and raises the copy's error if it failed.
Otherwise the speculation is cancelled and its file removed, and the build does the work itself. The plan's
file stamps (stock wheel, pins.toml, the series directory) only decide whether speculating is worth it: a
stale, corrupt or missing plan means no speculation, never a wrong wheel. Any way out of the process (an error,
an interrupt, a plan that did not match, a build that never got to the copy) cancels it and removes the file;
a killed process leaves a `tempnames` name the next run sweeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib

from toolkit import __version__
from toolkit.wheel.copier import Copier

TYPE_CHECKING = False  # typing and pathlib not loaded before the copy starts (~20 ms)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import BinaryIO, TypeAlias

    # ("copy", start, length, offset) from the stock wheel, or ("write", data, offset), in the order done
    Job: TypeAlias = tuple[str, int, int, int] | tuple[str, bytes, int]

PLAN_FORMAT = 1
PLANS_DIR = "build-plans"
KEEP_PLANS = 8

_session: _Session | None = None
_current: Speculation | None = None


class _Session:
    """This process's plan file (where a build of these arguments saves and finds its plan)."""

    def __init__(self, cache_dir: str, key: list) -> None:
        self.cache_dir = cache_dir
        self.key = key
        name = f"{zlib.crc32(json.dumps(key).encode()):08x}.json"
        self.path = os.path.join(cache_dir, PLANS_DIR, name)
        self.found: bytes | None = None  # the plan file as read at start
        self.recorded = False
        self.outcome: str | None = None


class Speculation:
    """A copy plan being carried out into a temporary file of its own beside the target."""

    def __init__(self, target: str, stock: str, jobs: list[Job]) -> None:
        self.target = target
        self.jobs = jobs
        self.claimed = False
        self._handed_over = False
        directory, filename = os.path.split(target)
        # tempnames.prefix's form (not imported: shutil, re): a killed run's file is swept by the next
        self.path: str | None = os.path.join(directory, f".vpatch-{os.getpid()}-{filename}.speculative.tmp")
        self._source = open(stock, "rb", buffering=0)  # noqa: SIM115 (closed by discard)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            self.path = None
            self._source.close()
            raise
        self.file: BinaryIO = os.fdopen(fd, "w+b")
        self._copier: Copier | None = Copier(fd)
        for job in jobs:
            if job[0] == "copy":
                self._copier.submit(self._source, *job[1:])
            else:
                self._copier.submit_write(job[1], job[2])  # type: ignore[arg-type]

    def matches(self, plan: list[Job], source: BinaryIO) -> bool:
        """Whether the build's plan is this one, copying from the same file."""
        ours, theirs = os.fstat(self._source.fileno()), os.fstat(source.fileno())
        same = [(s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in (ours, theirs)]
        return same[0] == same[1] and plan == self.jobs

    def hand_over(self) -> tuple[BinaryIO, Copier]:
        """The file and the copier, for the writer to go on with (it stops the copier; `discard` closes)."""
        assert self._copier is not None
        copier, self._copier = self._copier, None
        self._handed_over = True
        _note("adopted")
        return self.file, copier

    def discard(self) -> None:
        """Cancel the copy if it was not handed over, close the files, remove the file (once renamed: gone)."""
        if self._copier is not None:
            copier, self._copier = self._copier, None
            _note("cancelled")
            copier.stop(cancel=True)
        self.file.close()
        self._source.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):  # renamed into place
                os.unlink(self.path)
            self.path = None


def start(argv: Sequence[str], environ: dict[str, str] | None = None) -> None:
    """For a `build` command line: start the copy its last run planned, if that plan is still current."""
    global _session, _current
    end()
    if "build" not in argv:
        return
    env = os.environ if environ is None else environ
    _session = _Session(_cache_dir(argv, env), [__version__, os.getcwd(), list(argv)])
    try:
        with open(_session.path, "rb") as handle:
            _session.found = handle.read()
        target, stock, jobs, inputs, stamps = _decode(_session.found, _session.key)
        if stamps != _stamps(inputs):
            return
        _current = Speculation(target, stock, jobs)
    except (OSError, ValueError):  # no plan, a damaged one, inputs gone: the build does the copy itself
        _current = None


def claim(target: Path) -> Speculation | None:
    """The running speculation for `target` (once per process), for the build to take over or discard."""
    if _current is None or _current.claimed or _current.target != str(target):
        return None
    _current.claimed = True
    return _current


def record(target: Path, stock: Path, plan: list[Job], inputs: Sequence[Path], cache_dir: Path) -> None:
    """Save the plan of this process's first overlay build (if it is a `build` started through `start`)."""
    session = _session
    if session is None or session.recorded or str(cache_dir) != session.cache_dir:
        return
    session.recorded = True
    jobs = [[job[0], job[1].hex() if isinstance(job[1], bytes) else job[1], *job[2:]] for job in plan]
    roots = [os.fspath(path) for path in (stock, *inputs)]
    document = {"format": PLAN_FORMAT, "key": session.key, "target": str(target), "stock": str(stock)}
    data = json.dumps({**document, "inputs": roots, "stamps": _stamps(roots), "jobs": jobs}).encode() + b"\n"
    if data != session.found:
        from pathlib import Path

        from toolkit.cache import atomic_write_bytes

        atomic_write_bytes(Path(session.path), data)
        _prune(os.path.dirname(session.path))


def _prune(directory: str) -> None:
    """Keep the KEEP_PLANS plans written last (one per command line and directory: a bench's tmp dirs add up)."""
    with os.scandir(directory) as entries:
        plans = sorted((e for e in entries if e.name.endswith(".json")), key=lambda e: e.stat().st_mtime_ns)
    for entry in plans[:-KEEP_PLANS]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)


def end() -> str | None:
    """Discard an unclaimed speculation; what became of this process's speculation (for tests and logs):
    None (none started), "adopted", "cancelled" (the build's plan differed) or "unused" (never claimed)."""
    global _session, _current
    current, _current = _current, None
    if current is not None:  # claimed, the build discarded it already (a no-op again) but for an early error
        if not current.claimed:
            _note("unused")
        current.discard()
    outcome = _session.outcome if _session is not None else None
    _session = None
    return outcome


def _note(outcome: str) -> None:
    if _session is not None and _session.outcome is None:
        _session.outcome = outcome


def _cache_dir(argv: Sequence[str], env: dict[str, str] | os._Environ[str]) -> str:
    """The cache directory as `load_options` finds it from the command line and the environment (a
    `[tool.vpatch] cache-dir` elsewhere: `record` sees the build's cache differ and saves nothing)."""
    chosen = None
    for index, arg in enumerate(argv):
        if arg == "build":
            break
        if arg == "--cache-dir" and index + 1 < len(argv):
            chosen = argv[index + 1]
        elif arg.startswith("--cache-dir="):
            chosen = arg.split("=", 1)[1]
    chosen = chosen or env.get("VPATCH_CACHE_DIR")
    if not chosen:
        xdg = env.get("XDG_CACHE_HOME")
        chosen = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "vpatch")
    return os.path.abspath(chosen)


def _stamps(paths: Sequence[str]) -> list[list]:
    """Each path's stat stamp, a directory's regular files after it (sorted)."""
    stamps: list[list] = []
    for path in paths:
        st = os.stat(path)
        stamps.append([path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
        if os.path.isdir(path):
            stamps += _stamps(sorted(entry.path for entry in os.scandir(path) if entry.is_file(follow_symlinks=False)))
    return stamps


def _decode(data: bytes, key: list) -> tuple[str, str, list[Job], list[str], list[list]]:
    """A plan file's target, stock wheel, jobs, inputs and their stamps; ValueError for anything else."""
    plan = json.loads(data)
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT or plan.get("key") != key:
        raise ValueError("not a current plan")
    target, stock, inputs, stamps = plan.get("target"), plan.get("stock"), plan.get("inputs"), plan.get("stamps")
    raw = plan.get("jobs")
    if not (isinstance(target, str) and isinstance(stock, str) and isinstance(stamps, list)):
        raise ValueError("a plan without its target, stock wheel or stamps")
    if not (isinstance(inputs, list) and all(isinstance(p, str) for p in inputs) and isinstance(raw, list)):
        raise ValueError("a plan without its inputs or jobs")
    jobs: list[Job] = []
    for job in raw:
        if isinstance(job, list) and len(job) == 4 and job[0] == "copy" and all(map(_count, job[1:])):
            jobs.append(("copy", job[1], job[2], job[3]))
        elif (
            isinstance(job, list) and len(job) == 3 and job[0] == "write" and isinstance(job[1], str) and _count(job[2])
        ):
            jobs.append(("write", bytes.fromhex(job[1]), job[2]))
        else:
            raise ValueError(f"a bad job: {job!r}")
    return target, stock, jobs, inputs, stamps


def _count(value: object) -> bool:
    return type(value) is int and value >= 0
