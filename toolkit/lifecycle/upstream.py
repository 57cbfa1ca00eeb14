"""Evidence that upstream already has a patch, gathered when a series is rebased onto a newer release.

Independent signals per patch of the old series:

* `became_empty`: replaying it onto the new base changed nothing (the new release already contains it);
* `patch_id_match`: an upstream commit between the two bases has the same `git patch-id --stable`
  (git sources only: an sdist base is a single commit without history);
* `reverse_applies`: the old patch file reverse-applies cleanly to the new base's tree (`git apply
  --reverse --check`), i.e. every line it adds is there, in the same context;
* `header`: the patch itself says so (`Applied-Upstream:`, or `Upstream-Status: Accepted [...]`).

A fifth, `conformance`: the feature contracts of `vpatch conform NEW --against OLD` (toolkit/contracts/)
pass for the patch's feature on NEW (every item, every transport configuration).

A sixth, `post_image_in_new`, needs no history either: per hunk, where NEW's tree already has the hunk's
post-image by content, wherever the lines moved (toolkit/lifecycle/post_image.py); it fires when every
hunk of the patch is there. The hunks found are recorded even when only some are.

Beside them, `native_since`: the feature's `native-since` from pins.toml when NEW is that release or later
(a hint for the maintainer; retirement never rests on it). A patch kept in NEW's series past its feature's
native-since, with no contract result showing NEW provides the feature, is flagged: `past_native_since` on
the patch and a line in the document's `warnings` (the rebase prints them).

A patch dropped with `vpatch rebase --skip --reason TEXT` has the reason as `skip_reason`.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from msgspec import UNSET

from toolkit.features import parent_of
from toolkit.git import Git
from toolkit.lifecycle.post_image import hunks_in_new
from toolkit.model import Patch, Pin
from toolkit.records.codec import RecordError
from toolkit.records.contract import ContractResults, decode_contract
from toolkit.records.evidence import (
    EVIDENCE_FORMAT,
    ConformanceRef,
    Dropped,
    Evidence,
    Header,
    PatchEntry,
    PostImage,
    Side,
    Signals,
    UpstreamCommit,
)
from toolkit.records.outcome import DROPPED, KEPT, Outcome
from toolkit.sources import Base

if TYPE_CHECKING:  # the rebase package imports this module
    from toolkit.lifecycle.rebase.state import PatchResult

SDIST_NO_HISTORY = "not available: sdist bases have no history"
DIFFERENT_REMOTES = "not available: the two pins come from different git remotes"


# patch-id depends on the patch text only: remembered per content for the life of the process.
_PATCH_IDS: dict[bytes, str | None] = {}


def patch_id(repo: Git, data: bytes) -> str | None:
    """`git patch-id --stable` of one patch (mail or diff); None when it carries no diff."""
    return patch_ids(repo, [data])[0]


def patch_ids(repo: Git, patches: list[bytes]) -> list[str | None]:
    """`git patch-id --stable` of several patches with one git run (each gets a numbered mail header, so the
    ids come back in order even when a patch carries no diff and yields no line)."""
    keys = [hashlib.sha256(data).digest() for data in patches]
    missing = [i for i, key in enumerate(keys) if key not in _PATCH_IDS]
    if missing:
        stream = bytearray()
        for number in missing:
            data = patches[number]
            body = data.split(b"\n", 1)[1] if data.startswith(b"From ") else data
            stream += f"From {number + 1:040x} Mon Sep 17 00:00:00 2001\n".encode() + body
            if not body.endswith(b"\n"):
                stream += b"\n"
        found = {int(number, 16) - 1: patch_id for patch_id, number in repo.patch_ids(bytes(stream))}
        for number in missing:
            _PATCH_IDS[keys[number]] = found.get(number)
    return [_PATCH_IDS[key] for key in keys]


def upstream_patch_ids(old: Base, new: Base, paths: set[str]) -> dict[str, list[UpstreamCommit]] | str:
    """{patch id: [{commit, subject}]} of the upstream commits in OLD..NEW touching `paths`, or why not available.

    Only commits touching one of the paths can match a patch that touches exactly those, so the
    listing is narrowed by path first and only those commits' diffs are computed.
    """
    if old.source != "git" or new.source != "git":
        return SDIST_NO_HISTORY
    if old.repo != new.repo:
        return DIFFERENT_REMOTES
    mirror = Git(new.repo)
    commits = mirror.commits_touching(f"{old.commit}..{new.commit}", sorted(paths))
    if not commits:
        return {}
    subjects = mirror.subjects_of(commits)
    ids: dict[str, list[UpstreamCommit]] = {}
    for patch_id, commit in mirror.patch_ids(mirror.patches_of(commits)):
        ids.setdefault(patch_id, []).append(UpstreamCommit(commit, subjects.get(commit, "")))
    return ids


def reverse_applies(repo: Git, commit: str, patch_path: Path, index_file: Path) -> bool:
    """Whether `patch_path` reverse-applies cleanly to `commit`'s tree (checked in a private index)."""
    index = repo.private_index(index_file)
    if not index_file.exists():
        index.read_tree(commit)
    return index.apply(patch_path, reverse=True, check=True).ok


