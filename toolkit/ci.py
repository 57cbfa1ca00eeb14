"""The main job (`vpatch ci`): for every pinned version, every step, each timed; the summary is always written.

Steps per version: pin-verify (every pinned file re-hashed), check (lint, zero-fuzz apply, re-export
identical), build (the overlay wheel into OUT/wheels), verify (contents, RECORD, installs with pip and
uv, `import vllm`), conform-static, conform-cpu and conform-engine (results in OUT/conform). A failing step fails the
job but the later steps that do not depend on it still run, and `OUT/ci-summary.json` is written with
the failure in it (the input of `vpatch report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import __version__, ui
from toolkit.cache import atomic_write_text
from toolkit.check import check_pin
from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact
from toolkit.lint import patch_stats
from toolkit.model import Pin
from toolkit.project import Project
from toolkit.records import ci_summary as records
from toolkit.records.ci_summary import SCHEMA, SUMMARY_FILE, Step, Summary, Wheel, encode_summary
from toolkit.records.codec import RecordError
from toolkit.records.evidence import EVIDENCE_FILE, decode_evidence
from toolkit.records.status import Status
from toolkit.verdict import decide


@dataclass
class VersionRun:
    pin: Pin
    steps: list[Step] = field(default_factory=list)
    wheel: Wheel | None = None
    conformance: dict[str, str] = field(default_factory=dict)
    apply: dict[str, str] = field(default_factory=dict)

    def step(self, name: str, action: Callable[[], str], *, quiet: bool, needs: tuple[str, ...] = ()) -> bool:
        failed_needs = [s.name for s in self.steps if s.name in needs and s.status != Status.PASS]
        if failed_needs:
            self.steps.append(Step(name, Status.SKIPPED, 0.0, f"needs {', '.join(failed_needs)}"))
            return False
        start = time.perf_counter()
        try:
            with ui.step(f"{self.pin.label}: {name}", quiet=quiet):
                detail = action()
            status = Status.PASS
        except VpatchError as error:
            status, detail = Status.FAIL, error.render()
        except Exception as error:  # a crash in one step is that step's failure, not the job's end
            status, detail = Status.FAIL, f"{type(error).__name__}: {error}"
        self.steps.append(Step(name, status, round(time.perf_counter() - start, 3), detail))
        return status == Status.PASS


def run_ci(
    project: Project,
    versions: list[str] | None,
    out_dir: Path,
    *,
    quiet: bool = False,
    tiers: tuple[str, ...] = ("static", "cpu", "engine"),
    install_check: bool = True,
) -> Summary:
    from toolkit.conformance.suite import patched_wheel, run_conformance
    from toolkit.wheel.overlay import build_overlay
    from toolkit.wheel.verify import verify_wheel

    started = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for pin in project.pins.select(versions):
        run = VersionRun(pin)
        runs.append(run)

        def pin_verify(pin: Pin = pin) -> str:
            artifacts = [*([pin.sdist] if pin.sdist else []), *pin.wheels]
            for artifact in artifacts:
                fetch_artifact(project.options.cache_dir, artifact, quiet=quiet, rehash=True)
            return f"{len(artifacts)} pinned files re-hashed"

        run.step("pin-verify", pin_verify, quiet=quiet)
        if not project.has_series(pin):
            continue

        def check(pin: Pin = pin, run: VersionRun = run) -> str:
            problems, facts = check_pin(project, pin, wheels=False)
            series = project.series(pin)
            failing = {p.path.name for p in problems}
            run.apply = {p.name: ("failed" if p.name in failing else "clean") for p in series.patches}
            if problems:
                raise VpatchError("; ".join(p.render() for p in problems[:5]))
            return f"{facts['patches']} patches: lint clean, zero-fuzz apply, re-export identical"

        run.step("check", check, quiet=quiet)
        built: dict = {}

        def build(pin: Pin = pin, run: VersionRun = run, built: dict = built) -> str:
            wheel = build_overlay(project, pin, out_dir / "wheels")
            built["path"] = wheel.path
            patched_wheel(project, pin, project.series(pin), built=wheel.path)  # conform uses it, not a rebuild
            run.wheel = Wheel(wheel.path.name, str(wheel.version), wheel.sha256, wheel.size, round(wheel.seconds, 3))
            return f"{wheel.path.name} in {wheel.seconds:.2f}s"

        run.step("build", build, quiet=quiet)

        def verify(built: dict = built) -> str:
            report = verify_wheel(built["path"], project, install=install_check)
            failed = [c for c in report.checks if not c.ok]
            if failed:
                raise VpatchError("; ".join(f"{c.name}: {c.detail}" for c in failed))
            return f"{len(report.checks)} checks passed"

        run.step("verify", verify, quiet=quiet, needs=("build",))
        for tier in tiers:

            def conform(tier: str = tier, pin: Pin = pin, run: VersionRun = run) -> str:
                result = run_conformance(project, pin, tier, out_dir / "conform")
                run.conformance[tier] = f"conform/{result.path.name}"
                failed = [c.name for c in result.record.failed]
                if failed:
                    raise VpatchError(f"failed checks: {', '.join(failed)}")
                if all(c.status == Status.NOT_APPLICABLE for c in result.record.checks):
                    return "not applicable: " + "; ".join(c.detail for c in result.record.checks)
                return f"{len(result.record.checks)} checks, none failed"

            run.step(f"conform-{tier}", conform, quiet=quiet)
    summary = _summary(project, runs, started)
    atomic_write_text(out_dir / SUMMARY_FILE, encode_summary(summary))
    return summary


def _summary(project: Project, runs: list[VersionRun], started: float) -> Summary:
    versions = []
    for run in runs:
        series = None
        loaded = None
        if project.has_series(run.pin):
            loaded = project.series(run.pin)
            rebase_outcomes = _rebase_outcomes(project.series_dir(run.pin) / EVIDENCE_FILE)
            patches = []
            for patch in loaded.patches:
                added, removed = patch_stats(patch)
                patches.append(
                    records.Patch(
                        name=patch.name,
                        subject=patch.subject,
                        feature=patch.feature,
                        upstream_status=patch.upstream_status_text,
                        files=list(patch.touched_paths),
                        added_lines=added,
                        removed_lines=removed,
                        apply=run.apply.get(patch.name),
                        rebase=rebase_outcomes.get(patch.name),
                        retired_since=patch.header("Retired-Since"),
                    )
                )
            series = records.Series(loaded.fingerprint(), patches)
        evidence = project.series_dir(run.pin) / EVIDENCE_FILE
        versions.append(
            records.VersionRun(
                version=str(run.pin.version),
                verdict=decide(project, run.pin, loaded),
                series=series,
                steps=run.steps,
                wheel=run.wheel,
                conformance=run.conformance,
                evidence=str(evidence.relative_to(project.options.root)) if evidence.exists() else None,
            )
        )
    return Summary(
        schema=SCHEMA,
        toolkit=__version__,
        project=project.pins.project,
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        seconds=round(time.time() - started, 3),
        ok=all(s.status != Status.FAIL for r in runs for s in r.steps),
        features={name: records.Feature(**info) for name, info in project.pins.feature_info.items()},
        versions=versions,
    )


def _rebase_outcomes(evidence: Path) -> dict[str, str | None]:
    """Each patch's outcome in the rebase that produced this series (clean, merged, ...), when there was one."""
    try:
        patches = decode_evidence(evidence.read_bytes()).patches
    except (OSError, RecordError):
        return {}
    return {name: entry.outcome.value for name, entry in patches.items()}
