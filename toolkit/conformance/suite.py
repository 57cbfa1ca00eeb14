"""`vpatch conform VERSION`: stock vLLM vs dynamo-base, check by check, results as JSON.

Tiers:
- static: the series applies to its base; the public API only grows (read statically from both wheels).
- cpu:    static, plus the scenario runner in two real venvs (stock wheel, overlay wheel), each with CPU
          torch: parity with every feature off, non-interference with KV events on, the KV index rebuilt
          from events equals the cached map after every step, no block leaks.
- gpu:    token-level greedy parity on a real small model (docs/conformance.md). Its code path is kept but
          it cannot run on these machines: it reports not-applicable with the reason instead of passing.
- engine: real V1 engines on CPU (the pinned CPU build, and dynamo-base built over it) on the tiny model:
          parity, kv-routing over ZMQ, P/D through each CPU transport and the OpenAI server
          (toolkit/conformance/engine_tier.py); not-applicable, with the measured reason, where none runs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit import __version__
from toolkit.apply import apply_series
from toolkit.cache import atomic_write_text, sha256_file
from toolkit.conformance.api_surface import compare
from toolkit.conformance.checks import (
    FAIL,
    NOT_APPLICABLE,
    PASS,
    CheckList,
    CheckResult,
    compare_traces,
    kv_index_invariant,
    no_block_leaks,
)
from toolkit.conformance.envs import read_trace, run_pd, run_runner, vllm_env
from toolkit.conformance.pdchecks import pd_checks
from toolkit.conformance.stock_runs import StockRuns, stock_run_key
from toolkit.conformance.surface_cache import kept_surface
from toolkit.conformance.upstream_tests import (
    compare_outcomes,
    ensure_pytest,
    run_series_tests,
    run_upstream_tests,
    series_test_files,
    series_tests_result,
)
from toolkit.errors import VpatchError
from toolkit.features import parent_of
from toolkit.index import fetch_artifact
from toolkit.model import Pin, Series
from toolkit.project import Project
from toolkit.records.conformance import SCHEMA, ConformanceResults, SeriesRef, WheelRef, encode_results
from toolkit.wheel.overlay import build_overlay

TIERS = ("static", "cpu", "gpu", "engine")
EVENTS_NULL = {"enable_kv_cache_events": True, "publisher": "null"}
# Trace fields only a build with KV events on fills: the batches, their seq and the publisher class vLLM built.
EVENTS_ON_FIELDS = ("events", "event_seq", "publisher")
GPU_UNAVAILABLE = (
    "cannot run here: these machines have no GPU, and the GPU machine has no network and a 64 MiB upload "
    "limit, so vLLM's wheel and its CUDA dependencies cannot be brought to it"
)


@dataclass
class ConformanceResult:
    """One tier's results as written to `path` (the record of toolkit/records/conformance.py)."""

    record: ConformanceResults
    path: Path

    @property
    def version(self) -> str:
        return self.record.version

    @property
    def tier(self) -> str:
        return self.record.tier

    @property
    def ok(self) -> bool:
        return self.record.ok


