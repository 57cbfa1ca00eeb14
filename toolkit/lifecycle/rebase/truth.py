"""Keeping an imported patch's name, subject and `Origin:` true when a rebase changes it.

vpatch names a patch imported from a plain diff or an archive pair by what it touches (toolkit/importer/
naming.py): `0002-kv-routing-core-block-pool.patch`, `[kv-routing] vllm/core/block_pool.py`. "True" after a
rebase means:

- a name and a subject vpatch made from the files a patch touches are made again when the rebased patch
  touches other files (a resolution moved the change): the number stays, the rest describes the new files;
  names and subjects of the maintainer's own (a mail's or a commit's subject) are never touched;
- `Origin:` keeps saying where the patch came from, and once the rebase changed the change itself (another
  `git patch-id`) it says against which release the source was taken and onto which release it was
  changed: `import, file fork.diff (against vllm 1.0), changed by the rebase onto vllm 1.1`. A patch
  carried unchanged is still exactly its source's change, and its `Origin:` stays as it is.
"""

from __future__ import annotations

import re

from toolkit.importer.naming import name_stem, touched_label, touched_stem_of, unique_stem
from toolkit.model import Patch
from toolkit.trailer import set_trailer

_COPY = re.compile(r" \((\d+)\)$")
_ORIGIN = re.compile(r"^(?P<src>.*?)(?: \(against (?P<against>[^)]+)\))?(?:, changed by the rebase onto .+)?$")


def generated_subject(patch: Patch) -> bool:
    """The subject is `[feature] <what it touches>` (maybe with a ` (2)` copy number): made by vpatch."""
    base = _COPY.sub("", patch.subject)
    return bool(patch.feature) and base == f"[{patch.feature}] {touched_label(list(patch.touched_paths))}"


def generated_name(patch: Patch) -> bool:
    stem = re.sub(r"-\d+$", "", name_stem(patch.name))
    own = touched_stem_of(patch.feature, list(patch.touched_paths))
    return bool(patch.feature) and (name_stem(patch.name) == own or stem == own)


def true_origin(origin: str, project: str, old_version: str, new_version: str) -> str:
    """`Origin:` of an imported patch whose change a rebase onto NEW changed (see the module doc)."""
    match = _ORIGIN.match(origin)
    assert match is not None  # the pattern matches any text
    against = match["against"] or f"{project} {old_version}"
    return f"{match['src']} (against {against}), changed by the rebase onto {project} {new_version}"


def set_subject(data: bytes, subject: str) -> bytes:
    """The mail with its `Subject:` header (folded lines and all) replaced; git am re-renders it."""
    head, sep, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(b"Subject: "))
    end = at + 1
    while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
        end += 1
    lines[at:end] = [b"Subject: [PATCH] " + subject.encode("utf-8")]
    return b"\n".join(lines) + sep + body


def keep_true(
    old: Patch,
    new: Patch,
    *,
    changed: bool,
    names: list[str],
    subjects: set[str],
    project: str,
    old_version: str,
    new_version: str,
) -> tuple[str, bytes, list[str]]:
    """(name, mail, what was made true) of one rebased patch; `names`: the series' other names."""
    name, data, said = old.name, new.data, []
    if set(new.touched_paths) != set(old.touched_paths) and new.touched_paths:
        paths = list(new.touched_paths)
        retitled = False
        if generated_subject(old):
            subject, copy = f"[{old.feature}] {touched_label(paths)}", 2
            base = subject
            while subject in subjects:
                subject, copy = f"{base} ({copy})", copy + 1
            if subject != old.subject:
                data = set_subject(data, subject)
                retitled = True
        if generated_name(old):
            taken = {name_stem(n) for n in names if n != old.name}
            stem = unique_stem(touched_stem_of(old.feature, paths), taken)
            renamed = f"{old.name[:5]}{stem}.patch" if old.name[:4].isdigit() else f"{stem}.patch"
            if renamed != old.name:
                name = renamed
                data = set_trailer(data, "Patch-File", name)
        what = f"it now touches {touched_label(paths)}, not {touched_label(list(old.touched_paths))}"
        if name != old.name:
            said.append(f"renamed from {old.name}{' and retitled' if retitled else ''}: {what}")
        elif retitled:
            said.append(f"retitled: {what}")
    origin = old.header("Origin")
    if changed and origin and origin.startswith("import, "):
        data = set_trailer(data, "Origin", true_origin(origin, project, old_version, new_version))
    return name, data, said
