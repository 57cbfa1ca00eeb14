"""The verdict stage: which engine a launcher should default to for a pinned release, and why.

One of three per release (toolkit/records/verdict.py), derived from the series and the feature contracts
(toolkit/contracts/, results under patches/conformance/ and out/conform/), feature by feature
(toolkit/verdict_features.py):

- "dynamo-base needed" while any patch is active (the verdict names the patches per feature and what stock
  lacks);
- "stock + plugin" when the series is empty because everything was retired and some retired feature's
  contract is met only by stock with a plugin beside it (the verdict names the plugin and what it adds);
- "stock" when the series is empty and stock alone meets every retired feature's contract (or its
  retirement was forced and says so).

A patch retired at release R is retired for every later release: the features a release judges include
those retired from any pinned series at R <= it (`retired_features`), not only its own `retired/`. One with
no contract evidence on the later release takes the verdict of the last release from R on whose evidence
judged it, marked "as judged at" (`judged_at`), as the story does; with none, no verdict, saying so.

An empty series of a release pinned past the chain (nothing retired there because nothing was carried) is
explained by its NOTES.md; every declared feature with a contract is then judged by the contract evidence.
No verdict without a series, with an empty one nothing explains, or while no build meets a retired
feature's contract. The summary is the headline: the release's verdict and each other feature's engine, with
what the plugin adds and the condition a deployment must meet ("kv-routing: stock + plugin (adds load-figures;
needs prefix_caching_hash_algo=builtin)"); each feature's own summary has the detail, and `lacks` what stock
lacks per feature (the items no stock result of the release passes). `vpatch status` and `vpatch ci` print
them, `vpatch ci` writes the record into the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
from packaging.version import InvalidVersion, Version

from toolkit.features import describe, parent_of
from toolkit.lifecycle.upstream import against_results, contract_files
from toolkit.model import Pin, Series, series_patches
from toolkit.project import Project
from toolkit.records.codec import RecordError
from toolkit.records.contract import CONTRACT_FEATURES
from toolkit.records.evidence import EVIDENCE_FILE, decode_evidence
from toolkit.records.verdict import Engine, FeatureVerdict, Verdict
from toolkit.verdict_features import Weighed, condition_of, feature_verdict, gather, headline, weigh

NOTES_FILE = "NOTES.md"


def decide(project: Project, pin: Pin, series: Series | None) -> Verdict:
    """The verdict for `pin`; `series` is its loaded series, None when it has none or it does not load."""
    name = "vLLM" if pin.project == "vllm" else pin.project
    if not project.has_series(pin):
        return Verdict(None, 0, [], "no series yet (not rebased)")
    if series is None:
        return Verdict(None, 0, [], "unknown: the series does not load")
    version = str(pin.version)
    paths = against_results(project.options.root, pin, patches_dir=project.options.patches_dir)
    contracts = contract_files(paths, version) or None
    # an empty series with nothing retired in it (pinned past the chain) judges every declared feature with a
    # contract; one that a rebase emptied judges what it retired
    past_chain = not series.patches and not retirement_records(series.directory)[0]
    declared = tuple(f for f in CONTRACT_FEATURES if f in project.pins.features) if past_chain else ()
    retired = retired_features(project, pin, series)
    # per feature: what stock alone lacks (the items no stock result of this release passes) and the build chosen
    evidence = {f: weigh(entries) for f, entries in gather(paths, version).items()}
    lacks = {f: weighed.lacks for f, weighed in sorted(evidence.items()) if weighed.lacks}
    earlier = {f: r.since for f, r in retired.items() if r.since != version and f not in evidence}
    judged = {f: j for f, j in ((f, judged_earlier(project, pin, f, since)) for f, since in earlier.items()) if j}
    inherited = {f: verdict for f, (verdict, _) in judged.items()}
    conditions = {f: condition_of(weighed.chosen) for f, weighed in evidence.items()}
    conditions.update({f: condition for f, (_, condition) in judged.items()})
    verdicts = feature_verdicts(
        name, version, series, evidence, declared=declared, retired=retired, inherited=inherited
    )
    plugin = next((v.plugin for v in verdicts if v.engine == "stock+plugin" and v.plugin is not None), None)
    # the headline gives each feature's engine; its own line (`summary`) the detail
    others = "".join(f"; {headline(v, conditions.get(v.feature, ''))}" for v in verdicts if v.engine != "dynamo-base")

    def make(engine: Engine | None, count: int, features: list[str], summary: str, records: list[str] | None):
        return Verdict(engine, count, features, summary, records, lacks or None, contracts, verdicts, plugin)

    if series.patches:
        # sub-features grouped under their parent: "pd-disagg (failed-loads, nixl)"
        features = describe(p.feature or "(no feature)" for p in series.patches)
        count = len(series.patches)
        summary = f"dynamo-base needed ({count} active patch{'es' if count != 1 else ''}: {', '.join(features)})"
        return make("dynamo-base", count, features, summary + others, None)
    records, unexplained = retirement_records(series.directory)
    unmet = [v.feature for v in verdicts if v.engine is None]
    if not records and (series.directory / NOTES_FILE).is_file() and not unexplained:
        # a release pinned past the chain with nothing to carry: NOTES.md says why, the contracts show it
        records = [NOTES_FILE]
        if unmet:
            summary = f"empty series (see {NOTES_FILE}), but no build meets the contract of {', '.join(unmet)}"
            return make(None, 0, [], summary + "; not stock", records)
    if records and not unexplained and unmet:
        summary = f"empty series, but {', '.join(unmet)} retired without a passing contract; not stock"
        return make(None, 0, [], summary, records)
    if records and not unexplained and plugin is not None:
        summary = f"stock {name} {version} with {plugin.label} provides every feature; recommended default{others}"
        return make("stock+plugin", 0, [], summary, records)
    if records and not unexplained:
        summary = f"stock {name} {version} provides every feature; recommended default"
        return make("stock", 0, [], summary, records)
    if unexplained:
        summary = f"empty series, but {', '.join(unexplained)} left without upstream evidence; not a verdict for stock"
    else:
        summary = (
            f"empty series, but no evidence.json, retired patches or {NOTES_FILE} say why; not a verdict for stock"
        )
    return Verdict(None, 0, [], summary, records, feature_verdicts=verdicts)


@dataclass(frozen=True)
class RetiredFeature:
    """A feature (a parent: a retired sub-feature counts for its parent) with patches retired for a release."""

    since: str  # the earliest release any of its patches was retired at
    forced: bool  # every one of its retired patches was forced (a reason recorded instead of contract evidence)


def feature_verdicts(
    name: str,
    version: str,
    series: Series,
    evidence: dict[str, Weighed],
    *,
    declared: tuple[str, ...] = (),
    retired: dict[str, RetiredFeature] | None = None,
    inherited: dict[str, FeatureVerdict] | None = None,
) -> list[FeatureVerdict]:
    """One verdict per feature the series carries or retired (`retired`: default, its own `retired/` only; and per
    `declared` feature): its active patches, else its weighed contract `evidence` (toolkit/verdict_features.py);
    a forced retirement, or a feature without a contract, counts as stock; one retired at an earlier release
    without contract evidence on this one takes its `inherited` verdict (`judged_earlier`), else has none."""
    active: dict[str, list[str]] = {}
    for patch in series.patches:  # sub-features under their parent: the parent's contract judges it
        active.setdefault(parent_of(patch.feature or "") or "(no feature)", []).append(patch.name)
    if retired is None:
        retired = _retired_in(series.directory, version, set(), own=True)
    verdicts = []
    for feature in sorted(set(active) | set(retired) | set(declared)):
        verdict = feature_verdict(name, feature, version, active.get(feature, []), evidence.get(feature) or weigh([]))
        gone = retired.get(feature)
        earlier = gone is not None and gone.since != version  # retired at an earlier release
        if verdict.engine is None and earlier and feature in (inherited or {}):
            verdict = (inherited or {})[feature]
        elif verdict.engine is None and (feature not in CONTRACT_FEATURES or (gone is not None and gone.forced)):
            how = "forced" if feature in CONTRACT_FEATURES else "no contract for this feature"
            where = f"at {gone.since}" if gone is not None and earlier else "see retired/"
            verdict = FeatureVerdict(
                feature, "stock", f"retired ({how}; {where})", lacks=verdict.lacks, evidence=verdict.evidence
            )
        elif verdict.engine is None and gone is not None and earlier and feature not in evidence:
            verdict = FeatureVerdict(
                feature,
                None,
                f"retired at {gone.since}; no contract evidence for {version} (`vpatch conform {version} --against "
                f"--features {feature} --save` makes it)",
            )
        verdicts.append(verdict)
    return verdicts


def judged_earlier(project: Project, pin: Pin, feature: str, since: str) -> tuple[FeatureVerdict, str] | None:
    """The verdict on `feature` of the last release from `since` up to before `pin`'s that has contract evidence
    for it, as `judged_at` that release, with the condition a deployment must meet on that evidence (None: no
    release from `since` on has any)."""
    name = "vLLM" if pin.project == "vllm" else pin.project
    earlier = [p for p in project.pins.pins if p.project == pin.project and Version(since) <= p.version < pin.version]
    for other in sorted(earlier, key=lambda p: p.version, reverse=True):
        version = str(other.version)
        paths = against_results(project.options.root, other, patches_dir=project.options.patches_dir)
        evidence = gather(paths, version).get(feature)
        if evidence:
            weighed = weigh(evidence)
            judged = feature_verdict(name, feature, version, [], weighed)
            retired = f" (retired at {since})" if since != version else ""
            summary = f"as judged at {version}{retired}: {judged.summary}"
            return msgspec.structs.replace(judged, summary=summary, judged_at=version), condition_of(weighed.chosen)
    return None


def retired_features(project: Project, pin: Pin, series: Series) -> dict[str, RetiredFeature]:
    """The features with patches retired for `pin`'s release: those in its own `retired/`, and every patch the
    series of an earlier pinned release records as retired (`Retired-Since:` R, in `retired/` or marked in the
    last series that carried it) at R <= the release, unless the release's series carries that patch again."""
    active = {p.name for p in series.patches}
    found = _retired_in(series.directory, str(pin.version), active, own=True)
    for other in project.pins.pins:
        if other.project != pin.project or other.version >= pin.version:
            continue  # a release reads only what its own and earlier series directories record (as the story)
        for feature, entry in _retired_in(project.series_dir(other), str(pin.version), active, own=False).items():
            found[feature] = _merged(found.get(feature), entry)
    return found


