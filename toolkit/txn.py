"""Multi-file changes as one transaction: the old state or the new one, never a mix.

A transaction stages every new file and directory beside its final place (`.vpatch-<pid>-stage.*`),
then, under the project's transaction lock, writes a journal (`patches/.vpatch-journal-<pid>.json`)
listing each (staged, final, old) triple, swaps each final out to its `old` name and the staged copy
in, removes the old copies and finally the journal. The journal is written only once everything is
staged, so recovery is always a roll forward: the next vpatch command on the project (any command,
see `recover`) finishes each swap the journal lists and says so in one line. A kill before the
journal leaves only staged temp names, which the next run removes (their process is gone).

Series directories are staged as a copy of the old one (`stage_series`): files vpatch does not own
there (NOTES.md, anything hand-written) are carried over unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import faults, tempnames
from toolkit.cache import atomic_write_text, locked, project_lock
from toolkit.errors import VpatchError

JOURNAL_PREFIX = ".vpatch-journal-"
LOCK_NAME = ".vpatch-txn.lock"
LOCK_STEM = LOCK_NAME.removesuffix(".lock")  # `locked` adds the suffix
LOCK_TIMEOUT = 600


@dataclass
class _Entry:
    final: Path
    staged: Path
    old: Path

    def as_json(self) -> dict[str, str]:
        return {"final": str(self.final), "staged": str(self.staged), "old": str(self.old)}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _swap(entry: _Entry) -> None:
    """Put the staged copy in place; safe to repeat after a kill at any point inside it."""
    if not entry.staged.exists():
        return  # swapped already
    if entry.final.exists() or entry.final.is_symlink():
        if entry.old.exists():
            raise VpatchError(
                f"cannot finish the swap: both {entry.final.name} and {entry.old.name} exist", path=entry.final
            )
        os.replace(entry.final, entry.old)
    os.replace(entry.staged, entry.final)


@dataclass
class Transaction:
    """Use as a context manager; `commit()` inside it makes the change, leaving it discards what was staged."""

    journal_dir: Path  # patches/: the journal and the lock live here
    what: str  # one line for the recovery message, e.g. "export of vllm-1.0"
    entries: list[_Entry] = field(default_factory=list)
    committed: bool = False
    journaled: bool = False  # from here on, the change is made: by this process or the next one

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed and not self.journaled:
            for entry in self.entries:
                with contextlib.suppress(OSError):
                    _remove(entry.staged)

    def _entry(self, final: Path, staged: Path) -> _Entry:
        if any(e.final == final for e in self.entries):
            raise ValueError(f"{final} staged twice in one transaction")
        entry = _Entry(final, staged, final.with_name(f"{tempnames.prefix('old')}{final.name}"))
        self.entries.append(entry)
        return entry

    def stage_file(self, final: Path, data: bytes) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=tempnames.prefix("stage"), suffix=f".{final.name}", dir=final.parent)
        entry = self._entry(final, Path(name))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        mode = final.stat().st_mode & 0o7777 if final.exists() else 0o644
        os.chmod(entry.staged, mode)

    def stage_dir(self, final: Path) -> Path:
        """An empty directory that will replace `final`; the caller fills it."""
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=tempnames.prefix("stage"), suffix=f".{final.name}", dir=final.parent))
        staged.chmod(0o755)
        return self._entry(final, staged).staged

    def stage_series(
        self, directory: Path, files: Mapping[str, bytes], *, owned: Iterable[str] = (), keep_old: bool = True
    ) -> Path:
        """Stage `directory` as `files` (relative names, may be in subdirectories) over a copy of the old one.

        `owned`: names of the old directory vpatch writes and that are dropped unless `files` has them
        (patch files leaving the series, an old evidence.json). With `keep_old` false, only files vpatch
        does not own are carried over (`owned_by_vpatch`).
        """
        staged = self.stage_dir(directory)
        dropped = set(owned)
        if directory.is_dir():
            for item in directory.iterdir():
                if item.name in dropped or (not keep_old and owned_by_vpatch(item.name)):
                    continue
                if item.is_dir() and not item.is_symlink():
                    shutil.copytree(item, staged / item.name, symlinks=True)
                else:
                    shutil.copy2(item, staged / item.name, follow_symlinks=False)
        for name, data in files.items():
            target = staged / name
            if not target.resolve().is_relative_to(staged.resolve()):
                raise VpatchError(f"refusing to write {name!r} outside the series directory", path=directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            faults.reached("txn.write")
            target.write_bytes(data)
        return staged

    def commit(self) -> None:
        faults.reached("txn.staged")
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.journal_dir / LOCK_STEM, timeout=LOCK_TIMEOUT):
            journal = self.journal_dir / f"{JOURNAL_PREFIX}{os.getpid()}.json"
            data = {"what": self.what, "pid": os.getpid(), "entries": [e.as_json() for e in self.entries]}
            atomic_write_text(journal, json.dumps(data, indent=1) + "\n")
            self.journaled = True
            faults.reached("txn.journal")
            for entry in self.entries:
                _swap(entry)
                faults.reached("txn.swap")
            faults.reached("txn.swapped")
            _finish(self.entries, journal)
        self.committed = True


def writer_lock(journal_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Held by a command that reads a series and writes it back, from its first read to its commit.

    The commit alone is not enough: two imports that read the same series would each stage their own new
    state, and the second would replace the first's patch. An flock on the patches directory itself (the
    project lock pins.toml is changed under, re-entrant), so a command refused early leaves no file behind.
    """
    return project_lock(journal_dir / "series")