def patched_wheel(project: Project, pin: Pin, series: Series, *, built: Path | None = None) -> Path:
    """The overlay wheel of the series, built once per fingerprint into the cache. `built`: the same overlay
    wheel made already (`vpatch ci`'s build step; overlay builds are byte-reproducible), kept instead of
    building it a second time."""
    directory = project.options.cache_dir / "wheels" / f"{pin.series_dirname}-{series.fingerprint()}"
    existing = sorted(directory.glob("*.whl"))
    if existing:
        return existing[0]
    staging = directory.with_name(directory.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    if built is not None:
        staging.mkdir(parents=True)
        try:
            os.link(built, staging / built.name)
        except OSError:  # another file system
            shutil.copyfile(built, staging / built.name)
        name = built.name
    else:
        name = build_overlay(project, pin, staging).path.name
    staging.rename(directory)
    return directory / name


def run_conformance(
    project: Project,
    pin: Pin,
    tier: str,
    out_dir: Path,
    *,
    engine_parts: tuple[str, ...] | None = None,
    reuse: bool = True,
) -> ConformanceResult:
    """`reuse`: the stock side of the cpu tier may be reused from an earlier run of the same inputs
    (toolkit/conformance/stock_runs.py); False runs it again."""
    if tier not in TIERS:
        raise VpatchError(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})")
    started = time.time()
    checks = CheckList()
    series = project.series(pin) if project.has_series(pin) else None
    info: dict[str, WheelRef | None] = {"stock": None, "patched": None}
    if series is None:
        checks.add(CheckResult("series-applies", FAIL, f"no series for {pin.label}"))
        return _finish(project, pin, tier, series, checks, info, started, out_dir)
    if not series.patches and (tier == "engine" or not pin.wheels):
        from toolkit.stock_default import empty_series_reason

        how = f"; its evidence: `vpatch conform {pin.version} --tier engine --new-kind stock+plugin`"
        checks.add(CheckResult("dynamo-base", NOT_APPLICABLE, empty_series_reason(pin) + how))
        return _finish(project, pin, tier, series, checks, info, started, out_dir)
    if tier != "engine" and not pin.wheels:
        why = f"{pin.label} is pinned without a stock wheel (--no-wheel): the {tier} tier compares with it"
        checks.add(
            CheckResult("wheels", FAIL, why + f"; `vpatch conform {pin.version} --tier engine` runs on its CPU build")
        )
        return _finish(project, pin, tier, series, checks, info, started, out_dir)
    if tier == "engine":  # its own builds: the CPU wheel and dynamo-base over it (toolkit/conformance/engine_tier.py)
        from toolkit.conformance.engine_tier import PARTS, run_engine_tier

        work = out_dir / "engine" / pin.series_dirname
        run_engine_tier(project, pin, checks, info, work, engine_parts or PARTS)
        return _finish(project, pin, tier, series, checks, info, started, out_dir)

    def applies() -> CheckResult:
        with project.scratch_checkout(pin) as checkout:
            result = apply_series(checkout, series)
        stopped = result.stopped_at
        if stopped is not None:
            return CheckResult("series-applies", FAIL, f"{stopped.name}: " + "; ".join(stopped.details))
        return CheckResult("series-applies", PASS, f"{len(series.patches)} patches apply with zero fuzz")

    checks.run("series-applies", applies)
    wheels: dict[str, Path] = {}
    shas: dict[str, str] = {}  # the wheels' sha256 (stock: the pin's, which fetch_artifact verified)

    def get_wheels() -> CheckResult:
        wheels["stock"] = fetch_artifact(project.options.cache_dir, pin.wheels[0], quiet=True)
        wheels["patched"] = patched_wheel(project, pin, series)
        info["stock"] = WheelRef(pin.wheels[0].file, pin.wheels[0].sha256)
        shas["stock"], shas["patched"] = pin.wheels[0].sha256, sha256_file(wheels["patched"])
        info["patched"] = WheelRef(wheels["patched"].name, shas["patched"], series.fingerprint())
        return CheckResult("wheels", PASS, f"stock {wheels['stock'].name}, dynamo-base {wheels['patched'].name}")

    checks.run("wheels", get_wheels)
    if "patched" in shas:
        checks.run("api-surface", lambda: _api_surface(project, wheels, shas, series, pin.project, reuse))
    else:
        checks.add(CheckResult("api-surface", FAIL, "no wheels to compare (see the wheels check)"))

    if tier in ("cpu", "gpu"):
        _cpu_tier(project, pin, checks, wheels, out_dir, StockRuns(project.options.cache_dir, reuse=reuse))
    if tier == "gpu":
        checks.add(CheckResult("gpu-greedy-parity", NOT_APPLICABLE, GPU_UNAVAILABLE))
    return _finish(project, pin, tier, series, checks, info, started, out_dir)


def _api_surface(
    project: Project, wheels: dict[str, Path], shas: dict[str, str], series: Series, package: str, reuse: bool
) -> CheckResult:
    """The patched wheel's public API against stock's; each wheel's surface is kept per sha256 (surface_cache)."""
    declared = {api.split()[0] for p in series.patches if (api := p.header("API-Change"))}
    cache = project.options.cache_dir
    stock = kept_surface(cache, wheels["stock"], shas["stock"], package, reuse=reuse)
    diff = compare(stock, kept_surface(cache, wheels["patched"], shas["patched"], package, reuse=reuse))
    undeclared = [s for s in (*diff.removed, *diff.changed_incompatibly) if s not in declared]
    detail = (
        f"{len(diff.added)} symbols added, {len(diff.changed_compatibly)} signatures extended compatibly, "
        f"{len(diff.removed)} removed, {len(diff.changed_incompatibly)} changed incompatibly"
    )
    if undeclared:
        lines = [f"- {s} (removed)" for s in diff.removed if s in undeclared]
        lines += [f"~ {s} (incompatible signature)" for s in diff.changed_incompatibly if s in undeclared]
        return CheckResult(
            "api-surface", FAIL, detail + "; not declared by any patch's API-Change header", "\n".join(lines)
        )
    return CheckResult("api-surface", PASS, detail, "\n".join(f"+ {s}" for s in diff.added[:200]))


