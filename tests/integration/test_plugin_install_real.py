"""The plugin wheel installs beside stock vLLM 0.9.0 with `pip install` and with `uv pip install` (uv from
PyPI, pinned: toolkit.envs.UV_VERSION, cached), and vLLM loads it: its own plugin loader discovers the
entry point, and the stat loggers AsyncLLM builds (through the name AsyncLLM imported) get one
`LoadMetricsLogger` per engine, which publishes a step's figures on the configured endpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import stock_env_of
from toolkit.envs import UV_VERSION, create_venv, layer_on, offline_env, pinned_uv, runtime_env, venv_python
from toolkit.plugin.build import build_plugin

pytestmark = pytest.mark.real

PROBE = r"""
import json, os, sys
from types import SimpleNamespace as NS
import zmq
from importlib.metadata import distribution
import vllm.v1.engine.async_llm as async_llm   # imported before the plugins load, as `vllm serve` may
from vllm.plugins import load_general_plugins, load_plugins_by_group

endpoint = sys.argv[1]
os.environ["DYNAMO_LOAD_METRICS_ENDPOINT"] = endpoint
discovered = sorted(load_plugins_by_group("vllm.general_plugins"))   # vLLM's own entry-point discovery
load_general_plugins()
per_engine = async_llm.setup_default_loggers(vllm_config=None, log_stats=True, engine_num=2, custom_stat_loggers=[])
sub = zmq.Context.instance().socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.connect(endpoint.replace("*", "127.0.0.1"))
stats = NS(num_running_reqs=3, num_waiting_reqs=2, gpu_cache_usage=0.5, prefix_cache_stats=NS(queries=64, hits=16))
frames = None
for _ in range(50):  # the slow joiner: publish until the SUB socket has joined
    per_engine[0][0].record(stats, None)
    if sub.poll(100):
        frames = sub.recv_multipart()
        break
import msgspec
dist = distribution("dynamo-base-plugin")
print(json.dumps({
    "discovered": discovered,
    "loggers": [[type(x).__module__ + "." + type(x).__name__ for x in group] for group in per_engine],
    "endpoints": [[x.publisher.endpoint for x in group] for group in per_engine],
    "message": msgspec.msgpack.decode(frames[2]) if frames else None,
    "installed": {"version": dist.version, "location": str(dist.locate_file(""))},
}))
"""


@pytest.fixture(scope="module")
def wheel(repo_project, tmp_path_factory):
    return build_plugin(repo_project, "0.9.0", tmp_path_factory.mktemp("plugin-dist"))


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_the_plugin_installs_beside_stock_090_and_vllm_loads_it(installer, repo_project, wheel, tmp_path, free_ports):
    cache = repo_project.options.cache_dir
    venv = create_venv(tmp_path / f"stock-{installer}")
    layer_on(venv, stock_env_of(repo_project, "0.9.0"), runtime_env(cache))  # stock vLLM 0.9.0 and its runtime
    python = str(venv_python(venv))
    if installer == "pip":  # pip checks Requires-Dist against what the venv sees: msgspec and pyzmq are there
        argv = [sys.executable, "-m", "pip", "--python", python, "install", "--no-index", str(wheel.path)]
    else:
        uv = pinned_uv(cache)
        version = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True).stdout
        assert version.split()[1] == UV_VERSION
        # uv sees the venv's own site-packages only, not the layers its .pth adds: without --no-deps it would
        # put a second msgspec and pyzmq (from its cache) into the venv, beside the ones stock vLLM uses
        argv = [str(uv), "pip", "install", "--python", python, "--offline", "--no-deps", str(wheel.path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    (port,) = free_ports(1)
    endpoint = f"tcp://*:{port}"
    probe = subprocess.run(
        [python, "-c", PROBE, endpoint], capture_output=True, text=True, timeout=300, env=offline_env()
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert "dynamo_base_load_metrics" in seen["discovered"]
    assert seen["installed"]["version"] == str(wheel.version)
    assert seen["installed"]["location"].startswith(str(venv))  # in this venv, beside the layered stock vLLM
    logger = "dynamo_base_plugin.load_metrics.LoadMetricsLogger"
    assert seen["loggers"] == [[logger], [logger]]  # one per engine, appended to vLLM's own loggers
    assert seen["endpoints"] == [[endpoint], [f"tcp://*:{port + 1}"]]  # engine N binds port + N
    message = seen["message"]
    assert message is not None, "the attached logger published nothing"
    assert (message["type"], message["num_running"], message["num_waiting"], message["kv_cache_usage"]) == (
        "LoadMetrics",
        3,
        2,
        0.5,
    )
    assert message["prefix_cache_queries"] % 64 == 0 and message["prefix_cache_hit_rate"] == 0.25