def owned_by_vpatch(name: str) -> bool:
    """Files of a series directory that vpatch writes (and may replace); anything else is the user's."""
    from toolkit.records.evidence import EVIDENCE_FILE  # here: its msgspec schemas cost every start-up ~12 ms

    return name in ("series", "retired", "resolutions", EVIDENCE_FILE, "range-diff.txt") or name.endswith(".patch")


def _finish(entries: list[_Entry], journal: Path) -> None:
    for entry in entries:
        if entry.old.exists() or entry.old.is_symlink():
            _remove(entry.old)
    journal.unlink()


def _journals(journal_dir: Path) -> list[Path]:
    try:
        return sorted(p for p in journal_dir.iterdir() if p.name.startswith(JOURNAL_PREFIX) and p.suffix == ".json")
    except (FileNotFoundError, NotADirectoryError):
        return []


def recover(journal_dir: Path, also_sweep: Iterable[Path] = ()) -> list[str]:
    """Finish every transaction a killed process left; remove stale temp names. One line per recovery."""
    messages: list[str] = []
    if _journals(journal_dir):
        with locked(journal_dir / LOCK_STEM, timeout=LOCK_TIMEOUT):
            for journal in _journals(journal_dir):  # under the lock: no live process is mid-commit
                messages.append(_recover_one(journal))
    swept: list[str] = []
    for directory in dict.fromkeys([journal_dir, *also_sweep]):
        swept += tempnames.sweep(directory)
    if swept:
        messages.append(f"removed {len(swept)} stale temp file(s) of killed vpatch runs: {', '.join(sorted(swept))}")
    return messages


def _recover_one(journal: Path) -> str:
    try:
        data = json.loads(journal.read_text(encoding="utf-8"))
        entries = [_Entry(Path(e["final"]), Path(e["staged"]), Path(e["old"])) for e in data["entries"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise VpatchError(f"unreadable transaction journal ({exc}); inspect and remove it", path=journal) from None
    for entry in entries:
        if not entry.staged.exists() and not entry.final.exists():
            raise VpatchError(
                f"transaction journal names {entry.final} but neither it nor its staged copy exists", path=journal
            )
        _swap(entry)
    _finish(entries, journal)
    names = ", ".join(e.final.name for e in entries)
    return f"finished the interrupted {data.get('what', 'change')} (pid {data.get('pid')}): {names}"


@contextlib.contextmanager
def transaction(journal_dir: Path, what: str) -> Iterator[Transaction]:
    """A transaction; an OSError while it is made (a full disk, a read-only directory) becomes one line."""
    with Transaction(journal_dir, what) as txn:
        try:
            yield txn
        except OSError as exc:
            where = Path(exc.filename) if exc.filename else journal_dir
            reason = exc.strerror or str(exc)
            if txn.journaled:
                raise VpatchError(
                    f"the {what} stopped half-way ({reason}); the next vpatch command finishes it", path=where
                ) from None
            raise VpatchError(f"cannot write the {what} ({reason}); nothing was changed", path=where) from None