def _cpu_tier(
    project: Project, pin: Pin, checks: CheckList, wheels: dict[str, Path], out_dir: Path, stock_runs: StockRuns
) -> None:
    features = {parent_of(p.feature) for p in project.series(pin).patches}  # sub-features count as the parent
    has_pd, has_kv_events = "pd-disagg" in features, "kv-routing" in features
    envs: dict[str, Path] = {}
    for label in ("stock", "patched"):

        def build_env(label: str = label) -> CheckResult:
            if label not in wheels:
                return CheckResult(f"env-{label}", FAIL, f"no {label} wheel (see the wheels check)")
            sha = pin.wheels[0].sha256 if label == "stock" else None
            # dynamo-base with P/D patches gets NIXL, its fast transport, to test it for real.
            nixl = label == "patched" and has_pd
            # dynamo-base's venv is a thin layer of hard links over stock's (built first, just above)
            over = envs.get("stock") if label == "patched" else None
            envs[label] = vllm_env(project.options.cache_dir, wheels[label], sha256=sha, nixl=nixl, over=over)
            ensure_pytest(envs[label])  # before the stock runs' keys are taken: upstream-tests needs it anyway
            return CheckResult(f"env-{label}", PASS, str(envs[label]))

        checks.run(f"env-{label}", build_env)
    traces: dict[str, list[dict]] = {}
    trace_dir = out_dir / "traces"
    trace_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, tuple[str, dict | None]] = {"stock": ("stock", None), "patched-off": ("patched", None)}
    if has_kv_events:
        runs["patched-events"] = ("patched", EVENTS_NULL)
    for name, (env_label, kv_events) in runs.items():

        def run(name: str = name, env_label: str = env_label, kv_events: dict | None = kv_events) -> CheckResult:
            if env_label not in envs:
                return CheckResult(f"run-{name}", FAIL, f"no {env_label} venv (see env-{env_label})")
            out = trace_dir / f"{pin.series_dirname}-{name}.jsonl"
            kept = None
            if name == "stock":  # what the runner does with its defaults: kv-events off, sha256 block hashes
                key = stock_run_key("runner", envs["stock"], pin.wheels[0].sha256, [None, "sha256"])
                kept = stock_runs.produce(key, out, lambda out: run_runner(envs["stock"], out, kv_events=None))
            else:
                run_runner(envs[env_label], out, kv_events=kv_events)
            traces[name] = read_trace(out)
            note = f"; {kept.note()}" if kept else ""
            return CheckResult(f"run-{name}", PASS, f"{len(traces[name])} trace lines → {out.name}{note}")

        checks.run(f"run-{name}", run)

    def needs(*names: str) -> str | None:
        missing = [n for n in names if n not in traces]
        return f"missing trace(s) {', '.join(missing)} (see the run checks)" if missing else None

    def parity() -> CheckResult:
        if why := needs("stock", "patched-off"):
            return CheckResult("parity", FAIL, why)
        return compare_traces(
            "parity", traces["stock"], traces["patched-off"], label_a="stock", label_b="dynamo-base (features off)"
        )

    def non_interference() -> CheckResult:
        if why := needs("stock", "patched-events"):
            return CheckResult("non-interference", FAIL, why)
        return compare_traces(
            "non-interference",
            traces["stock"],
            traces["patched-events"],
            label_a="stock",
            label_b="dynamo-base (KV events on)",
            ignore=EVENTS_ON_FIELDS,
        )

    def invariant() -> CheckResult:
        if why := needs("patched-events"):
            return CheckResult("kv-index-invariant", FAIL, why)
        return kv_index_invariant(traces["patched-events"])

    def leaks() -> CheckResult:
        if not traces:
            return CheckResult("no-block-leaks", FAIL, "no traces (see the run checks)")
        return no_block_leaks(traces)

    checks.run("parity", parity)
    if has_kv_events:
        checks.run("non-interference", non_interference)
        checks.run("kv-index-invariant", invariant)
    else:
        # Retired (or never carried): stock vLLM's own events are checked by `conform NEW --against OLD`.
        why = "the series has no kv-routing patches"
        checks.add(CheckResult("non-interference", NOT_APPLICABLE, why))
        checks.add(CheckResult("kv-index-invariant", NOT_APPLICABLE, why))
    checks.run("no-block-leaks", leaks)
    _pd_checks(pin, has_pd, checks, envs, trace_dir, stock_runs)

    def upstream_tests() -> CheckResult:
        if "stock" not in envs or "patched" not in envs:
            return CheckResult("upstream-tests", FAIL, "a venv is missing (see the env checks)")
        base = project.base(pin)
        scratch = project.options.cache_dir / "tmp"
        out = trace_dir / f"{pin.series_dirname}-upstream-tests-stock.json"

        def run_stock(out: Path) -> None:
            atomic_write_text(out, json.dumps(run_upstream_tests(envs["stock"], base, scratch), indent=1) + "\n")

        key = stock_run_key("upstream-tests", envs["stock"], pin.wheels[0].sha256, [base.commit])
        kept = stock_runs.produce(key, out, run_stock)
        stock = json.loads(out.read_text(encoding="utf-8"))
        patched = run_upstream_tests(envs["patched"], base, scratch)
        result = compare_outcomes(stock, patched)
        if kept:
            result.detail += f"; {kept.note()}"
        return result

    checks.run("upstream-tests", upstream_tests)

    def series_tests() -> CheckResult:
        files = series_test_files(project.series(pin))
        if not files:
            return CheckResult("series-tests", NOT_APPLICABLE, "the series ships no tests")
        if "patched" not in envs:
            return CheckResult("series-tests", FAIL, "no dynamo-base venv (see env-patched)")
        with project.scratch_checkout(pin) as checkout:
            if not apply_series(checkout, project.series(pin)).ok:
                return CheckResult("series-tests", FAIL, "the series does not apply (see series-applies)")
            outcomes = run_series_tests(envs["patched"], checkout.path, files, project.options.cache_dir / "tmp")
        return series_tests_result(files, outcomes)

    checks.run("series-tests", series_tests)


