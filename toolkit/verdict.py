"""The verdict stage: which engine a launcher should default to for a pinned release, and why.

dynamo-base while any patch is active; stock when the series is empty because everything was retired
(an empty series plus the evidence.json a rebase writes, or retired patch records) and the feature
contracts (toolkit/contracts/, results under patches/conformance/) pass on stock for every retired feature
that has one, or its retirement was forced and says so; no verdict without a series, with an empty one
nothing explains, or while stock lacks a contract item of a retired feature. Per version the summary says
what stock lacks (e.g. "stock vLLM 0.9.0 lacks: kv-routing load-figures"). `vpatch status` shows it,
`vpatch ci` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.features import describe, parent_of
from toolkit.lifecycle.upstream import against_results, contract_findings
from toolkit.model import Pin, Series, parse_patch
from toolkit.project import Project
from toolkit.records.contract import CONTRACT_FEATURES
from toolkit.records.verdict import Verdict

EVIDENCE_FILE = "evidence.json"  # written by `vpatch rebase` beside the series it produced


def decide(project: Project, pin: Pin, series: Series | None) -> Verdict:
    """The verdict for `pin`; `series` is its loaded series, None when it has none or it does not load."""
    name = "vLLM" if pin.project == "vllm" else pin.project
    if not project.has_series(pin):
        return Verdict(None, 0, [], "no series yet (not rebased)")
    if series is None:
        return Verdict(None, 0, [], "unknown: the series does not load")
    findings = contract_findings(
        against_results(project.options.root, pin, patches_dir=project.options.patches_dir), str(pin.version)
    )
    lacks = {f: lacking for f, (passes, lacking, _) in sorted(findings.items()) if not passes}
    contracts = sorted({file for _, _, file in findings.values()}) or None
    lacking = (
        f"; stock {name} {pin.version} lacks: "
        + "; ".join(f"{feature} {', '.join(items)}" for feature, items in lacks.items())
        if lacks
        else ""
    )
    if series.patches:
        # sub-features grouped under their parent: "pd-disagg (failed-loads, nixl)"
        features = describe(p.feature or "(no feature)" for p in series.patches)
        count = len(series.patches)
        summary = f"dynamo-base needed ({count} active patch{'es' if count != 1 else ''}: {', '.join(features)})"
        return Verdict("dynamo-base", count, features, summary + lacking, None, lacks or None, contracts)
    records, unexplained = retirement_records(series.directory)
    unmet = _unmet_retired(series.directory, findings)
    if records and not unexplained and unmet:
        summary = f"empty series, but {', '.join(unmet)} retired without a passing contract{lacking}; not stock"
        return Verdict(None, 0, [], summary, records, lacks or None, contracts)
    if records and not unexplained:
        return Verdict(
            "stock",
            0,
            [],
            f"stock {name} {pin.version} provides every feature; recommended default{lacking}",
            records,
            lacks or None,
            contracts,
        )
    if unexplained:
        summary = f"empty series, but {', '.join(unexplained)} left without upstream evidence; not a verdict for stock"
    else:
        summary = "empty series, but no evidence.json or retired patches say why; not a verdict for stock"
    return Verdict(None, 0, [], summary, records)


def _unmet_retired(directory: Path, findings: dict[str, tuple[bool, list[str], str]]) -> list[str]:
    """Features of patches retired from this series that have a contract, no passing result, and were not
    forced (a forced retirement records its reason instead)."""
    unmet: set[str] = set()
    for path in sorted(directory.glob("retired/*.patch")):
        try:
            patch = parse_patch(path)
        except VpatchError:
            continue
        feature = parent_of(patch.feature or "")  # a retired sub-feature leaves its parent to its contract
        forced = (patch.header("Retired-Evidence") or "").startswith("forced:")
        if feature in CONTRACT_FEATURES and not forced and not findings.get(feature, (False,))[0]:
            unmet.add(feature)
    return sorted(unmet)


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
            evidence = json.loads(evidence_file.read_text(encoding="utf-8"))
            patches = evidence.get("patches", {})
            unexplained = sorted(n for n, e in patches.items() if not e.get("kept") and not e.get("upstream_signals"))
            if evidence.get("dropped") or evidence.get("earlier"):
                records.append(EVIDENCE_FILE)
        except (OSError, ValueError, AttributeError):
            pass
    for path in sorted([*directory.glob("*.patch"), *directory.glob("retired/*.patch")]):
        try:
            if parse_patch(path).header("Retired-Since") is not None:
                records.append(str(path.relative_to(directory)))
        except VpatchError:
            continue
    return records, unexplained
