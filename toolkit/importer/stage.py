"""The import stage: a source's units checked, applied, planned, proven and written into the series."""

from __future__ import annotations

import time

from toolkit.apply import apply_series
from toolkit.checkout import Checkout
from toolkit.errors import VpatchError
from toolkit.export import plan_export, used_patch_names, write_export
from toolkit.importer.applying import check_unit_applies, commit_planned, tree_paths
from toolkit.importer.delta import applies, stock_delta
from toolkit.importer.messages import parse_author
from toolkit.importer.plan import SPLIT_MODES, check_feature, check_status, final_plan, plan_patches
from toolkit.importer.proof import check_written, prove_round_trip
from toolkit.importer.records import ImportOptions, ImportResult, NewPatch
from toolkit.importer.units import Source, Unit
from toolkit.model import Pin, Series, empty_series
from toolkit.project import Project


def import_into_series(project: Project, pin: Pin, source: Source, options: ImportOptions) -> ImportResult:
    started = time.perf_counter()
    if options.split not in SPLIT_MODES:
        raise VpatchError(f"--split must be one of {', '.join(SPLIT_MODES)}, not {options.split!r}")
    features = project.pins.features
    check_feature(options.feature, features, "--feature")
    for rule in options.feature_rules:
        check_feature(rule.feature, features, f"{rule.where}: {rule.glob}")
    if options.upstream_status is not None:
        check_status(options.upstream_status, "--upstream-status")
    author_override = parse_author(options.author) if options.author else None
    directory = project.series_dir(pin)
    series = project.series(pin) if project.has_series(pin) else empty_series(directory, pin.version)
    notes: list[str] = []
    with project.scratch_checkout(pin) as checkout:
        applied = apply_series(checkout, series)
        if not applied.ok:
            stopped = applied.stopped_at
            detail = f"{stopped.name}: {'; '.join(stopped.details)}" if stopped else "failed"
            raise VpatchError(f"the existing series does not apply ({detail}); fix it before importing", path=directory)
        tree = tree_paths(checkout)
        units = source.units(tree, notes)
        if options.subject is not None and len(units) > 1:
            raise VpatchError(f"--subject names one patch, but {source.label} holds {len(units)} mails or commits")
        already = _already_imported(checkout, series, units)
        if already:
            return ImportResult(
                str(pin.version),
                directory,
                len(series.patches),
                [],
                notes,
                list(source.skipped),
                source.describe(),
                already=already,
            )
        if len(units) == 1:  # a diff or archive pair taken against stock over the series: its delta
            unit = units[0]
            diff = b"".join(change.render() for change in unit.files)
            if not applies(checkout, diff):
                delta = stock_delta(checkout, unit, diff, applied, tree)
                if delta is not None:
                    unit.files = delta.files
                    notes.append(delta.note(unit, pin.label, len(series.patches)))
        used = used_patch_names([directory, *project.other_series_dirs(pin)])
        planned = plan_patches(units, series, directory, options, features, author_override, used)
        for unit in units:
            diff = b"".join(change.render() for change in unit.files)
            notes.extend(
                check_unit_applies(
                    checkout,
                    unit,
                    diff,
                    allow_offset=options.allow_offset,
                    series_paths=frozenset(p for patch in series.patches for p in patch.touched_paths),
                )
            )
            proc = checkout.git.apply(diff, quiet_whitespace=True)
            if not proc.ok:
                raise VpatchError(f"{unit.label}: git apply failed: {proc.last_error_line()}", path=unit.where)
            for entry in (p for p in planned if p.unit is unit):
                commit_planned(checkout, entry)
            leftover = checkout.git.status(untracked="all")
            if leftover:
                raise VpatchError(f"{unit.label}: applying left changes no patch carries: {leftover.splitlines()[0]}")
        plan = plan_export(checkout, directory)
        final, rendered = final_plan(plan, series, planned, directory, notes)
        prove_round_trip(project, pin, checkout, final, series, features, rendered)
    result = ImportResult(
        version=str(pin.version),
        directory=directory,
        existing=len(series.patches),
        patches=[
            NewPatch(
                p.name,
                p.subject,
                p.feature,
                p.status,
                p.unit.origin,
                f"{p.author[0]} <{p.author[1]}>",
                tuple(dict.fromkeys(path for f in p.files for path in f.paths)),
                sum(f.added for f in p.files),
                sum(f.removed for f in p.files),
            )
            for p in planned
        ],
        notes=notes,
        skipped=list(source.skipped),
        source=source.describe(),
    )
    if not options.dry_run:
        write_export(final)
        check_written(final, pin)
        result.written = True
    result.seconds = time.perf_counter() - started
    return result


def _already_imported(checkout: Checkout, series: Series, units: list[Unit]) -> list[str]:
    """The series' patches that hold these units already (the same source imported before), else [].

    Every unit must have a patch whose Origin names it, and its diff must reverse-apply to the
    series' tree (its changes are there); a same-named source with other changes is imported.
    """
    carriers: list[str] = []
    for unit in units:
        named = [p.name for p in series.patches if p.header("Origin") == unit.origin]
        if not named:
            return []
        diff = b"".join(change.render() for change in unit.files)
        if not checkout.git.apply(diff, reverse=True, check=True, quiet_whitespace=True).ok:
            return []
        carriers.extend(n for n in named if n not in carriers)
    return carriers
