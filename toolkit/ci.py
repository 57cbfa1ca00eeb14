"""The main job (`vpatch ci`): for every pinned version, every step, each timed; the summary is always written.

Steps per version: pin-verify (every pinned file re-hashed), check (lint, zero-fuzz apply, re-export
identical), build (the overlay wheel into OUT/wheels), verify (contents, RECORD, installs with pip and
uv, `import vllm`), conform-static and conform-cpu (results in OUT/conform). A failing step fails the
job but the later steps that do not depend on it still run, and `OUT/ci-summary.json` is written with
the failure in it (the input of `vpatch report`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import __version__, ui
from toolkit.cache import atomic_write_text
from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact
from toolkit.model import Patch, Pin
from toolkit.project import Project

SCHEMA = 1


@dataclass
class VersionRun:
    pin: Pin
    steps: list[dict] = field(default_factory=list)
    wheel: dict | None = None
    conformance: dict = field(default_factory=dict)
    apply: dict[str, str] = field(default_factory=dict)

    def step(self, name: str, action: Callable[[], str], *, quiet: bool, needs: tuple[str, ...] = ()) -> bool:
        failed_needs = [s["name"] for s in self.steps if s["name"] in needs and s["status"] != "pass"]
        if failed_needs:
            self.steps.append(
                {"name": name, "status": "skipped", "seconds": 0.0, "detail": f"needs {', '.join(failed_needs)}"}
            )
            return False
        start = time.perf_counter()
        try:
            with ui.step(f"{self.pin.label}: {name}", quiet=quiet):
                detail = action()
            status = "pass"
        except VpatchError as error:
            status, detail = "fail", error.render()
        except Exception as error:  # a crash in one step is that step's failure, not the job's end
            status, detail = "fail", f"{type(error).__name__}: {error}"
        self.steps.append(
            {"name": name, "status": status, "seconds": round(time.perf_counter() - start, 3), "detail": detail}
        )
        return status == "pass"


def patch_stats(patch: Patch) -> tuple[int, int]:
    added = removed = 0
    in_hunk = False
    for line in patch.data.decode("utf-8", "replace").split("\n"):
        if line.startswith("diff --git "):
            in_hunk = False
        elif line.startswith("@@ "):
            in_hunk = True
        elif in_hunk and line.startswith("+"):
            added += 1
        elif in_hunk and line.startswith("-"):
            removed += 1
    return added, removed


def run_ci(
    project: Project,
    versions: list[str] | None,
    out_dir: Path,
    *,
    quiet: bool = False,
    tiers: tuple[str, ...] = ("static", "cpu"),
    install_check: bool = True,
) -> dict:
    from toolkit.commands.check import check_pin
    from toolkit.conformance.suite import run_conformance
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
            run.wheel = {
                "file": wheel.path.name,
                "version": str(wheel.version),
                "sha256": wheel.sha256,
                "size": wheel.size,
                "seconds": round(wheel.seconds, 3),
            }
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
                run.conformance[tier] = f"conform/{pin.series_dirname}-{tier}.json"
                failed = [c["name"] for c in result.data["checks"] if c["status"] == "fail"]
                if failed:
                    raise VpatchError(f"failed checks: {', '.join(failed)}")
                return f"{len(result.data['checks'])} checks, none failed"

            run.step(f"conform-{tier}", conform, quiet=quiet)
    summary = _summary(project, runs, started)
    atomic_write_text(out_dir / "ci-summary.json", json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def _summary(project: Project, runs: list[VersionRun], started: float) -> dict:
    from toolkit.commands.status import collect

    status_rows = {row["version"]: row for row in collect(project, [str(r.pin.version) for r in runs])}
    versions = []
    for run in runs:
        series = None
        if project.has_series(run.pin):
            parsed = project.series(run.pin)
            rebase_outcomes = _rebase_outcomes(project.series_dir(run.pin) / "evidence.json")
            patches = []
            for patch in parsed.patches:
                added, removed = patch_stats(patch)
                status = patch.upstream_status_text
                patches.append(
                    {
                        "name": patch.name,
                        "subject": patch.subject,
                        "feature": patch.feature,
                        "upstream_status": status,
                        "files": list(patch.touched_paths),
                        "added_lines": added,
                        "removed_lines": removed,
                        "apply": run.apply.get(patch.name),
                        "rebase": rebase_outcomes.get(patch.name),
                        "retired_since": patch.header("Retired-Since"),
                    }
                )
            series = {"fingerprint": parsed.fingerprint(), "patches": patches}
        row = status_rows.get(str(run.pin.version), {})
        evidence = project.series_dir(run.pin) / "evidence.json"
        versions.append(
            {
                "version": str(run.pin.version),
                "verdict": row.get("verdict", {}).get("summary")
                if isinstance(row.get("verdict"), dict)
                else row.get("verdict") or _verdict(series),
                "series": series,
                "steps": run.steps,
                "wheel": run.wheel,
                "conformance": run.conformance,
                "evidence": str(evidence.relative_to(project.options.root)) if evidence.exists() else None,
            }
        )
    return {
        "schema": SCHEMA,
        "toolkit": __version__,
        "project": project.pins.project,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
        "ok": all(s["status"] != "fail" for r in runs for s in r.steps),
        "features": project.pins.feature_info,
        "versions": versions,
    }


def _rebase_outcomes(evidence: Path) -> dict[str, str | None]:
    """Each patch's outcome in the rebase that produced this series (clean, merged, ...), when there was one."""
    try:
        patches = json.loads(evidence.read_text(encoding="utf-8")).get("patches", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {name: entry.get("outcome") for name, entry in patches.items() if isinstance(entry, dict)}


def _verdict(series: dict | None) -> str:
    if series is None:
        return "no series yet (not rebased)"
    if not series["patches"]:
        return "stock vLLM provides every feature; recommended default"
    features = sorted({p["feature"] for p in series["patches"]})
    return f"dynamo-base needed ({len(series['patches'])} active patches: {', '.join(features)})"