def header_evidence(patch: Patch) -> Header:
    try:
        status = patch.upstream_status
        accepted, status_text = status.is_upstream, str(status)
    except ValueError as exc:
        accepted, status_text = False, f"invalid: {exc}"
    applied = patch.header("Applied-Upstream")
    return Header(applied_upstream=applied, upstream_status=status_text, says_upstream=bool(applied) or accepted)


def against_results(
    root: Path, new_pin: Pin, explicit: Path | None = None, *, patches_dir: Path | None = None
) -> list[Path]:
    """`vpatch conform NEW --against OLD` results files for NEW: the given one, else those committed under
    patches/conformance/ (the evidence a retirement rests on) and those under out/conform (the last runs)."""
    if explicit is not None:
        return [explicit]
    pattern = f"{new_pin.series_dirname}*-against-*.json"
    committed = sorted((patches_dir / "conformance").glob(pattern)) if patches_dir is not None else []
    return committed + sorted((root / "out" / "conform").glob(pattern))


def contract_results(paths: list[Path], version: str) -> list[tuple[Path, ContractResults]]:
    """The feature-contract results (schema 2) among `paths` whose NEW side is `version`; files of the old
    in-process comparison (schema 1) and unreadable ones are not evidence and are left out."""
    found = []
    for path in paths:
        try:
            results = decode_contract(path.read_bytes())
        except (OSError, RecordError):
            continue
        if results.new.version == version:
            found.append((path, results))
    return found


def conformance_evidence(results: list[Path], version: str) -> dict[str, ConformanceRef]:
    """feature -> the contract result that shows every item of it passing on NEW ({file, build, against})."""
    found: dict[str, ConformanceRef] = {}
    for path, result in contract_results(results, version):
        for feature in result.features:
            if feature not in found and result.feature_passes(feature):
                found[feature] = ConformanceRef(path.name, result.new.label, result.old.label)
    return found


def lacking_in(
    found: list[ContractResults],
    feature: str,
    describe: Callable[[ContractResults, str], list[str]] = ContractResults.lacking,
) -> list[str]:
    """The items of `feature` that none of `found` passes on NEW (per item a passing result wins, as in
    `item_finding`: the cpu tier's "no CPU P/D transport" does not outweigh the engine tier's pass), each with
    how and where as the first result that lacks it says (`describe`: `NAME (HOW)` lines, by default with
    the run names, ContractResults.lacking)."""
    passed = {i.item for r in found for i in r.items_of("new", feature) if r.item_passes(feature, i.item)}
    lines: dict[str, str] = {}
    for result in found:
        for line in describe(result, feature):
            name = line.split(" (", 1)[0]
            if name not in passed:
                lines.setdefault(name, line)
    return list(lines.values())


