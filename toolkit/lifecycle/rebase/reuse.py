"""Recorded resolutions (git rerere): where a project keeps them, and an index that says whose they are.

A project in git keeps its resolutions in its own repository (`<git common dir>/vpatch/rr-cache`): shared by
that repository's worktrees, never by another clone or another fork on the machine, even one made from the
same template. A project outside git keeps them in the cache, keyed by its path.

git records a resolution under an id (the hash of the conflict's text) but not where it came from, and after
a resolution is replayed `MERGE_RR` is empty. So vpatch keeps its own index beside the rr-cache
(`rr-cache.resolutions.json`): id → the file, the patch, the rebase and the time it was recorded. The ids a
stop leaves in `MERGE_RR` are indexed once the resolution is recorded (`git am --continue`, a commit, an
abort); a replay is recognised by the postimage git touches when it uses one (its mtime before and after
the `git am`), and announced with what the index says.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from toolkit.cache import atomic_write_text, locked
from toolkit.git import Git

INDEX_SUFFIX = ".resolutions.json"


def rerere_store(cache_dir: Path, project: str, root: Path) -> Path:
    """The rr-cache of the project at `root` (see the module's doc)."""
    repo = Git.discover(root)
    if repo is not None:
        return repo.common_dir() / "vpatch" / "rr-cache"
    key = hashlib.sha256(f"path:{root.resolve()}".encode()).hexdigest()[:16]
    return cache_dir / "rerere" / f"{project}-{key}"


def index_path(store: Path) -> Path:
    store = store.resolve()
    return store.with_name(store.name + INDEX_SUFFIX)


def read_index(store: Path) -> dict[str, dict]:
    try:
        data = json.loads(index_path(store).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _postimage(store: Path, rr_id: str) -> Path:
    """An id of `MERGE_RR` is `HASH` or `HASH.VARIANT`; its postimage is `HASH/postimage[.VARIANT]`."""
    digest, _, variant = rr_id.partition(".")
    return store / digest / (f"postimage.{variant}" if variant else "postimage")


def merge_rr(repo: Git) -> dict[str, str]:
    """{rerere id: path} of the conflicts git rerere is tracking now (`.git/MERGE_RR`)."""
    try:
        raw = (repo.git_dir() / "MERGE_RR").read_bytes()
    except OSError:
        return {}
    found = {}
    for entry in raw.split(b"\0"):
        rr_id, tab, path = entry.partition(b"\t")
        if tab:
            found[rr_id.decode("ascii", "replace")] = path.decode("utf-8", "replace")
    return found


def postimage_times(store: Path) -> dict[str, int]:
    """{rerere id: mtime_ns of its postimage} for every recorded resolution."""
    times = {}
    if store.is_dir():
        for path in store.glob("*/postimage*"):
            variant = path.name.removeprefix("postimage").lstrip(".")
            times[path.parent.name + (f".{variant}" if variant else "")] = path.stat().st_mtime_ns
    return times


def record(store: Path, ids: dict[str, str], *, patch: str, rebase: str) -> list[str]:
    """Index the resolutions of `ids` ({id: path}) that git has recorded; the ids indexed."""
    recorded = {rr_id: path for rr_id, path in ids.items() if _postimage(store, rr_id).is_file()}
    if not recorded:
        return []
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    target = index_path(store)
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target):
        index = read_index(store)
        for rr_id, path in recorded.items():
            index[rr_id] = {"file": path, "patch": patch, "rebase": rebase, "recorded": when}
        atomic_write_text(target, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return sorted(recorded)


def used(store: Path, before: dict[str, int]) -> list[str]:
    """The ids whose postimage git touched since `before` (it does when it replays one)."""
    after = postimage_times(store)
    return sorted(rr_id for rr_id, mtime in after.items() if before.get(rr_id) != mtime)


def describe(store: Path, ids: list[str], files: list[str]) -> str:
    """The announcement of a reuse: each file and where its resolution came from."""
    index = read_index(store)
    known = {index[i]["file"]: index[i] for i in ids if isinstance(index.get(i), dict) and "file" in index[i]}
    parts = []
    for path in files:
        entry = known.get(path)
        if entry is None:
            parts.append(
                f"conflict in {path} resolved by a recorded resolution (rerere), recorded before vpatch indexed them"
            )
        else:
            parts.append(
                f"conflict in {path} resolved by a recorded resolution (rerere), recorded for {entry['patch']} "
                f"in the rebase {entry['rebase']} at {entry['recorded']}"
            )
    return "; ".join(parts)


def recorded_times(store: Path, ids: list[str]) -> dict[str, str]:
    """{file: the day its resolution was recorded} for the indexed ids among `ids`."""
    index = read_index(store)
    entries = [index[i] for i in ids if isinstance(index.get(i), dict)]
    return {e["file"]: str(e["recorded"])[:10] for e in entries if "file" in e and "recorded" in e}
