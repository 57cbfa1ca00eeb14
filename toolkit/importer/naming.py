"""Subjects and file names of imported patches made from what each patch touches.

A source without a subject of its own (a plain diff, a wheel or sdist pair) gives patches named by
feature and path: `0003-kv-routing-core-block-pool.patch`, subject `[kv-routing] vllm/core/block_pool.py`,
or the files' common directory when there are several (`[kv-routing] vllm/core/ (3 files)`), so that
apply and rebase tables tell the patches apart by more than their number.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import PurePosixPath

from toolkit.importer.paths import FileChange
from toolkit.render import slugify


def touched(files: list[FileChange]) -> str:
    """What a group of files is, for a subject: the one path, else their common directory and count."""
    return touched_label([change.path for change in files])


def touched_label(paths: list[str]) -> str:
    """`touched` of paths (a rebase remakes a subject from the paths a patch touches now)."""
    paths = list(dict.fromkeys(paths))
    if len(paths) == 1:
        return paths[0]
    common = posixpath.commonpath([posixpath.dirname(p) for p in paths])
    return f"{common}/ ({len(paths)} files)" if common else f"{len(paths)} files"


def touched_stem(feature: str, files: list[FileChange]) -> str:
    """The file-name part: the feature, then the file's directory and stem, or the common directory's name."""
    return touched_stem_of(feature, [change.path for change in files])


def touched_stem_of(feature: str, paths: list[str]) -> str:
    """`touched_stem` of paths."""
    paths = list(dict.fromkeys(paths))
    if len(paths) == 1:
        path = PurePosixPath(paths[0])
        stem = path.name.split(".", 1)[0] or path.name
        what = f"{path.parent.name}-{stem}" if path.parent.name else stem
    else:
        common = posixpath.commonpath([posixpath.dirname(p) for p in paths])
        what = PurePosixPath(common).name if common else "files"
    return slugify(re.sub(r"[^A-Za-z0-9]+", "-", f"{feature}-{what}"))


def unique_stem(stem: str, taken: set[str]) -> str:
    """`stem`, or `stem-2`, `stem-3`... when a patch of the series (or of this import) has it already."""
    unique, copy = stem, 2
    while unique in taken:
        unique, copy = f"{stem}-{copy}", copy + 1
    taken.add(unique)
    return unique


def name_stem(name: str) -> str:
    """`0003-kv-routing-core-block-pool.patch` -> `kv-routing-core-block-pool`."""
    stem = name.removesuffix(".patch")
    return stem[5:] if stem[:4].isdigit() and stem[4:5] == "-" else stem