def contract_findings(results: list[Path], version: str) -> dict[str, tuple[bool, list[str], str]]:
    """feature -> (passes, the items NEW lacks, file). `passes`: one result passes every item (a retirement
    rests on one run of the whole contract); its file then. Else the items no stock result passes
    (`lacking_in`; without a stock result, the first result's) and the first stock result's file."""
    findings: dict[str, tuple[bool, list[str], str]] = {}
    ordered = _stock_first(contract_results(results, version))
    for feature, (passes, path, result) in _finding_results(ordered).items():
        judged = [r for _, r in ordered if r.new.kind == "stock" and feature in r.features] or [result]
        findings[feature] = (passes, [] if passes else lacking_in(judged, feature), path.name)
    return findings


def contract_files(results: list[Path], version: str) -> list[str]:
    """The files `contract_findings` rests its findings on, sorted (without working out what NEW lacks)."""
    ordered = _stock_first(contract_results(results, version))
    return sorted({path.name for _, path, _ in _finding_results(ordered).values()})


def _stock_first(found: list[tuple[Path, ContractResults]]) -> list[tuple[Path, ContractResults]]:
    return sorted(found, key=lambda pr: pr[1].new.kind != "stock")


def _finding_results(ordered: list[tuple[Path, ContractResults]]) -> dict[str, tuple[bool, Path, ContractResults]]:
    """feature -> (passes, file, result) of the result a finding rests on: the first that passes every item,
    else the first of `ordered` (stock results first) that judges the feature."""
    found: dict[str, tuple[bool, Path, ContractResults]] = {}
    for path, result in ordered:
        for feature in result.features:
            passes = result.feature_passes(feature)
            if feature not in found or (passes and not found[feature][0]):
                found[feature] = (passes, path, result)
    return found


def item_finding(results: list[Path], version: str, feature: str, item: str) -> tuple[bool, str, str] | None:
    """(passes, its line, file) for one contract item on stock `version` (a stock build's result only: a plugin's
    pass is the plugin's), or for a scenario an item's line tells (records/contract.py TOLD); a passing result
    wins; None when no stock result judged or told it."""
    found: tuple[bool, str, str] | None = None
    for path, result in contract_results(results, version):
        if result.new.kind != "stock":
            continue
        passes = result.item_passes(feature, item)
        if passes is not None:
            lines = [
                i.detail for i in result.items_of("new", feature) if i.item == item and (i.status == "pass") == passes
            ]
            line = lines[0] if lines else ""
        elif (told := result.told(feature, item)) is not None:
            passes, line = told
        else:
            continue
        if found is None or (passes and not found[0]):
            found = (passes, line, path.name)
    return found