def _retired_in(directory: Path, version: str, active: set[str], *, own: bool) -> dict[str, RetiredFeature]:
    """The features of the patches in series `directory` retired for `version`: its `retired/` copies when it is
    that release's `own` series, and any patch whose `Retired-Since:` is `version` or earlier."""
    found: dict[str, RetiredFeature] = {}
    for path, patch in series_patches(directory):
        since = patch.header("Retired-Since")
        if patch.name in active or not (_not_after(since, version) or (own and path.parent.name == "retired")):
            continue
        feature = parent_of(patch.feature or "") or "(no feature)"  # a retired sub-feature counts for its parent
        was_forced = (patch.header("Retired-Evidence") or "").startswith("forced:")
        entry = RetiredFeature(since if _not_after(since, version) and since else version, was_forced)
        found[feature] = _merged(found.get(feature), entry)
    return found


def _not_after(since: str | None, version: str) -> bool:
    try:
        return since is not None and Version(since) <= Version(version)
    except InvalidVersion:
        return False  # `vpatch check` names a header that is not a version


def _merged(known: RetiredFeature | None, entry: RetiredFeature) -> RetiredFeature:
    if known is None:
        return entry
    since = min(known.since, entry.since, key=Version)
    return RetiredFeature(since, known.forced and entry.forced)


def retirement_records(directory: Path) -> tuple[list[str], list[str]]:
    """What records that this series' patches were retired, and the dropped patches nothing explains.

    Records: an evidence.json (from `vpatch rebase`) that lists dropped patches, now or in the rebases
    before; patches carrying `Retired-Since:`. Unexplained: patches evidence.json lists as dropped
    without any upstream signal (skipped by hand).
    """
    records: list[str] = []
    unexplained: list[str] = []
    evidence_file = directory / EVIDENCE_FILE
    if evidence_file.is_file():
        try:
            evidence = decode_evidence(evidence_file.read_bytes())
        except (OSError, RecordError):
            pass  # `vpatch report` and `vpatch review` name what is wrong with it
        else:
            patches = evidence.patches
            unexplained = sorted(n for n, e in patches.items() if not e.kept and not e.upstream_signals)
            if evidence.dropped or evidence.earlier:
                records.append(EVIDENCE_FILE)
    for path, patch in series_patches(directory):
        if patch.header("Retired-Since") is not None:
            records.append(str(path.relative_to(directory)))
    return records, unexplained
