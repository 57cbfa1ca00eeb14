"""Check results kept per wheel: a check whose outcome depends only on the wheel's bytes (and on what its
key names: toolkit and tool versions, the runtime layer) passes once per sha256 and is reused after.

Only passes are kept; a failure runs again next time. Entries live under the cache root, one JSON file
per key, written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from toolkit.cache import atomic_write_text

FORMAT = 1
REUSED = " (reused: passed before for this wheel's sha256)"

Results = list[tuple[str, bool, str]]


def kept_path(cache_dir: Path, kind: str, facts: Sequence[object]) -> Path:
    key = hashlib.sha256(json.dumps([FORMAT, kind, *facts]).encode()).hexdigest()
    return cache_dir / f"{kind}-checks" / f"{key}.json"


def read_kept(path: Path) -> Results | None:
    """The kept results if the entry is whole and every one of them passed; else None."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            return None
        results = [(str(name), bool(ok), str(detail)) for name, ok, detail in payload["results"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return results if results and all(ok for _, ok, _ in results) else None


def keep(path: Path, results: Results, **facts: str) -> None:
    if results and all(ok for _, ok, _ in results):
        atomic_write_text(path, json.dumps({"format": FORMAT, **facts, "results": [list(r) for r in results]}) + "\n")


def as_reused(results: Results) -> Results:
    return [(name, ok, (detail + REUSED).strip()) for name, ok, detail in results]
