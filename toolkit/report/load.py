"""Read the report's inputs into its model (toolkit/report/model.py), by the schemas their writers use.

The input is the directory `vpatch ci` wrote: `ci-summary.json` (toolkit/records/ci_summary.py) and the
conformance results it points to (`conform/<project>-<version>-<tier>.json`, toolkit/records/
conformance.py, relative to the input directory); the retirement evidence (`patches/<project>-<version>/
evidence.json`) is relative to the project root.

A summary that is missing, not JSON, of another schema or of the wrong shape is an error (`VpatchError`,
one line naming the file and the field by its path, e.g. `$.versions[1].steps[3].status`). A conformance
or evidence file that is missing or unreadable is not: the report shows the problem where the results
would have been (`error` on the loaded record).
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.records import ci_summary
from toolkit.records.ci_summary import SUMMARY_FILE
from toolkit.records.codec import RecordError, read_document
from toolkit.records.conformance import decode_results
from toolkit.report.evidence import load_evidence
from toolkit.report.model import Conformance, Feature, Patch, Report, Series, Version

__all__ = ["SUMMARY_FILE", "TIER_ORDER", "Patch", "Series", "load_report"]

TIER_ORDER = ("static", "cpu", "gpu", "engine")


def load_report(input_dir: Path, root: Path) -> Report:
    """Read INPUT/ci-summary.json and everything it points to; evidence paths are relative to `root`."""
    path = input_dir / SUMMARY_FILE
    if not input_dir.is_dir():
        raise VpatchError("no such directory (the output directory of `vpatch ci`)", path=input_dir)
    if not path.exists():
        raise VpatchError("not found: run `vpatch ci` first, or point -i at its output directory", path=path)
    try:
        summary = ci_summary.decode_summary(read_document(path))
    except RecordError as exc:
        raise VpatchError(str(exc), path=path, line=exc.line) from None
    except (OSError, ValueError) as exc:
        raise VpatchError(str(exc), path=path) from None
    return Report(
        project=summary.project,
        toolkit=summary.toolkit,
        started=summary.started,
        seconds=float(summary.seconds),
        ok=summary.ok,
        features=tuple(
            Feature(name, entry.description, entry.native_since, entry.upstream, entry.parent)
            for name, entry in sorted(summary.features.items())
        ),
        versions=tuple(_version(run, input_dir, root) for run in summary.versions),
    )


def _version(run: ci_summary.VersionRun, input_dir: Path, root: Path) -> Version:
    paths = run.conformance or {}
    tiers = sorted(paths, key=lambda t: (TIER_ORDER.index(t) if t in TIER_ORDER else len(TIER_ORDER), t))
    series = run.series
    return Version(
        version=run.version,
        verdict=run.verdict.summary if run.verdict else "no verdict recorded",
        decision=run.verdict,
        series=Series(series.fingerprint, tuple(series.patches), run.version) if series else None,
        steps=tuple(run.steps),
        wheel=run.wheel,
        conformance=tuple(_conformance(input_dir, paths[t], run.version, t) for t in tiers),
        evidence=load_evidence(root, run.evidence) if run.evidence else None,
    )


def _conformance(input_dir: Path, rel: str, version: str, tier: str) -> Conformance:
    try:
        results = decode_results(read_document(input_dir / rel))
    except RecordError as exc:
        where = f"{rel}:{exc.line}" if exc.line is not None else rel
        return Conformance(tier, rel, f"{where}: {exc}")
    except (OSError, ValueError) as exc:
        return Conformance(tier, rel, f"{rel}: {exc}")
    if (results.version, results.tier) != (version, tier):
        return Conformance(
            tier, rel, f"{rel}: holds the results of {results.version} {results.tier}, not {version} {tier}"
        )
    return Conformance(tier, rel, results=results)
