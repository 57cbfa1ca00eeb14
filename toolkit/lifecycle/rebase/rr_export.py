"""`vpatch resolutions export NEW`: the resolutions git rerere recorded for rebases onto NEW, written into the tree.

A rebase made before resolutions were kept in the tree (or one that was aborted, or discarded) left them in
the project's rr-cache only (toolkit/lifecycle/rebase/reuse.py): `.git`, which a clone does not carry. This
copies each indexed one (rerere's preimage, markers without labels and its sides in sorted order, and its
postimage) into `patches/<project>-NEW/resolutions/` as one transaction; a record the tree already has for
the same patch and file is kept as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.lifecycle.rebase import resolutions, reuse
from toolkit.model import Pin
from toolkit.project import Project
from toolkit.records.resolutions import (
    INDEX_FILE,
    RESOLUTIONS_DIR,
    RESOLUTIONS_FORMAT,
    Resolution,
    ResolutionIndex,
    encode_index,
)
from toolkit.txn import transaction

EXPORTED = "exported from the rr-cache (rerere)"


@dataclass
class Exported:
    directory: Path
    old_version: str
    written: list[tuple[str, str]] = field(default_factory=list)  # (patch, path)
    kept: list[tuple[str, str]] = field(default_factory=list)  # already in the tree
    unresolved: list[tuple[str, str]] = field(default_factory=list)  # rerere holds no postimage


def _image(store: Path, rr_id: str, kind: str) -> Path:
    digest, _, variant = rr_id.partition(".")
    return store / digest / (f"{kind}.{variant}" if variant else kind)


def export_rr_cache(project: Project, new_pin: Pin, old_version: str | None = None) -> Exported:
    store = reuse.rerere_store(project.options.cache_dir, project.pins.project, project.options.root)
    new = str(new_pin.version)
    steps: dict[str, dict[str, dict]] = {}
    for rr_id, entry in sorted(reuse.read_index(store).items()):
        if isinstance(entry, dict) and isinstance(entry.get("rebase"), str):
            old, arrow, onto = entry["rebase"].partition(" → ")
            if arrow and onto == new:
                steps.setdefault(old, {})[rr_id] = entry
    if old_version is None:
        if len(steps) > 1:
            raise VpatchError(
                f"the rr-cache holds resolutions of rebases onto {new} from {', '.join(sorted(steps))}: "
                "choose one with --from OLD",
                path=reuse.index_path(store),
            )
        old_version = next(iter(steps), None)
    if old_version is None or old_version not in steps:
        onto = f"{old_version} → {new}" if old_version else f"onto {new}"
        raise VpatchError(f"no recorded resolution of a rebase {onto} in the rr-cache", path=reuse.index_path(store))
    series_dir = project.options.patches_dir / new_pin.series_dirname
    if not (series_dir / "series").is_file():
        raise VpatchError(f"{new_pin.label} has no series to keep resolutions beside", path=series_dir)
    directory = series_dir / RESOLUTIONS_DIR
    index = resolutions.read_dir(directory) or ResolutionIndex(
        RESOLUTIONS_FORMAT, project.pins.project, old_version, new
    )
    if index.old_version != old_version:
        raise VpatchError(
            f"holds the resolutions of the step {index.old_version} → {new}, not {old_version} → {new}",
            path=directory / INDEX_FILE,
        )
    result = Exported(directory, old_version)
    files: dict[str, bytes] = {}
    for rr_id, entry in steps[old_version].items():
        where = reuse.index_path(store)
        patch = str(entry.get("patch", ""))
        path = resolutions.tree_path(str(entry.get("file", "")), where=where)
        resolutions.tree_path(patch, where=where)
        if "/" in patch or not patch.endswith(".patch"):
            raise VpatchError(f"{rr_id}: {patch!r} is not a patch's file name", path=where)
        if index.find(patch, path) is not None:
            result.kept.append((patch, path))
            continue
        pre, post = _image(store, rr_id, "preimage"), _image(store, rr_id, "postimage")
        if not (pre.is_file() and post.is_file()):
            result.unresolved.append((patch, path))
            continue
        conflict, resolved = resolutions.record_files(patch, path)
        files[conflict], files[resolved] = pre.read_bytes(), post.read_bytes()
        digest_pre, digest_post = resolutions.sha256(files[conflict]), resolutions.sha256(files[resolved])
        hunks = resolutions.conflict_hunks_of(files[conflict])
        recorded = str(entry.get("recorded", ""))[:10]
        index.put(Resolution(patch, path, conflict, resolved, digest_pre, digest_post, hunks, EXPORTED, recorded))
        result.written.append((patch, path))
    if files:
        files[INDEX_FILE] = encode_index(index).encode("utf-8")
        with transaction(project.options.patches_dir, f"export resolutions into {series_dir.name}") as txn:
            txn.stage_series(directory, files)
            txn.commit()
    return result
