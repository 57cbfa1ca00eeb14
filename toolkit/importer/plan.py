"""Planning: units into named patches (split, subjects, headers, numbering), and the export plan they join."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from toolkit.errors import VpatchError, display_path
from toolkit.export import ExportPlan
from toolkit.importer.features import UnmatchedChanges, check_declared, feature_of
from toolkit.importer.messages import compose_message, header_value, split_trailer
from toolkit.importer.naming import name_stem, touched, touched_stem, unique_stem
from toolkit.importer.paths import FileChange
from toolkit.importer.records import ImportOptions
from toolkit.importer.units import Unit
from toolkit.model import Series, UpstreamStatus
from toolkit.render import slugify

SPLIT_MODES = ("none", "per-file", "per-dir")


@dataclass
class PlannedPatch:
    """One new patch: the files of a unit (or of one --split group) with its message, name and author."""

    unit: Unit
    label: str | None
    files: list[FileChange]
    subject: str
    message: str
    name: str
    feature: str
    status: str
    author: tuple[str, str]
    date: str


def split_files(files: list[FileChange], mode: str) -> list[tuple[str | None, list[FileChange]]]:
    """(label, files) groups in order of first appearance; label is None for the whole unit."""
    if mode == "none":
        return [(None, files)]
    groups: dict[str, list[FileChange]] = {}
    for change in files:
        if mode == "per-file":
            key = change.path
        else:
            parent = PurePosixPath(change.path).parent.as_posix()
            key = "top-level files" if parent == "." else parent + "/"
        groups.setdefault(key, []).append(change)
    if len(groups) == 1:
        return [(None, files)]
    return list(groups.items())


def check_feature(feature: str | None, features: dict[str, str], where: str) -> None:
    if feature is not None:
        check_declared(feature, features, where)


def assign_features(
    units: list[Unit], options: ImportOptions, features: dict[str, str]
) -> dict[int, list[tuple[str, list[FileChange]]]]:
    """Per unit (by id), its files grouped by feature in order of first appearance.

    A file's feature is the first matching rule's, else the default `--feature`, else its mail's or
    commit's Feature: header. Files left without one are all named, one line each, and refused.
    """
    grouped: dict[int, list[tuple[str, list[FileChange]]]] = {}
    unmatched: list[str] = []
    for unit in units:
        _, headers = split_trailer(unit.body)
        fallback = options.feature or header_value(headers, "Feature")
        if fallback is None and not options.feature_rules:
            declared = ", ".join(sorted(features)) or "none"
            raise VpatchError(
                f"{unit.label} has no Feature: header; give --feature NAME (declared: {declared})", path=unit.where
            )
        if fallback is not None:
            check_feature(fallback, features, unit.label)
        groups: dict[str, list[FileChange]] = {}
        for change in unit.files:
            feature = feature_of(change.path, list(options.feature_rules)) or fallback
            if feature is None:
                unmatched.append(
                    f"{display_path(Path(unit.where))}:{change.line}: {change.path}: matches no feature rule"
                )
                continue
            groups.setdefault(feature, []).append(change)
        grouped[id(unit)] = list(groups.items())
    if unmatched:
        raise UnmatchedChanges(
            unmatched,
            f"{len(unmatched)} changed file(s) match no feature rule (listed above); "
            "add rules or give a default --feature NAME",
        )
    return grouped


def check_status(text: str, where: str) -> None:
    try:
        UpstreamStatus.parse(text)
    except ValueError as exc:
        raise VpatchError(f"{where}: {exc}") from None


def require_authorship(units: list[Unit], author: tuple[str, str] | None, date: str | None) -> None:
    """A mail or commit brings its author and date; a plain diff or an archive pair has neither, and a
    patch must not be credited to nobody on 1 January 1980: the user names them."""
    lacking = [
        (unit, what)
        for unit in units
        if (what := [w for w, have in (("author", unit.author or author), ("date", unit.date or date)) if not have])
    ]
    if lacking:
        unit, what = lacking[0]
        flags = " and ".join(
            {"author": "--author 'Name <email>'", "date": "--date YYYY-MM-DD (or now)"}[w] for w in what
        )
        more = f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""
        raise VpatchError(f"{unit.label} carries no {' or '.join(what)}{more}; give {flags}", path=unit.where)


def plan_patches(
    units: list[Unit],
    series: Series,
    directory: Path,
    options: ImportOptions,
    features: dict[str, str],
    author_override: tuple[str, str] | None,
    used_elsewhere: Iterable[str] = (),
) -> list[PlannedPatch]:
    """`used_elsewhere`: the patch names of the project's other series and retired/ (export.used_patch_names): a
    new patch is numbered after the highest number used anywhere, as `vpatch export` numbers it."""
    subjects = {p.subject for p in series.patches}
    names = {p.name for p in series.patches} | ({p.name for p in directory.iterdir()} if directory.is_dir() else set())
    numbers = [int(n[:4]) for n in (*names, *used_elsewhere) if n[:4].isdigit()]
    next_number = max([*numbers, len(series.patches)], default=0) + 1
    stems = {name_stem(n) for n in names}
    planned: list[PlannedPatch] = []
    by_feature = assign_features(units, options, features)
    require_authorship(units, author_override, options.date)
    for unit in units:
        prose, headers = split_trailer(unit.body)
        status = options.upstream_status or header_value(headers, "Upstream-Status") or "Pending"
        check_status(status, unit.label)
        own_subject = options.subject or unit.subject
        base_subject = " ".join(own_subject.split()) if own_subject else ""
        groups = by_feature[id(unit)]
        split = [
            (feature, label, files)
            for feature, feature_files in groups
            for label, files in split_files(feature_files, options.split)
        ]
        for feature, label, files in split:
            if own_subject:
                subject = f"{base_subject} ({label})" if label else base_subject
                if len(groups) > 1:
                    subject = f"[{feature}] {subject}"
            else:  # a plain diff or an archive pair: named by what the patch touches
                subject = f"[{feature}] {touched(files)}"
            unique, copy = subject, 2
            while unique in subjects:
                unique, copy = f"{subject} ({copy})", copy + 1
            subjects.add(unique)
            stem = unique_stem(slugify(unique) if own_subject else touched_stem(feature, files), stems)
            name = f"{next_number:04d}-{stem}.patch"
            while name in names:
                next_number += 1
                name = f"{next_number:04d}-{stem}.patch"
            next_number += 1
            names.add(name)
            kept = [(k, v) for k, v in headers if k.lower() not in ("upstream-status", "feature", "patch-file")]
            trailer = [
                ("Upstream-Status", status),
                ("Feature", feature),
                *kept,
                ("Origin", unit.origin),
                ("Patch-File", name),
            ]
            author = author_override or unit.author
            date = unit.date or options.date
            assert author is not None and date is not None  # require_authorship saw to it
            planned.append(
                PlannedPatch(
                    unit,
                    label,
                    files,
                    unique,
                    compose_message(unique, prose, trailer),
                    name,
                    feature,
                    status,
                    author,
                    date,
                )
            )
    return planned


def final_plan(
    plan: ExportPlan, series: Series, planned: list[PlannedPatch], directory: Path, notes: list[str]
) -> tuple[ExportPlan, set[str]]:
    """The existing patches as they are, then the imported ones, appended to the series file.

    An existing patch takes its re-export only when that is the file on disk, or the file plus the
    blank line format-patch puts between mails (the series' last patch gains it when patches follow,
    as `vpatch export` does); a patch out of sync with its re-export is left as it is. Returns the
    plan and the names whose bytes are re-exports (these must re-export identically again).
    """
    existing = len(series.patches)
    new = list(plan.patches[existing:])
    if [name for name, _ in new] != [p.name for p in planned]:
        raise VpatchError(
            f"export named the imported patches {[n for n, _ in new]}, expected {[p.name for p in planned]}",
            path=directory,
        )
    kept: list[tuple[str, bytes]] = []
    rendered = {name for name, _ in new}
    for patch, (_, data) in zip(series.patches, plan.patches[:existing], strict=True):
        if data in (patch.data, patch.data + b"\n"):
            kept.append((patch.name, data))
            rendered.add(patch.name)
        else:
            kept.append((patch.name, patch.data))
            notes.append(f"{patch.name} differs from its re-export (see `vpatch check`); left as it is")
    patches = tuple(kept) + tuple(new)
    text = series.text if (directory / "series").exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{p.name}\n" for p in planned)
    return replace(plan, patches=patches, series_text=text, removed=()), rendered
