"""Checks over the P/D scenario runs (the driver toolkit/serving/drivers/pd_scenarios.py): disaggregated vs aggregated.

The reference is the aggregated run (one plain engine; stock vLLM in `vpatch conform`), the subject the
disaggregated run (prefill engine → transport → decode engine, dynamo-base).
"""

from __future__ import annotations

from toolkit.conformance.checks import FAIL, NOT_APPLICABLE, PASS, CheckResult

# A request the scenario fails on purpose (on_load_failure=fail) ends aborted with an error instead.
FAIL_MODE_SCENARIOS = ("pd-fail",)


def _ran(disagg: dict) -> dict[str, dict]:
    return {name: run for name, run in disagg["scenarios"].items() if "skipped" not in run}


def outputs_check(reference: dict, disagg: dict) -> CheckResult:
    """Every request's decode outputs equal the aggregated outputs; its prefill token equals the first."""
    diffs: list[str] = []
    compared = 0
    for name, run in sorted(_ran(disagg).items()):
        expected = reference["scenarios"].get(name, {}).get("outputs")
        if expected is None:
            diffs.append(f"{name}: no aggregated run to compare with")
            continue
        failed_on_purpose = {
            req for req, final in run["finals"].items() if (final.get("kv_transfer_params") or {}).get("error")
        }
        for req_id, tokens in sorted(expected.items()):
            if req_id in run["aborted"] or (name in FAIL_MODE_SCENARIOS and req_id in failed_on_purpose):
                continue
            compared += 1
            got = run["outputs"].get(req_id)
            if got != tokens:
                diffs.append(f"{name}/{req_id}: aggregated {tokens} != decode {got}")
            first = run["prefill_outputs"].get(req_id)
            if first is not None and first != tokens[:1]:
                diffs.append(f"{name}/{req_id}: prefill token {first} != aggregated first token {tokens[:1]}")
    if diffs:
        return CheckResult("pd-disagg-outputs", FAIL, f"{len(diffs)} request(s) differ", "\n".join(diffs))
    scenarios = ", ".join(sorted(_ran(disagg)))
    return CheckResult(
        "pd-disagg-outputs", PASS, f"{compared} requests: decode outputs equal aggregated outputs ({scenarios})"
    )


def no_leaks_check(disagg: dict) -> CheckResult:
    """After the drain: no block referenced, no transfer left behind, no held block freed early."""
    problems: list[str] = []
    for name, run in sorted(_ran(disagg).items()):
        for side, blocks in run["leaked_blocks"].items():
            if blocks:
                problems.append(f"{name}: {side} engine still references blocks {blocks}")
        if run["storage_leftovers"]:
            problems.append(f"{name}: transfers left in storage: {run['storage_leftovers']}")
        if run["freed_while_held"]:
            problems.append(f"{name}: blocks freed while held for a transfer: {run['freed_while_held']}")
    if problems:
        return CheckResult("pd-no-leaks", FAIL, f"{len(problems)} problem(s)", "\n".join(problems))
    return CheckResult(
        "pd-no-leaks", PASS, f"{len(_ran(disagg))} scenarios drained: every block free, no transfer left behind"
    )


def failure_paths_check(disagg: dict) -> CheckResult:
    """Faults end the way the connector's options say: recompute, fail with an error, or free on abort."""
    runs = disagg["scenarios"]
    problems: list[str] = []
    for name, run in sorted(_ran(disagg).items()):
        faults = run.get("faults", {})
        if name in FAIL_MODE_SCENARIOS:
            for req_id in faults:
                final = run["finals"].get(req_id, {})
                error = (final.get("kv_transfer_params") or {}).get("error", "")
                if final.get("finish_reason") != "ABORT" or "remote KV load failed" not in error:
                    problems.append(f"{name}/{req_id}: expected an aborted request with an error, got {final}")
        elif name == "pd-fallback":
            for req_id in faults:
                if run["finals"].get(req_id, {}).get("finish_reason") != "LENGTH":
                    problems.append(f"{name}/{req_id}: did not complete after falling back to local prefill")
        elif name == "pd-abort":
            missing = [r for r in faults if r not in run["waited_for_remote_kv"]]
            if missing:
                problems.append(f"{name}: {missing} were not waiting for remote KV when aborted")
    preempt = runs.get("pd-preempt")
    if preempt is not None and "skipped" not in preempt:
        if not preempt["preempted"]:
            problems.append("pd-preempt: the decode engine preempted no request (nothing was tested)")
        loads: dict[str, int] = {}
        for call in preempt["connector_calls"]["decode"]:
            for load in call.get("loads", []):
                loads[load["req"]] = loads.get(load["req"], 0) + 1
        again = sorted(req for req, count in loads.items() if count > 1)
        if again:
            problems.append(f"pd-preempt: {again} loaded again after a preemption (the transfer is gone)")
    if "pd-hold" in runs and "skipped" not in runs["pd-hold"] and not runs["pd-hold"]["held_for_transfer"]:
        problems.append("pd-hold: no prefill request held its blocks for an unacknowledged transfer")
    if problems:
        return CheckResult("pd-failure-paths", FAIL, f"{len(problems)} problem(s)", "\n".join(problems))
    return CheckResult(
        "pd-failure-paths", PASS, "fallback, fail, timeout, abort, preemption and late-ack paths as configured"
    )


def nixl_check(disagg: dict) -> CheckResult:
    run = disagg["scenarios"].get("pd-nixl")
    if run is None:
        return CheckResult("pd-nixl-transport", NOT_APPLICABLE, "the NIXL scenario was not run")
    if "skipped" in run:
        return CheckResult("pd-nixl-transport", NOT_APPLICABLE, run["skipped"])
    return CheckResult(
        "pd-nixl-transport",
        PASS,
        f"{len(run['waited_for_remote_kv'])} requests' KV read over NIXL (UCX, CPU memory); "
        "outputs are part of pd-disagg-outputs",
    )


def pd_checks(reference: dict, disagg: dict) -> list[CheckResult]:
    return [
        outputs_check(reference, disagg),
        no_leaks_check(disagg),
        failure_paths_check(disagg),
        nixl_check(disagg),
    ]