def collect_evidence(
    repo: Git,
    *,
    project: str,
    old_base: Base,
    new_base: Base,
    patches: list[Patch],
    outcomes: list[PatchResult],
    content_changed: dict[str, bool],
    earlier: list[Dropped] | None = None,
    conformance: dict[str, ConformanceRef] | None = None,
    native_since: dict[str, str | None] | None = None,
) -> Evidence:
    """The evidence.json record: every patch of the old series with its outcome and the signals.

    `native_since` (feature -> pins.toml's `native-since`) adds `native_since` for a patch whose feature
    upstream ships its own version of by NEW: a hint that the patch may be carried upstream, for the
    maintainer to check; on its own it is no evidence of retirement (a retirement needs the contracts).

    `earlier` carries forward the patches dropped by the rebases that led to the old series (from its own
    evidence.json), so a series stays explained after it was emptied and then rebased again.
    """
    by_name = {o.name: o for o in outcomes}
    paths = {p for patch in patches for p in patch.touched_paths}
    upstream_ids = upstream_patch_ids(old_base, new_base, paths) if patches else {}
    entries: dict[str, PatchEntry] = {}
    files: dict[str, list[bytes] | None] = {}  # NEW's files, read once for every patch's hunks
    with tempfile.TemporaryDirectory(prefix="vpatch-evidence-", dir=repo.git_dir()) as tmp:
        index_file = Path(tmp) / "index"
        for position, patch in enumerate(patches, start=1):
            outcome = by_name.get(patch.name)
            status = outcome.status if outcome is not None else Outcome.PENDING
            own_id = patch_id(repo, patch.data)
            if isinstance(upstream_ids, str):
                match: list[UpstreamCommit] | str = upstream_ids
            else:
                match = sorted(upstream_ids.get(own_id or "", []), key=lambda m: m.commit)
            hunks = hunks_in_new(repo, new_base.commit, patch.data, files)
            found = [h for h in hunks if h.found]
            signals = Signals(
                became_empty=status == Outcome.EMPTY,
                patch_id_match=match,
                reverse_applies=reverse_applies(repo, new_base.commit, patch.path, index_file),
                header=header_evidence(patch),
                # contracts judge the parent feature; native-since is the sub-feature's own (toolkit/features.py)
                conformance=(conformance or {}).get(parent_of(patch.feature or "")),
                native_since=_native_by(new_base, (native_since or {}).get(patch.feature or "")),
                post_image_in_new=PostImage(hunks=hunks, found=len(found), total=len(hunks)),
            )
            fired = [
                name
                for name, hit in (
                    ("became_empty", signals.became_empty),
                    ("patch_id_match", isinstance(match, list) and bool(match)),
                    ("reverse_applies", signals.reverse_applies),
                    ("header", signals.header.says_upstream),
                    ("conformance", signals.conformance is not None),
                    ("native_since", signals.native_since is not None),
                    ("post_image_in_new", bool(hunks) and len(found) == len(hunks)),
                )
                if hit
            ]
            kept = status in KEPT
            entries[patch.name] = PatchEntry(
                position=position,
                subject=patch.subject,
                feature=patch.feature,
                outcome=status,
                details=list(outcome.details) if outcome is not None else [],
                kept=kept,
                content_changed=content_changed.get(patch.name) if kept else None,
                patch_id=own_id,
                evidence=signals,
                upstream_signals=fired,
                skip_reason=outcome.reason if outcome is not None else None,
                # carried past native-since without contract evidence (retire needs the contracts)
                past_native_since=signals.native_since
                if kept and signals.native_since is not None and signals.conformance is None
                else None,
            )
    dropped = [
        Dropped(name=name, feature=entry.feature, reason=entry.outcome, skip_reason=entry.skip_reason or UNSET)
        for name, entry in sorted(entries.items())
        if entry.outcome in DROPPED
    ]
    return Evidence(
        format=EVIDENCE_FORMAT,
        project=project,
        old=Side(version=str(old_base.pin.version), source=old_base.source, base_commit=old_base.commit),
        new=Side(version=str(new_base.pin.version), source=new_base.source, base_commit=new_base.commit),
        patches=entries,
        dropped=dropped,
        earlier=list(earlier or []),
        kept=[p.name for p in patches if entries[p.name].kept],
        warnings=native_since_warnings(entries, project, str(old_base.pin.version), str(new_base.pin.version)),
    )


def native_since_warnings(entries: dict[str, PatchEntry], project: str, old: str, new: str) -> list[str]:
    """One line per feature whose patches are carried onto NEW past the feature's native-since, without the
    contract results a retirement needs."""
    carried: dict[str | None, list[str]] = {}
    since: dict[str | None, str] = {}
    for name, entry in entries.items():
        if entry.past_native_since:
            carried.setdefault(entry.feature, []).append(name)
            since[entry.feature] = entry.past_native_since
    return [
        f"{feature}: {len(names)} patch(es) carried onto {project} {new}, past the feature's native-since "
        f"{since[feature]} (pins.toml), without retirement evidence ({', '.join(names)}): check stock {new} with "
        f"`vpatch conform {new} --against {old} --features {feature} --save`, then `vpatch retire PATCH --since "
        f"{new}` if the contracts pass"
        for feature, names in carried.items()
    ]


def _native_by(new_base: Base, since: str | None) -> str | None:
    """`since` when upstream has had the feature by NEW's release, else None."""
    from packaging.version import Version

    return since if since is not None and Version(since) <= new_base.pin.version else None


def carried_forward(old_evidence: Evidence) -> list[Dropped]:
    """The `earlier` list for a rebase of a series that has `old_evidence`: its earlier and its dropped patches."""
    return old_evidence.carried_forward()
