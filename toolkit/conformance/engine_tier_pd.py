"""The engine tier's P/D checks on the dynamo-base engine: every transport on CPU, and the OpenAI server.

Reuses the P/D runs of the engine groundwork (engine_pd.py: ExampleConnector with three engine processes;
engine_pd_nixl.py: upstream's NixlConnector and dynamo-base's NixlConnectorV1, each a prefill and a decode
process, the aggregated reference of the first run, or of an aggregated engine where upstream's ExampleConnector
cannot run on CPU (vLLM up to 0.16.0);
engine_serve.py: a prefill and a decode server with `kv_transfer_params` over HTTP), each started from the
dynamo-base venv. Each of their checks becomes one tier check `engine-pd-<name>` / `engine-serve-<name>`.
A check whose outcome is upstream's own documented behaviour for this release (`documented`: what stock
does, e.g. ExampleConnector's silent recompute) passes when dynamo-base does exactly that, with the note,
and fails when it does something else; not-provided becomes not-applicable with its reason.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from toolkit.conformance.checks import FAIL, NOT_APPLICABLE, PASS, CheckList, CheckResult
from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_pd import Check, PdRun, run_pd, write_results
from toolkit.conformance.engine_pd_nixl import PREFIXES, SERIES, UPSTREAM, aggregated_reference, nixl_layer, run_pd_nixl
from toolkit.conformance.engine_serve import run_pd_serve, serve_checks
from toolkit.conformance.nixl_blocks import UPSTREAM_FILES, site_packages

DETAIL_CHARS = 600
EXAMPLE_CONNECTOR = "vllm/distributed/kv_transfer/kv_connector/v1/example_connector.py"
SHARED_STORAGE_CONNECTOR = "vllm/distributed/kv_transfer/kv_connector/v1/shared_storage_connector.py"
SERIES_NIXL = "vllm/distributed/kv_transfer/kv_connector/v1/nixl_transfer.py"  # patch 0015
CONNECTOR_METRICS = "vllm/distributed/kv_transfer/kv_connector/v1/metrics.py"
FRONTEND_ONLY = "assert not has_kv_transfer_group()"


def in_process_blocked(root: Path) -> str | None:
    """Why an in-process engine with a KV connector does not start from the vllm package in `root` (None when it
    does): vLLM 0.11.1's KVConnectorLogging asserts it runs in a frontend process without a KV transfer group, and
    with VLLM_ENABLE_V1_MULTIPROCESSING=0 (which the drivers' block-pool, corruption and abort ops need) the
    frontend is the worker's process (measured: AssertionError in LLM(...), both NIXL connectors)."""
    path = root / CONNECTOR_METRICS
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    line = next((n for n, text in enumerate(lines, 1) if FRONTEND_ONLY in text), 0)
    if not line:
        return None
    return (
        f"{CONNECTOR_METRICS}:{line} `{FRONTEND_ONLY}`: an in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0, "
        "which the NIXL runs' block-pool, corruption and abort requests need) with a KV connector and stats on "
        "does not start"
    )


def nixl_runs(env: EngineEnv, model: Path, site: Path, work: Path, reference: dict[str, list[int]]) -> dict[str, Any]:
    """Both NIXL connectors over the dynamo-base engine, at once, each its own engines: PdRun, the exception it
    failed with, or the reason it does not apply (str: the series has no NixlConnectorV1)."""
    runs: dict[str, Any] = {}
    connectors = [UPSTREAM]
    if (site_packages(env.path) / SERIES_NIXL).is_file():
        connectors.append(SERIES)
    else:
        runs[SERIES] = f"{env.wheel} has no NixlConnectorV1 ({SERIES_NIXL} is missing)"
    with ThreadPoolExecutor(len(connectors)) as pool:
        futures = {
            c: pool.submit(run_pd_nixl, env, model, site, work / f"pd-{PREFIXES[c]}", reference, c) for c in connectors
        }
        for connector, future in futures.items():
            try:
                runs[connector] = future.result()
            except Exception as exc:  # one failed check with its cause
                runs[connector] = exc
    return runs


def add_nixl_checks(checks: CheckList, runs: dict[str, Any], documented: dict[str, tuple[str, str]]) -> None:
    for connector, run in runs.items():
        name = f"engine-pd-{PREFIXES[connector]}"
        if isinstance(run, str):
            checks.add(CheckResult(name, NOT_APPLICABLE, run))
        elif isinstance(run, Exception):
            checks.add(CheckResult(name, FAIL, f"the {connector} P/D run failed: {type(run).__name__}: {run}"))
        else:
            for check in run.checks:
                checks.add(tier_check("engine-pd", check, documented))


def nixl_only_checks(
    checks: CheckList, cache: Path, envs: dict[str, EngineEnv], model: Path, work: Path, documented: dict
) -> None:
    """The NIXL runs alone (upstream's ExampleConnector cannot run here): the reference is the stock engine's,
    aggregated (no connector)."""
    began = time.perf_counter()
    first = len(checks.results)
    if not any((site_packages(envs["stock"].path) / member).is_file() for member in UPSTREAM_FILES):
        why = f"{envs['stock'].wheel} has no upstream NIXL connector ({' or '.join(UPSTREAM_FILES)})"
        checks.add(CheckResult("engine-pd-nixl", NOT_APPLICABLE, why))
        return
    blocked = in_process_blocked(site_packages(envs["dynamo-base"].path))
    if blocked is not None:
        checks.add(CheckResult("engine-pd-nixl", NOT_APPLICABLE, blocked))
        return
    site = nixl_layer(cache, envs["stock"])
    try:
        reference = aggregated_reference(envs["stock"], model, work / "aggregated")
    except Exception as exc:
        checks.add(CheckResult("engine-pd-nixl", FAIL, f"the aggregated reference failed: {exc}"))
        return
    runs = nixl_runs(envs["dynamo-base"], model, site, work, reference)
    record = {PREFIXES[c]: r.to_json() for c, r in runs.items() if isinstance(r, PdRun)}
    write_results(work / "pd-runs.json", {**record, "aggregated": reference})
    add_nixl_checks(checks, runs, documented)
    if len(checks.results) > first:
        checks.results[first].seconds = time.perf_counter() - began


def _cuda_line(archive: zipfile.ZipFile, member: str) -> int:
    """The first line of `member` that calls `.cuda()` (0 when none does)."""
    lines = archive.read(member).decode("utf-8", "replace").splitlines()
    return next((n for n, line in enumerate(lines, 1) if re.search(r"\.cuda\(\)", line)), 0)


def upstream_transport_missing(wheel: Path) -> str | None:
    """Why the tier's first P/D transport, upstream's ExampleConnector, cannot run on CPU from this CPU wheel's own
    files (None when it can). Read from the wheel: vLLM 0.11.1 has no `ExampleConnector` (its shared-storage
    connector was still `SharedStorageConnector`), and up to 0.16.0 its load moves the KV with `.cuda()`
    (0.32.0: to the layer's device). The NIXL and server runs take their aggregated reference from that run."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        found = [(m, _cuda_line(archive, m)) for m in (EXAMPLE_CONNECTOR, SHARED_STORAGE_CONNECTOR) if m in names]
    if not found or found[0][0] != EXAMPLE_CONNECTOR:
        why = f"{wheel.name} has no upstream ExampleConnector ({EXAMPLE_CONNECTOR} is missing)"
        if found and found[0][1]:
            why += f"; its SharedStorageConnector loads the KV with .cuda() ({found[0][0]}:{found[0][1]})"
    elif found[0][1]:
        why = (
            f"upstream's ExampleConnector in {wheel.name} loads the KV with .cuda() ({EXAMPLE_CONNECTOR}:{found[0][1]})"
        )
    else:
        return None
    return (
        f"{why}: no upstream shared-storage transport runs on CPU here (the NIXL runs take their aggregated "
        "reference from an aggregated engine instead; the OpenAI server run is not driven here)"
    )


def _detail(details: dict[str, Any]) -> str:
    text = json.dumps(details, sort_keys=True, default=str)
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def tier_check(prefix: str, check: Check, documented: dict[str, tuple[str, str]]) -> CheckResult:
    name = f"{prefix}-{check.name.removeprefix('serve-')}"
    expected = documented.get(check.name)
    if expected is not None:
        status, why = expected
        if check.status == status:
            shown = NOT_APPLICABLE if status == "not-provided" else PASS
            return CheckResult(name, shown, f"as stock does (documented): {why}; seen: {_detail(check.details)}")
        seen = f"stock's documented outcome is {status} ({why}); dynamo-base: {check.status}"
        return CheckResult(name, FAIL, seen, _detail(check.details))
    if check.status == "not-provided":
        return CheckResult(name, NOT_APPLICABLE, f"not provided: {_detail(check.details)}")
    if check.status == "pass":
        return CheckResult(name, PASS, _detail(check.details))
    return CheckResult(name, FAIL, _detail(check.details), json.dumps(check.details, indent=1, default=str))


def pd_checks(
    checks: CheckList,
    cache: Path,
    envs: dict[str, EngineEnv],
    model: Path,
    work: Path,
    documented: dict[str, tuple[str, str]],
    parts: tuple,
) -> None:
    env = envs["dynamo-base"]
    site = nixl_layer(cache, envs["stock"])  # the same Python and packages: the stock side's cached layer

    def offline() -> tuple[PdRun, dict[str, Any]]:
        pd = run_pd(env, model, work / "pd-example")
        return pd, nixl_runs(env, model, site, work, pd.aggregated_outputs)

    began = time.perf_counter()
    first = len(checks.results)
    with ThreadPoolExecutor(2) as pool:
        offline_future = pool.submit(offline) if "pd-disagg" in parts else None
        served_future = None
        if "serve" in parts:
            served_future = pool.submit(run_pd_serve, env, model, work / "serve", nixl_site=site)
        runs: dict[str, Any] = {}
        for key, future in (("offline", offline_future), ("serve", served_future)):
            if future is None:
                continue
            try:
                runs[key] = future.result()
            except Exception as exc:  # one failed check with its cause
                runs[key] = exc
    record: dict[str, Any] = {}
    for key, run in runs.items():
        if key == "offline" and not isinstance(run, Exception):
            record["pd"] = run[0].to_json()
            record.update({PREFIXES[c]: r.to_json() for c, r in run[1].items() if isinstance(r, PdRun)})
        elif not isinstance(run, Exception):
            record[key] = run.to_json()
    write_results(work / "pd-runs.json", record)  # every detail, beyond what the checks' lines show
    reference: dict[str, list[int]] | None = None
    if "offline" in runs:
        if isinstance(runs["offline"], Exception):
            checks.add(CheckResult("engine-pd-disagg", FAIL, f"the P/D run failed: {runs['offline']}"))
        else:
            pd, nixl = runs["offline"]
            reference = pd.aggregated_outputs
            for check in pd.checks:
                checks.add(tier_check("engine-pd", check, documented))
            add_nixl_checks(checks, nixl, documented)
    if "serve" in runs:
        if isinstance(runs["serve"], Exception):
            checks.add(CheckResult("engine-serve", FAIL, f"the OpenAI server run failed: {runs['serve']}"))
        elif reference is None:
            checks.add(CheckResult("engine-serve", FAIL, "no aggregated reference (the P/D run is needed)"))
        else:
            for check in serve_checks(runs["serve"], reference):
                checks.add(tier_check("engine-serve", check, documented))
    if len(checks.results) > first:  # the runs' wall time, on the first of their checks
        checks.results[first].seconds = time.perf_counter() - began
