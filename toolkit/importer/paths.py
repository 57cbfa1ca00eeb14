"""Path resolution: raw file sections become FileChanges named by tree paths.

The `-p` strip level is detected; absolute paths, `..`, `.git`, binary, symlink and submodule changes are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.errors import VpatchError
from toolkit.git import quote_path
from toolkit.importer.diff_lexer import Hunk, RawFile
from toolkit.model import PathPair, check_tree_path


@dataclass
class FileChange(PathPair):
    """One file's change with paths resolved in the tree, rendered as a canonical git diff section."""

    old_path: str | None  # None: the file is added
    new_path: str | None  # None: the file is deleted
    old_mode: str | None
    new_mode: str | None
    kind: str  # modify, add, delete, rename, copy
    similarity: str | None
    hunks: list[Hunk]
    line: int
    recounted: list[int] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(1 for h in self.hunks for ln in h.body if ln[:1] == b"+")

    @property
    def removed(self) -> int:
        return sum(1 for h in self.hunks for ln in h.body if ln[:1] == b"-")

    def render(self) -> bytes:
        old = self.old_path or self.new_path or ""
        new = self.new_path or self.old_path or ""
        out = [b"diff --git " + quote_path("a/" + old) + b" " + quote_path("b/" + new)]
        if self.kind == "add":
            out.append(b"new file mode " + (self.new_mode or "100644").encode())
        elif self.kind == "delete":
            out.append(b"deleted file mode " + (self.old_mode or "100644").encode())
        elif self.old_mode and self.new_mode and self.old_mode != self.new_mode:
            out += [b"old mode " + self.old_mode.encode(), b"new mode " + self.new_mode.encode()]
        if self.kind in ("rename", "copy"):
            if self.similarity:
                out.append(b"similarity index " + self.similarity.encode())
            out += [
                f"{self.kind} from ".encode() + quote_path(old),
                f"{self.kind} to ".encode() + quote_path(new),
            ]
        if self.hunks:
            out.append(b"--- " + (_label("a/", self.old_path) if self.kind != "add" else b"/dev/null"))
            out.append(b"+++ " + (_label("b/", self.new_path) if self.kind != "delete" else b"/dev/null"))
            for hunk in self.hunks:
                out.append(hunk.header)
                out.extend(hunk.body)
        return b"\n".join(out) + b"\n"


def _label(prefix: str, path: str | None) -> bytes:
    quoted = quote_path(prefix + (path or ""))
    return quoted + (b"\t" if b" " in quoted and not quoted.startswith(b'"') else b"")


def _strip(name: str, level: int) -> str | None:
    # Components are counted as git apply -p counts them: `b//etc/x` -p1 is `/etc/x` (absolute), not `etc/x`.
    parts = name.split("/")
    return "/".join(parts[level:]) if len(parts) > level else None


def unsafe_path(path: str) -> str | None:
    problem = check_tree_path(path)
    if problem:
        return problem
    if "" in path.split("/"):
        return f"path {path!r} has an empty component ('//')"
    if any(part.lower() == ".git" for part in path.split("/")):
        return f"path {path!r} is inside .git"
    return None


def resolve_files(raws: list[RawFile], tree: set[str], where: str, *, level: int | None = None) -> list[FileChange]:
    """Turn raw sections into FileChanges with tree paths; every refusal is a VpatchError at `where:line`."""

    def fail(message: str, line: int) -> VpatchError:
        return VpatchError(message, path=where, line=line)

    for raw in raws:
        for name in (raw.old_name, raw.new_name, raw.rename_from, raw.rename_to):
            if name is None:
                continue
            if name.startswith("/"):
                raise fail(f"patch touches a path outside the tree: absolute path {name!r}", raw.line)
            if ".." in name.split("/"):
                raise fail(
                    f"patch touches a path outside the tree: path {name!r} leaves the tree through '..'", raw.line
                )
        if raw.binary:
            shown = _strip(raw.new_name or raw.old_name or "?", 1) or raw.new_name or raw.old_name
            raise fail(f"binary change to {shown}: a binary difference cannot be carried as a patch", raw.line)
        for mode in (raw.old_mode, raw.new_mode):
            if mode in ("120000", "160000"):
                what = "symlink" if mode == "120000" else "submodule"
                raise fail(f"{what} change to {raw.new_name or raw.old_name}: not imported", raw.line)
            if mode is not None and mode not in ("100644", "100755"):
                raise fail(f"unsupported file mode {mode}", raw.line)
    if level is None:
        level = _detect_level(raws, tree)
    changes: list[FileChange] = []
    for raw in raws:
        old = _strip(raw.old_name, level) if raw.old_name else None
        new = _strip(raw.new_name, level) if raw.new_name else None
        if (raw.old_name and old is None) or (raw.new_name and new is None):
            raise fail(f"cannot strip {level} leading director(y/ies) from {raw.old_name or raw.new_name!r}", raw.line)
        single_empty_old = len(raw.hunks) == 1 and raw.hunks[0].old_start == 0 and raw.hunks[0].old_count == 0
        if raw.rename_from or raw.rename_to:
            if not (raw.rename_from and raw.rename_to):
                raise fail("rename or copy without both its from and to lines", raw.line)
            kind, old, new = ("copy" if raw.copy else "rename"), raw.rename_from, raw.rename_to
        elif (
            raw.created
            or raw.old_dev_null
            or raw.old_absent
            or (not raw.git and single_empty_old and (old or new) not in tree)
        ):
            kind, old, new = "add", None, new or old
        elif raw.deleted or raw.new_dev_null or raw.new_absent:
            kind, old, new = "delete", old or new, None
        else:
            if old is None or new is None:
                raise fail("file section names no file", raw.line)
            if old != new and not raw.git:
                old = new = old if old in tree and new not in tree else new  # `--- x.orig` / `+++ x`
            if old != new:
                raise fail(f"file section names two files ({old!r}, {new!r}) but is not a rename", raw.line)
            kind = "modify"
        for path in (old, new):
            if path is not None:
                problem = unsafe_path(path)
                if problem:
                    raise fail(f"patch touches a path outside the tree: {problem}", raw.line)
        for hunk in raw.hunks:
            try:
                b"\n".join(hunk.body).decode("utf-8")
            except UnicodeDecodeError:
                raise fail(
                    f"{new or old}: hunk #{raw.hunks.index(hunk) + 1} is not UTF-8 text; patch files must be UTF-8",
                    hunk.line,
                ) from None
        if kind == "modify" and not raw.hunks and not (raw.old_mode and raw.new_mode):
            continue  # a header without content (an identical file): nothing to carry
        changes.append(
            FileChange(old, new, raw.old_mode, raw.new_mode, kind, raw.similarity, raw.hunks, raw.line, raw.recounted)
        )
    return changes


def _detect_level(raws: list[RawFile], tree: set[str]) -> int:
    """-p1 (the convention) unless -p0 names strictly more of the files that must already exist."""
    existing = [
        name
        for raw in raws
        if not (raw.created or raw.old_dev_null or raw.old_absent or raw.rename_from)
        for name in (raw.old_name, raw.new_name)
        if name
    ]
    if not existing:
        names = [n for raw in raws for n in (raw.old_name, raw.new_name) if n]
        return 1 if all(_strip(n, 1) for n in names) else 0
    score = {level: sum(1 for n in existing if _strip(n, level) in tree) for level in (1, 0)}
    return 0 if score[0] > score[1] else 1
