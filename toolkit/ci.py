"""The main job (`vpatch ci`): for every pinned version, every step, each timed; the summary is always written.

Steps per version: pin-verify (every pinned file re-hashed, unless its stat stamp says nothing wrote to it
since it was last hashed in full), check (series lint, vLLM's own linters of the release on the lines the
patches wrote, zero-fuzz apply, re-export identical: toolkit/ci_check.py), build (the overlay wheel into
OUT/wheels), verify (contents, RECORD, installs with pip and uv, `import vllm`), conform-static, conform-cpu
and conform-engine (results in OUT/conform). A failing step fails the
job but the later steps that do not depend on it still run, and `OUT/ci-summary.json` is written with
the failure in it (the input of `vpatch report`).

What an earlier run produced is reused and the step says so (toolkit/ci_reuse.py: the wheel per
fingerprint, check/verify passes, conformance results by their inputs; `reuse=False` runs everything);
releases run side by side (`jobs`, threads: the steps' work is in other processes and I/O), each log line
prefixed with its release, and one failing release fails only its own steps.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import __version__, ui
from toolkit.cache import atomic_write_text, still_verified
from toolkit.ci_check import check_step
from toolkit.ci_reuse import Done, Store, WheelStore, conform_key, link_file, make_key, short, wheel_key
from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact
from toolkit.lint import patch_stats
from toolkit.model import Pin
from toolkit.project import Project
from toolkit.records import ci_summary as records
from toolkit.records.ci_summary import SCHEMA, SUMMARY_FILE, Lint, Step, Summary, Wheel, encode_summary
from toolkit.records.codec import RecordError
from toolkit.records.conformance import ConformanceResults
from toolkit.records.evidence import EVIDENCE_FILE, decode_evidence
from toolkit.records.status import Status
from toolkit.verdict import decide

MAX_JOBS = 4


def default_jobs() -> int:
    """Releases side by side: one per core, at most MAX_JOBS (each conformance tier is itself a few processes)."""
    return max(1, min(os.cpu_count() or 1, MAX_JOBS))


@dataclass
class VersionRun:
    pin: Pin
    steps: list[Step] = field(default_factory=list)
    wheel: Wheel | None = None
    conformance: dict[str, str] = field(default_factory=dict)
    apply: dict[str, str] = field(default_factory=dict)
    lint: Lint | None = None
    live: bool = True

    def step(self, name: str, action: Callable[[], str | Done], *, quiet: bool, needs: tuple[str, ...] = ()) -> bool:
        failed_needs = [s.name for s in self.steps if s.name in needs and s.status != Status.PASS]
        if failed_needs:
            self.steps.append(Step(name, Status.SKIPPED, 0.0, f"needs {', '.join(failed_needs)}"))
            return False
        start = time.perf_counter()
        done = Done("")
        try:
            with ui.step(f"{self.pin.label}: {name}", quiet=quiet, live=self.live) as mark:
                outcome = action()
                done = outcome if isinstance(outcome, Done) else Done(outcome)
                mark.note = "reused" if done.reused else ""
            status, detail = Status.PASS, done.detail
        except VpatchError as error:
            status, detail = Status.FAIL, error.render()
        except Exception as error:  # a crash in one step is that step's failure, not the job's end
            status, detail = Status.FAIL, f"{type(error).__name__}: {error}"
        seconds = round(time.perf_counter() - start, 3)
        self.steps.append(Step(name, status, seconds, detail, reused=done.reused, key=done.key))
        return status == Status.PASS


@dataclass
class Job:
    project: Project
    out_dir: Path
    quiet: bool
    tiers: tuple[str, ...]
    install_check: bool
    reuse: bool
    live: bool
    upstream_lint: bool = True  # the check step runs vLLM's own linters (`check --lint`); cold: minutes per release

    def store(self, kind: str) -> Store:
        return Store(self.project.options.cache_dir, kind, reuse=self.reuse)


def run_ci(
    project: Project,
    versions: list[str] | None,
    out_dir: Path,
    *,
    quiet: bool = False,
    tiers: tuple[str, ...] = ("static", "cpu", "engine"),
    install_check: bool = True,
    reuse: bool = True,
    jobs: int | None = None,
    upstream_lint: bool = True,
) -> Summary:
    started = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    pins = project.pins.select(versions)
    workers = max(1, min(jobs or default_jobs(), len(pins) or 1))
    # One live spinner at a time: side by side, every step logs its start and end lines instead.
    job = Job(project, out_dir, quiet, tiers, install_check, reuse, live=workers == 1, upstream_lint=upstream_lint)
    runs = [VersionRun(pin, live=job.live) for pin in pins]
    if workers == 1:
        for run in runs:
            _release(job, run)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vpatch-ci") as pool:
            for future in [pool.submit(_release, job, run) for run in runs]:
                future.result()
    summary = _summary(project, runs, started, workers)
    atomic_write_text(out_dir / SUMMARY_FILE, encode_summary(summary))
    return summary


def _release(job: Job, run: VersionRun) -> None:
    """Every step of one release; whatever goes wrong ends as a failed step of this release only."""
    try:
        with ui.side_by_side(f"[{run.pin.version}] ") if not job.live else contextlib.nullcontext():
            _steps(job, run)
    except Exception as error:  # outside any step (loading the series): recorded, the other releases go on
        run.steps.append(Step("release", Status.FAIL, 0.0, f"{type(error).__name__}: {error}"))


def _steps(job: Job, run: VersionRun) -> None:
    from toolkit.conformance.suite import patched_wheel

    project, pin, quiet = job.project, run.pin, job.quiet
    run.step("pin-verify", lambda: _pin_verify(job, pin), quiet=quiet)
    if not project.has_series(pin):
        return
    run.step("check", lambda: check_step(job, run), quiet=quiet)
    from toolkit.ci_stock import is_stock_release, stock_steps

    if is_stock_release(job, run):  # empty series, no stock wheel: stock + plugin on the CPU build's engines
        stock_steps(job, run)
        return
    built: dict = {}

    def build() -> Done:
        series = project.series(pin)
        key = wheel_key(pin, series)
        wheels = WheelStore(project.options.cache_dir, reuse=job.reuse)
        kept = wheels.reuse_into(key, job.out_dir / "wheels")
        if kept is not None:
            path, entry = kept
            built.update(path=path, sha256=entry["sha256"])
            _conform_uses(patched_wheel(project, pin, series, built=path), path)
            wheels.restamp(key)
            run.wheel = Wheel(path.name, _wheel_version(path.name), entry["sha256"], entry["size"], 0.0)
            return Done(f"reused (fingerprint {short(key)}): {path.name}", key, reused=True)
        from toolkit.wheel.overlay import build_overlay

        wheel = build_overlay(project, pin, job.out_dir / "wheels")
        built.update(path=wheel.path, sha256=wheel.sha256)
        _conform_uses(patched_wheel(project, pin, series, built=wheel.path), wheel.path)
        wheels.keep(key, wheel.path, wheel.sha256)
        run.wheel = Wheel(wheel.path.name, str(wheel.version), wheel.sha256, wheel.size, round(wheel.seconds, 3))
        return Done(f"{wheel.path.name} in {wheel.seconds:.2f}s", key)

    run.step("build", build, quiet=quiet)
    run.step("verify", lambda: _verify(job, built), quiet=quiet, needs=("build",))
    for tier in job.tiers:

        def conform(tier: str = tier) -> Done:
            return _conform(job, run, tier, built.get("sha256"))

        run.step(f"conform-{tier}", conform, quiet=quiet)


def _conform_uses(kept: Path, wheel: Path) -> None:
    """Conform takes the series' wheel from its cache (one per fingerprint): make that this build's wheel
    (not a rebuild), also over an older build of the same fingerprint (another vpatch made other bytes)."""
    if kept.name == wheel.name and not os.path.samefile(kept, wheel):
        link_file(wheel, kept)


def _wheel_version(filename: str) -> str:
    return filename.split("-")[1]


def _pin_verify(job: Job, pin: Pin) -> Done:
    artifacts = [*([pin.sdist] if pin.sdist else []), *pin.wheels, *(w for f in pin.flavors for w in f.wheels)]
    cache_dir = job.project.options.cache_dir
    from toolkit.index import cached_path

    if job.reuse and artifacts and all(still_verified(cached_path(cache_dir, a), a.sha256) for a in artifacts):
        return Done(f"reused (stat stamps): {len(artifacts)} pinned files unchanged since hashed", reused=True)
    for artifact in artifacts:
        fetch_artifact(cache_dir, artifact, quiet=job.quiet, rehash=True)
    return Done(f"{len(artifacts)} pinned files re-hashed")


def _verify(job: Job, built: dict) -> Done:
    key = make_key("verify", [built["sha256"], job.install_check])
    store = job.store("verify")
    if (entry := store.get(key)) is not None:
        return Done(f"reused (wheel sha256 {short(built['sha256'])}): {entry['detail']}", key, reused=True)
    from toolkit.wheel.verify import verify_wheel

    report = verify_wheel(built["path"], job.project, install=job.install_check)
    failed = [c for c in report.checks if not c.ok]
    if failed:
        raise VpatchError("; ".join(f"{c.name}: {c.detail}" for c in failed))
    detail = f"{len(report.checks)} checks passed"
    store.put(key, {"detail": detail})
    return Done(detail, key)


def _conform(job: Job, run: VersionRun, tier: str, wheel_sha256: str | None) -> Done:
    from toolkit.conformance.suite import run_conformance

    project, pin = job.project, run.pin
    series = project.series(pin)
    # The engine tier builds its own wheels from the series and the pinned CPU build (all in the key).
    key = conform_key(pin, series, tier, None if tier == "engine" else wheel_sha256)
    store = job.store("conform")
    name = f"{pin.series_dirname}-{tier}.json"
    if wheel_sha256 is not None or tier == "engine":
        entry = store.get(key)
        record = _kept_results(entry)
        if entry is not None and record is not None:
            atomic_write_text(job.out_dir / "conform" / name, entry["results"])
            run.conformance[tier] = f"conform/{name}"
            return Done(f"reused (key {short(key)}): {_conform_detail(record)}", key, reused=True)
    result = run_conformance(project, pin, tier, job.out_dir / "conform", reuse=job.reuse)
    run.conformance[tier] = f"conform/{result.path.name}"
    failed = [c.name for c in result.record.failed]
    if failed:
        raise VpatchError(f"failed checks: {', '.join(failed)}")
    patched = result.record.patched
    # kept only when it ran on the wheel its key names (the conform cache may hold an older build)
    if tier == "engine" or (wheel_sha256 is not None and patched is not None and patched.sha256 == wheel_sha256):
        store.put(key, {"results": result.path.read_text(encoding="utf-8")})
    return Done(_conform_detail(result.record), key)


def _kept_results(entry: dict | None) -> ConformanceResults | None:
    from toolkit.records.conformance import decode_results

    try:
        return decode_results(entry["results"]) if entry is not None else None
    except (RecordError, KeyError, TypeError):  # a damaged entry is a miss: the tier runs again
        return None


def _conform_detail(record: ConformanceResults) -> str:
    if all(c.status == Status.NOT_APPLICABLE for c in record.checks):
        return "not applicable: " + "; ".join(c.detail for c in record.checks)
    return f"{len(record.checks)} checks, none failed"


def _summary(project: Project, runs: list[VersionRun], started: float, jobs: int) -> Summary:
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
                lint=run.lint,
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
        jobs=jobs,
    )


def _rebase_outcomes(evidence: Path) -> dict[str, str | None]:
    """Each patch's outcome in the rebase that produced this series (clean, merged, ...), when there was one."""
    try:
        patches = decode_evidence(evidence.read_bytes()).patches
    except (OSError, RecordError):
        return {}
    return {name: entry.outcome.value for name, entry in patches.items()}