PD_CHECKS = ("pd-disagg-outputs", "pd-no-leaks", "pd-failure-paths", "pd-nixl-transport")


def _pd_checks(
    pin: Pin, has_pd: bool, checks: CheckList, envs: dict[str, Path], trace_dir: Path, stock_runs: StockRuns
) -> None:
    """Aggregated reference on stock (kept by its inputs, stock_runs.py), the P/D scenarios on dynamo-base (with
    NIXL importable)."""
    if not has_pd:
        for name in PD_CHECKS:
            checks.add(CheckResult(name, NOT_APPLICABLE, "the series has no pd-disagg patches"))
        return
    runs: dict[str, dict] = {}
    for label, mode in (("stock", "aggregated"), ("patched", "disagg")):

        def run(label: str = label, mode: str = mode) -> CheckResult:
            if label not in envs:
                return CheckResult(f"run-pd-{mode}", FAIL, f"no {label} venv (see env-{label})")
            out = trace_dir / f"{pin.series_dirname}-pd-{mode}.json"
            kept = None
            if label == "stock":
                key = stock_run_key("pd-scenarios", envs["stock"], pin.wheels[0].sha256, [mode])
                kept = stock_runs.produce(key, out, lambda out: run_pd(envs["stock"], out, mode=mode))
                runs[mode] = json.loads(out.read_text(encoding="utf-8"))
            else:
                runs[mode] = run_pd(envs[label], out, mode=mode)
            note = f"; {kept.note()}" if kept else ""
            return CheckResult(f"run-pd-{mode}", PASS, f"{len(runs[mode]['scenarios'])} scenarios → {out.name}{note}")

        checks.run(f"run-pd-{mode}", run)
    if {"aggregated", "disagg"} <= runs.keys():
        for result in pd_checks(runs["aggregated"], runs["disagg"]):
            checks.add(result)
    else:
        for name in PD_CHECKS:
            checks.add(CheckResult(name, FAIL, "a P/D run is missing (see the run-pd checks)"))


def _finish(
    project: Project,
    pin: Pin,
    tier: str,
    series: Series | None,
    checks: CheckList,
    info: dict[str, WheelRef | None],
    started: float,
    out_dir: Path,
) -> ConformanceResult:
    record = ConformanceResults(
        schema=SCHEMA,
        project=pin.project,
        version=str(pin.version),
        tier=tier,
        toolkit=__version__,
        python=platform.python_version(),
        series=SeriesRef(series.fingerprint(), [p.name for p in series.patches]) if series else None,
        stock=info["stock"],
        patched=info["patched"],
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        seconds=round(time.time() - started, 3),
        checks=[r.as_record() for r in checks.results],
        ok=checks.ok,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{pin.series_dirname}-{tier}.json"
    atomic_write_text(path, encode_results(record))
    return ConformanceResult(record, path)
