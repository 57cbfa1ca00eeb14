"""One options object, merged from pyproject.toml, the environment and the command line.

Precedence, lowest to highest: built-in defaults, `[tool.vpatch]` in the project's
pyproject.toml, `VPATCH_*` environment variables, command-line flags.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from toolkit.cache import default_cache_root
from toolkit.errors import VpatchError
from toolkit.tomlkeys import key_line, unknown_key_message

DEFAULT_INDEX_URL = "https://pypi.org/simple"


@dataclass(frozen=True)
class Options:
    root: Path
    patches_dir: Path
    checkouts_dir: Path
    cache_dir: Path
    index_url: str
    json: bool = False

    @property
    def pins_file(self) -> Path:
        return self.patches_dir / "pins.toml"


def find_root(start: Path) -> Path:
    """The nearest directory upwards holding pyproject.toml with [tool.vpatch], or patches/pins.toml."""
    for candidate in (start, *start.parents):
        if (candidate / "patches" / "pins.toml").exists():
            return candidate
        pyproject = candidate / "pyproject.toml"
        if pyproject.exists() and "[tool.vpatch]" in pyproject.read_text(encoding="utf-8", errors="replace"):
            return candidate
    return start


# `[tool.vpatch]` keys (also spelt with underscores): the options a project may set for every command.
PYPROJECT_KEYS = ("patches-dir", "checkouts-dir", "cache-dir", "index-url")


def _from_pyproject(root: Path) -> dict[str, str]:
    pyproject = root / "pyproject.toml"
    if not pyproject.exists():
        return {}
    text = pyproject.read_text(encoding="utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise VpatchError(f"invalid TOML: {exc}", path=pyproject, line=int(match[1]) if match else None) from None
    table = data.get("tool", {}).get("vpatch", {})
    if not isinstance(table, dict):
        raise VpatchError("[tool.vpatch] must be a table", path=pyproject, line=key_line(text, "tool"))
    start = next((n for n, line in enumerate(text.split("\n"), 1) if line.strip() == "[tool.vpatch]"), 1)
    for key, value in table.items():
        if key.replace("_", "-") not in PYPROJECT_KEYS:
            message = unknown_key_message(key, PYPROJECT_KEYS)
            raise VpatchError(f"[tool.vpatch]: {message}", path=pyproject, line=key_line(text, key, start))
        if not isinstance(value, str):
            raise VpatchError(
                f"[tool.vpatch]: {key} must be a string, not {value!r}", path=pyproject, line=key_line(text, key, start)
            )
    return {key.replace("-", "_"): value for key, value in table.items()}


def load_options(cli: dict[str, object] | None = None, *, cwd: Path | None = None) -> Options:
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    root = Path(str(cli.pop("root"))) if "root" in cli else None
    if root is None and os.environ.get("VPATCH_ROOT"):
        root = Path(os.environ["VPATCH_ROOT"])
    root = (root or find_root((cwd or Path.cwd()).resolve())).resolve()

    merged: dict[str, object] = {
        "patches_dir": "patches",
        "checkouts_dir": "checkouts",
        "cache_dir": str(default_cache_root()),
        "index_url": DEFAULT_INDEX_URL,
    }
    merged.update(_from_pyproject(root))
    for field in fields(Options):
        env = os.environ.get(f"VPATCH_{field.name.upper()}")
        if env:
            merged[field.name] = env
    merged.update(cli)

    def path(key: str) -> Path:
        value = Path(str(merged[key])).expanduser()
        return value if value.is_absolute() else root / value

    return Options(
        root=root,
        patches_dir=path("patches_dir"),
        checkouts_dir=path("checkouts_dir"),
        cache_dir=path("cache_dir"),
        index_url=str(merged["index_url"]).rstrip("/"),
        json=bool(merged.get("json", False)),
    )


def with_json(options: Options, value: bool) -> Options:
    return replace(options, json=value)
