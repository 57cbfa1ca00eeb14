"""`vpatch ci` for a release whose series is empty and whose pin has no stock wheel (only its CPU flavor): there
is no dynamo-base wheel to build, verify or compare with stock, so those steps are skipped with the reason, and
conform-engine runs the feature contracts on stock vLLM's CPU build with the dynamo-base plugin beside it
(toolkit/contracts/engine_stock.py), the evidence `vpatch status` reads from OUT/conform/. Reused like every
other conform step (same key: pins, flavor, series, vpatch's serving and contract sources)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.cache import atomic_write_text
from toolkit.ci_reuse import Done, conform_key, short
from toolkit.errors import VpatchError
from toolkit.records.ci_summary import Step
from toolkit.records.status import Status
from toolkit.stock_default import empty_series_reason

if TYPE_CHECKING:
    from toolkit.ci import Job, VersionRun

FEATURES = ["kv-routing", "pd-disagg"]


def is_stock_release(job: Job, run: VersionRun) -> bool:
    pin = run.pin
    return not pin.wheels and job.project.has_series(pin) and not job.project.series(pin).patches


def stock_steps(job: Job, run: VersionRun) -> None:
    reason = f"not applicable: {empty_series_reason(run.pin)}"
    for name in ("build", "verify", *(f"conform-{t}" for t in job.tiers if t != "engine")):
        run.steps.append(Step(name, Status.SKIPPED, 0.0, reason))
    if "engine" in job.tiers:
        run.step("conform-engine", lambda: _engine_contracts(job, run), quiet=job.quiet)


def _engine_contracts(job: Job, run: VersionRun) -> Done:
    from toolkit.conformance.engine_apply import applicability
    from toolkit.contracts.engine_stock import engine_contracts
    from toolkit.contracts.run import evidence_name
    from toolkit.plugin.build import plugin_wheel
    from toolkit.records.contract import BuildSpec, decode_contract

    project, pin = job.project, run.pin
    found = applicability(project.options.cache_dir, pin, project.pins.path)
    if not found.runs:
        return Done(f"not applicable: {found.reason}")
    key = conform_key(pin, project.series(pin), "engine-contracts", None)
    store = job.store("conform")
    wheel = plugin_wheel(project, str(pin.version))
    new = BuildSpec(str(pin.version), "stock+plugin", (wheel.name,))
    name = evidence_name(pin.project, new, BuildSpec(str(pin.version), "stock"))
    entry = store.get(key)
    if entry is not None:
        try:
            kept = decode_contract(entry["results"].encode("utf-8"))
        except Exception:  # a damaged entry is a miss: the contracts run again
            kept = None
        if kept is not None:
            atomic_write_text(job.out_dir / "conform" / name, entry["results"])
            return Done(f"reused (key {short(key)}): {_detail(kept)}", key, reused=True)
    results, paths = engine_contracts(project, pin, "stock+plugin", [wheel], job.out_dir / "conform", features=FEATURES)
    if not results.ok:
        bad = [f"{r.name} {i.item}: {i.status.label}" for r in results.runs for i in r.items if i.status != Status.PASS]
        raise VpatchError(f"stock + plugin contracts not met ({paths[0].name}): {'; '.join(bad)}")
    store.put(key, {"results": paths[0].read_text(encoding="utf-8")})
    return Done(_detail(results), key)


def _detail(results) -> str:
    items = [i for r in results.runs for i in r.items]
    plugin = results.new.plugins[0].label if results.new.plugins else "the plugin"
    return (
        f"stock {results.new.version} + {plugin}: {sum(i.status == Status.PASS for i in items)}/{len(items)} contract "
        f"items pass on real engines ({results.seconds:.0f}s)"
    )
