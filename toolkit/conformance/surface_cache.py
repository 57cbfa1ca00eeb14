"""A wheel's public API surface (api_surface.wheel_surface), kept per wheel between `vpatch conform` runs.

Reading the surface parses every public module of the wheel (seconds for a vLLM wheel); what it yields
depends only on the wheel's bytes, the package read from it, the reader's code and the Python whose `ast`
parses the files. So it is kept under `CACHE/conform/api-surface/KEY.json`, KEY holding the wheel's sha256,
the package, the sha256 of api_surface.py, the Python version and the vpatch version (ci_reuse.make_key).
The caller passes the sha256 it already holds (the pin's, verified by fetch_artifact; the patched wheel's,
hashed for the record). A kept file that does not parse, or was written for another key, is read again
from the wheel and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

from toolkit.cache import atomic_write_text, locked
from toolkit.ci_reuse import make_key
from toolkit.conformance import api_surface
from toolkit.conformance.api_surface import Symbol, wheel_surface


def surface_key(wheel_sha256: str, package: str) -> str:
    reader = hashlib.sha256(Path(api_surface.__file__).read_bytes()).hexdigest()
    # the Python that parses: a newer `ast` reads syntax an older one skips as unparsable
    return make_key("api-surface", [wheel_sha256, package, reader, platform.python_version()])


def encode(key: str, surface: dict[str, Symbol]) -> str:
    symbols = [[s.name, s.kind, None if s.params is None else [list(p) for p in s.params]] for s in surface.values()]
    return json.dumps({"key": key, "symbols": symbols}, sort_keys=True) + "\n"


def decode(key: str, text: str) -> dict[str, Symbol] | None:
    """The surface a kept file holds, or None when it is not one for `key` (damaged, another key's)."""
    try:
        data = json.loads(text)
        if data["key"] != key:
            return None
        surface: dict[str, Symbol] = {}
        for name, kind, params in data["symbols"]:
            if not isinstance(name, str) or not isinstance(kind, str):
                return None
            kept = None if params is None else tuple((str(n), str(k), bool(d)) for n, k, d in params)
            surface[name] = Symbol(name, kind, kept)
    except (ValueError, KeyError, TypeError):
        return None
    return surface


def kept_surface(
    cache_dir: Path, wheel: Path, wheel_sha256: str, package: str, *, reuse: bool = True
) -> dict[str, Symbol]:
    """wheel_surface(wheel, package), from the kept file of its key when there is a good one and `reuse` is on
    (`vpatch conform --no-reuse` reads it again from the wheel and rewrites the file)."""
    key = surface_key(wheel_sha256, package)
    path = cache_dir / "conform" / "api-surface" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        kept = None
        if reuse:
            try:
                kept = decode(key, path.read_text(encoding="utf-8"))
            except OSError:
                kept = None
        if kept is not None:
            return kept
        surface = wheel_surface(str(wheel), package)
        atomic_write_text(path, encode(key, surface))
    return surface
