"""Compute the story (toolkit/records/story.py): per pinned release and capability, carried / plugin / retired /
not-applicable, and the release from which stock vLLM is the recommended default.

Read from the project, never from a fixed list: the pins and `[features]` (pins.toml), each release's series
and `retired/` patches (`Retired-Since:`, `Retired-Evidence:`), the rebase evidence (evidence.json: dropped
and earlier patches, their upstream signals) and the verdict of every pinned release (toolkit/verdict.py,
on the contract evidence). `vpatch status` and `vpatch report` both call `compute_story`.

A retired capability is `plugin` when the feature's verdict (at this release, else at the last earlier
release that judged it) is stock + plugin for a capability that is the whole feature, or when its
retirement evidence names the plugin for a part of a feature; otherwise `retired` (stock vLLM does it).
A capability a release's series neither carries nor retired (a release reached by a jump, not by rebases:
0.32.0's empty series) is judged from data, on the release's own verdict and contract files: `plugin` when
the plugin's delivery table (toolkit/plugin/delivers.toml) has a module delivering it on that release and
the release's verdict for its feature is stock + plugin; `retired` ("native since X") when pins.toml gives
it a `native-since` at or before the release and its feature's contract evidence there passes; else
not-applicable. The switch (toolkit/report/story_text.py words it) is the first pinned release whose verdict is stock or
stock + plugin and from which every later pinned release agrees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from toolkit.errors import VpatchError, display_path
from toolkit.features import parent_of
from toolkit.lifecycle.upstream import against_results
from toolkit.model import Pin, Series, series_patches
from toolkit.patch_mail import Patch
from toolkit.plugin.build import DIST_NAME
from toolkit.plugin.delivers import PluginTable, default_table
from toolkit.project import Project
from toolkit.records.codec import RecordError
from toolkit.records.evidence import EVIDENCE_FILE, decode_evidence
from toolkit.records.outcome import Outcome
from toolkit.records.story import Capability, Cell, Release, Story
from toolkit.records.verdict import FeatureVerdict, Verdict
from toolkit.report.story_text import switch_of
from toolkit.verdict import decide
from toolkit.verdict_features import gather

CONTRACT_FILE = re.compile(r"[\w.+-]+-against-[\w.+-]+?\.json")
PLUGIN_MODULE = re.compile(r"\bdynamo_base_plugin(?:\.[A-Za-z_]\w*)+")
PR_REF = re.compile(r"(?:https://github\.com/[\w.-]+/[\w.-]+/pull/\d+|[\w.-]+/[\w.-]+#\d+|#\d+)")


def plugin_modules(version: str) -> dict[str, str]:
    """feature -> the plugin module(s) that deliver it or its parts on vLLM `version`, from the plugin's delivery
    table (toolkit/plugin/delivers.toml): the stat logger for kv-routing's load metrics, the connector for
    pd-disagg (from its `since` on)."""
    found: dict[str, list[str]] = {}
    for delivery in default_table().delivered(version):
        for feature in dict.fromkeys(parent_of(n) for n in delivery.capabilities):
            found.setdefault(feature, []).append(delivery.module)
    return {feature: ", ".join(sorted(set(modules))) for feature, modules in found.items()}


@dataclass
class Retirement:
    """One patch that left the series: from a `retired/` copy, a `Retired-Since:` header or evidence.json."""

    patch: str
    feature: str
    seen_in: str  # the release whose series directory records it
    since: str | None = None
    texts: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return sorted({m for t in self.texts for m in CONTRACT_FILE.findall(t)})

    @property
    def names_plugin(self) -> bool:
        return any("plugin" in t.lower() for t in self.texts)


Found = dict[tuple[str, str, str], Retirement]


def _add(found: Found, seen_in: str, patch: str, feature: str, since: str | None, **more) -> None:
    entry = found.setdefault((seen_in, patch, feature), Retirement(patch, feature, seen_in))
    if since and (entry.since is None or Version(since) < Version(entry.since)):
        entry.since = since
    for text in more.get("texts", []):
        if text and text not in entry.texts:
            entry.texts.append(text)
    for signal in more.get("signals", []):
        if signal not in entry.signals:
            entry.signals.append(signal)


def retirements(project: Project) -> dict[str, list[Retirement]]:
    """feature (or sub-feature) -> its retired patches, as each pinned release's series directory records them
    (a release reads only what its own and earlier directories say)."""
    found: Found = {}
    for pin in project.pins.pins:
        directory, version = project.series_dir(pin), str(pin.version)
        for _, patch in series_patches(directory):
            since = patch.header("Retired-Since")
            if since is not None:
                _add(found, version, patch.name, patch.feature, since, texts=[patch.header("Retired-Evidence") or ""])
        _from_evidence(directory / EVIDENCE_FILE, version, found)
    by_feature: dict[str, list[Retirement]] = {}
    for entry in found.values():
        by_feature.setdefault(entry.feature, []).append(entry)
    return by_feature


def _from_evidence(path: Path, version: str, found: Found) -> None:
    try:
        evidence = decode_evidence(path.read_bytes())
    except (OSError, RecordError):
        return  # `vpatch report` and `vpatch review` name what is wrong with it
    for dropped in evidence.dropped:
        if dropped.reason == Outcome.RETIRED and dropped.feature:
            entry = evidence.patches.get(dropped.name)
            signals = list(entry.upstream_signals) if entry else []
            ref = entry.evidence.conformance if entry and entry.evidence else None
            texts = [f"{ref.file} ({ref.build} against {ref.against})"] if ref else []
            _add(found, version, dropped.name, dropped.feature, evidence.new.version, texts=texts, signals=signals)
    for dropped in evidence.earlier:
        if dropped.reason == Outcome.RETIRED and dropped.feature and isinstance(dropped.dropped_in, str):
            _add(found, version, dropped.name, dropped.feature, dropped.dropped_in)


def capabilities(project: Project) -> list[Capability]:
    """Every declared feature, each followed by its sub-features (name order), with the upstream PRs known."""
    info = project.pins.feature_info
    names = sorted(project.pins.features)
    tops = [n for n in names if info.get(n, {}).get("parent") is None]
    order = [x for top in tops for x in (top, *(n for n in names if info.get(n, {}).get("parent") == top))]
    order += [n for n in names if n not in order]
    found = []
    for name in order:
        entry = info.get(name, {})
        upstream = entry.get("upstream")
        found.append(
            Capability(
                name,
                description=project.pins.features.get(name, ""),
                parent=entry.get("parent"),
                has_parts=any(info.get(n, {}).get("parent") == name for n in names),
                upstream=upstream,
                prs=list(dict.fromkeys(PR_REF.findall(upstream or ""))),
                lead=bool(upstream and upstream.strip().lower().startswith("lead")),
                native_since=entry.get("native_since"),
            )
        )
    return found


def _patch_prs(patches: list[Patch]) -> list[str]:
    """Pull requests our own patches name (`Upstream-Status: Submitted [url]`, `Forwarded:`)."""
    found: list[str] = []
    for patch in patches:
        for text in (patch.header("Upstream-Status") or "", patch.header("Forwarded") or ""):
            found += [m for m in PR_REF.findall(text) if m.startswith("https://")]
    return found


def _load(project: Project, pin: Pin) -> Series | None:
    if not project.has_series(pin):
        return None
    try:
        return project.series(pin)
    except VpatchError:
        return None


@dataclass
class Here:
    """What a release itself says, for the capabilities its series neither carries nor retired: its verdict
    per feature and the items its own contract files pass (read when first needed)."""

    project: Project
    pin: Pin
    by_feature: dict[str, FeatureVerdict]
    _passing: dict[tuple[str, str], list[str]] | None = None

    def passing(self, feature: str, file: str) -> list[str]:
        """The contract items of `feature` that pass in `file` (one of the release's own contract files)."""
        if self._passing is None:
            paths = against_results(self.project.options.root, self.pin, patches_dir=self.project.options.patches_dir)
            self._passing = {}
            for name, entries in gather(paths, str(self.pin.version)).items():
                for entry in entries:
                    runs = entry.runs.values()
                    items = {i for run in runs for i, st in run.items() if st == "pass"}
                    self._passing[(name, entry.file)] = sorted(items)
        return self._passing.get((feature, file), [])


def compute_story(
    project: Project, verdicts: dict[str, Verdict] | None = None, table: PluginTable | None = None
) -> Story:
    """The story of every pinned release; `verdicts` (version -> verdict) reuses verdicts already decided;
    `table` is the plugin's delivery table (default: toolkit/plugin/delivers.toml, checked against the
    project's `[features]` when first used)."""
    caps = capabilities(project)
    tables: list[PluginTable] = []

    def plugin_table() -> PluginTable:
        if not tables:
            tables.append(table or default_table())
            tables[0].check(project.pins.features)
        return tables[0]

    retired = retirements(project)
    judged: dict[str, tuple[str, FeatureVerdict]] = {}  # feature -> (release, its last stock / stock + plugin verdict)
    carried_at: dict[str, str] = {}  # capability -> the last release that carried it
    releases: list[Release] = []
    carried_by: dict[str, list[Patch]] = {}
    for pin in project.pins.pins:
        version = str(pin.version)
        series = _load(project, pin)
        verdict = (verdicts or {}).get(version) or decide(project, pin, series)
        by_feature = {f.feature: f for f in verdict.feature_verdicts}
        unmet = {f for f, fv in by_feature.items() if fv.engine is None}  # retired, but no build meets it here
        for feature, fv in by_feature.items():
            if fv.engine in ("stock", "stock+plugin"):
                judged[feature] = (fv.judged_at or version, fv)
            elif fv.engine is None:
                judged.pop(feature, None)
        active = list(series.patches) if series is not None else []
        for patch in active:
            carried_by.setdefault(patch.feature, []).append(patch)
        here = Here(project, pin, by_feature)
        cells = [
            _cell(cap, version, series, active, retired, judged, carried_at.get(cap.name))
            or _jumped(cap, version, here, plugin_table)
            for cap in caps
        ]
        for cell in cells:
            if parent_of(cell.capability) in unmet and cell.status in ("plugin", "retired"):
                fv = by_feature[parent_of(cell.capability)]
                cell.note = "; ".join(x for x in (f"at {version}: {fv.summary}", cell.note) if x)
                cell.evidence = sorted({*cell.evidence, *fv.evidence})
        carried_at.update({c.capability: version for c in cells if c.status == "carried"})
        plugin = verdict.plugin.label if verdict.plugin else None
        releases.append(Release(version, verdict.engine, verdict.summary, cells, plugin, verdict.contracts or []))
    for cap in caps:
        cap.prs = list(dict.fromkeys([*cap.prs, *_patch_prs(carried_by.get(cap.name, []))]))
    name = "vLLM" if project.pins.project == "vllm" else project.pins.project
    return Story(project.pins.project, caps, releases, switch_of(name, caps, releases))


def _cell(
    cap: Capability,
    version: str,
    series: Series | None,
    active: list[Patch],
    retired: dict[str, list[Retirement]],
    judged: dict[str, tuple[str, FeatureVerdict]],
    last_carried: str | None,
) -> Cell | None:
    """The cell of `cap` at `version`: retirements count from the releases up to this one, and only those
    after the last release that carried it (a capability carried again and retired again counts anew); None
    when the series has it neither carried nor retired (`_jumped` judges it)."""
    if series is None:
        return Cell(cap.name, "not-applicable", note="no series at this release (not rebased, or it does not load)")
    mine = (lambda f: parent_of(f) == cap.name) if cap.has_parts else (lambda f: f == cap.name)
    own = [p.name for p in active if mine(p.feature)]
    if own:
        return Cell(cap.name, "carried", patches=own)
    if cap.parent and (whole := [p.name for p in active if p.feature == cap.parent]):
        return Cell(cap.name, "carried", patches=whole, within=cap.parent)
    here = Version(version)
    after = Version(last_carried) if last_carried else None
    gone = [
        r
        for feature, entries in retired.items()
        if mine(feature)
        for r in entries
        if r.since is not None
        and Version(r.seen_in) <= here
        and Version(r.since) <= here
        and (after is None or Version(r.since) > after)
    ]
    if not gone:
        return None
    since = min((r.since for r in gone if r.since), key=Version)
    top = parent_of(cap.name)
    at, fv = judged.get(top, (None, None))
    # a whole feature follows its verdict; a part of one, its own retirement evidence, unless the whole
    # feature's verdict is stock (then stock does every part)
    if fv is not None and (cap.parent is None or fv.engine == "stock"):
        plugin = fv.engine == "stock+plugin"
    else:
        plugin = any(r.names_plugin for r in gone)
    texts = list(dict.fromkeys(t for r in gone for t in r.texts if t))
    signals = sorted({s for r in gone for s in r.signals})
    note = "; ".join([*texts, *([f"upstream signals: {', '.join(signals)}"] if signals else [])])
    evidence = sorted({f for r in gone for f in r.files} | set(fv.evidence if fv is not None else []))
    items: list[str] = []
    if fv is not None:
        items = [f"adds {a}" for a in fv.adds] if plugin else []
        items += unmet_items(fv)
    cell = Cell(
        cap.name,
        "plugin" if plugin else "retired",
        patches=sorted({r.patch for r in gone}),  # one patch, however many directories record its retirement
        since=since,
        evidence=evidence,
        items=items,
        note=note,
        judged_at=at if at is not None and at != version else None,
    )
    if plugin:
        found = sorted({m for t in texts for m in PLUGIN_MODULE.findall(t)})
        cell.module = ", ".join(found) or plugin_modules(version).get(top)
        cell.plugin = fv.plugin.label if fv is not None and fv.plugin is not None else DIST_NAME
    return cell


def unmet_items(fv: FeatureVerdict) -> list[str]:
    """The contract items the verdict's build does not meet, as one item of the cell ("not met: a (...); b (...)")."""
    return [f"not met: {'; '.join(fv.unmet)}"] if fv.unmet else []


def _jumped(cap: Capability, version: str, here: Here, plugin_table) -> Cell:
    """A capability the series of `version` neither carries nor retired: plugin when the plugin delivers it
    on `version` and the release's verdict for its feature is stock + plugin; retired when upstream has it
    (`native-since` <= `version`) and the feature's contract evidence at `version` passes; else n/a."""
    top = parent_of(cap.name)
    fv = here.by_feature.get(top)
    absent = f"not in the series of {version}, and no patch of it was retired"
    if fv is None or fv.engine not in ("stock", "stock+plugin"):
        return Cell(cap.name, "not-applicable", note=absent)
    if fv.engine == "stock+plugin":
        modules = plugin_table().at(cap.name, version, parts=cap.parent is None)  # a feature: its parts too
        if modules:
            since = min(d.since for d in modules)
            shown = ", ".join(f"{d.label} (since vLLM {d.since})" for d in modules)
            return Cell(
                cap.name,
                "plugin",
                since=str(since),
                plugin=fv.plugin.label if fv.plugin is not None else DIST_NAME,
                module=", ".join(dict.fromkeys(d.module for d in modules)),
                evidence=list(fv.evidence),
                items=[f"adds {a}" for a in fv.adds] + unmet_items(fv),
                note=f"{absent}; delivered by {shown}, per {display_path(plugin_table().path)}",
            )
    native = cap.native_since
    if native is not None and Version(native) <= Version(version) and fv.evidence:
        chosen = fv.evidence[0]
        passing = here.passing(top, chosen)
        return Cell(
            cap.name,
            "retired",
            since=native,
            evidence=list(fv.evidence),
            items=[f"passes {i}" for i in passing] + unmet_items(fv),
            note=f"native since {native} (pins.toml [features] native-since); the {top} contract passes in "
            f"{chosen}; {absent}",
        )
    return Cell(cap.name, "not-applicable", note=absent)
