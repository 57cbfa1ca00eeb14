"""What `vpatch ci` keeps between runs, keyed by the inputs a step's outcome depends on.

- the wheel, one per fingerprint: the pin's artifacts, the series' patches (names and bytes), the vpatch
  version and SOURCE_DATE_EPOCH (the overlay build is byte-reproducible from these). Kept under
  `CACHE/ci/wheels/KEY/` with its sha256 and stat stamp; reused by a hard link into OUT/wheels while the
  kept file's stamp is unchanged (nothing wrote to it since it was hashed);
- a passing `check` (the series directory's files, the pin, the declared features, the vpatch version, and
  for its upstream lint the sources of toolkit/upstream_lint), with what the lint ran and found;
- a passing `verify` (the wheel's sha256, whether installs were checked, the vpatch version);
- a conformance result that did not fail (the dynamo-base and stock wheels' sha256, the tier, the series,
  every pinned artifact and flavor build, the fingerprint of the driver and test sources, Python and the machine).

Only outcomes that passed are kept: a failure runs again next time. Entries are JSON files written
atomically under the cache lock of their key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from toolkit import __version__, tempnames
from toolkit.cache import atomic_write_text, locked, stat_stamp
from toolkit.model import Pin, Series

FORMAT = 1
SHORT = 12
# What the conformance tiers run: their drivers, scenario runners and test harness (toolkit/serving, the
# checks in toolkit/conformance). A change in any of them is a new key, also within one vpatch version.
SOURCE_DIRS = ("conformance", "serving", "contracts")
# What the check step's upstream lint runs: which hooks, how, and which lines are a patch's.
LINT_SOURCE_DIRS = ("upstream_lint",)


@dataclass
class Done:
    """A step's outcome: its detail line, the key it is kept under, and whether it was reused."""

    detail: str
    key: str = ""
    reused: bool = False


def make_key(kind: str, facts: Sequence[object]) -> str:
    return hashlib.sha256(json.dumps([FORMAT, kind, __version__, *facts], sort_keys=True).encode()).hexdigest()


def short(key: str) -> str:
    return key[:SHORT]


def pin_facts(pin: Pin) -> list[object]:
    artifacts = [*([pin.sdist] if pin.sdist else []), *pin.wheels]
    return [pin.project, str(pin.version), pin.base_commit, [[a.file, a.sha256] for a in artifacts]]


def wheel_key(pin: Pin, series: Series) -> str:
    return make_key("wheel", [*pin_facts(pin), series.fingerprint(), os.environ.get("SOURCE_DATE_EPOCH")])


def _skipped(relative: Path) -> bool:
    return relative.name.startswith(".") or relative.suffix == ".pyc" or "__pycache__" in relative.parts


def files_digest(directory: Path) -> str:
    """Every regular file under `directory`, by relative name and bytes; bytecode left out, since Python
    writes it where it may (its source is what counts, and a clone that compiled must key like one that did not)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not _skipped(p.relative_to(directory))):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def sources_fingerprint(dirs: tuple[str, ...] = SOURCE_DIRS) -> str:
    """The sources under `dirs` of toolkit/ (by default what the conformance tiers run; LINT_SOURCE_DIRS
    for the check step's upstream lint)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in dirs:
        if (root / name).is_dir():
            digest.update(name.encode() + b"\0" + files_digest(root / name).encode())
    return digest.hexdigest()


def flavor_facts(pin: Pin) -> list[object]:
    """The other builds pinned beside the stock wheel (the engine tier runs the CPU one)."""
    return [[f.name, f.project, str(f.version), [[a.file, a.sha256] for a in f.wheels]] for f in pin.flavors]


def conform_key(pin: Pin, series: Series, tier: str, wheel_sha256: str | None) -> str:
    return make_key(
        "conform",
        [
            *pin_facts(pin),
            flavor_facts(pin),
            tier,
            wheel_sha256,
            pin.wheels[0].sha256 if pin.wheels else None,
            series.fingerprint(),
            sources_fingerprint(),
            platform.python_version(),
            platform.machine(),
        ],
    )


class Store:
    """Entries of one kind under CACHE/ci/KIND/, read only when `reuse` is on (always written)."""

    def __init__(self, cache_dir: Path, kind: str, *, reuse: bool = True) -> None:
        self.root = cache_dir / "ci" / kind
        self.reuse = reuse

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if not self.reuse:
            return None
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and entry.get("format") == FORMAT else None

    def put(self, key: str, entry: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(key), json.dumps({"format": FORMAT, **entry}, sort_keys=True) + "\n")


class WheelStore:
    """One overlay wheel per fingerprint: CACHE/ci/wheels/KEY/FILE and its entry.json (sha256, stat stamp)."""

    def __init__(self, cache_dir: Path, *, reuse: bool = True) -> None:
        self.root = cache_dir / "ci" / "wheels"
        self.reuse = reuse

    def reuse_into(self, key: str, out_dir: Path) -> tuple[Path, dict] | None:
        """The kept wheel linked into `out_dir` and its entry, when one is kept and unchanged; else None."""
        if not self.reuse:
            return None
        directory = self.root / short(key)
        with locked(directory):
            try:
                entry = json.loads((directory / "entry.json").read_text(encoding="utf-8"))
                kept = directory / entry["file"]
                if entry.get("key") != key or entry.get("stat") != stat_stamp(kept):
                    return None
            except (OSError, ValueError, KeyError, TypeError):
                return None
            target = out_dir / kept.name
            if not (target.exists() and os.path.samefile(target, kept)):
                link_file(kept, target)
            self._stamp(directory, entry)
        return target, entry

    def keep(self, key: str, built: Path, sha256: str) -> None:
        """Keep `built` (hashed to `sha256` just now) under its key, as a hard link where it can be."""
        directory = self.root / short(key)
        with locked(directory):
            directory.mkdir(parents=True, exist_ok=True)
            kept = directory / built.name
            for old in directory.glob("*.whl"):
                if old.name != built.name:
                    old.unlink()
            if not (kept.exists() and os.path.samefile(kept, built)):
                link_file(built, kept)
            self._stamp(directory, {"key": key, "file": built.name, "sha256": sha256, "size": built.stat().st_size})

    def restamp(self, key: str) -> None:
        """Take the stamp again after another hard link to the kept file (a link changes its ctime)."""
        directory = self.root / short(key)
        with locked(directory), contextlib.suppress(OSError, ValueError):
            self._stamp(directory, json.loads((directory / "entry.json").read_text(encoding="utf-8")))

    @staticmethod
    def _stamp(directory: Path, entry: dict) -> None:
        entry = {**entry, "stat": stat_stamp(directory / entry["file"])}
        atomic_write_text(directory / "entry.json", json.dumps(entry, sort_keys=True) + "\n")


def link_file(source: Path, target: Path) -> None:
    """`target` becomes a hard link of `source` (a copy across file systems), replaced atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=tempnames.prefix(target.name), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
