"""dynamo-base plugin for stock vLLM: the load metrics of KV-aware routing, without patching vLLM.

Runs INSIDE a vLLM venv, installed beside stock vLLM from the wheel `vpatch plugin build` makes; it imports
nothing from vpatch (only vLLM, msgspec, pyzmq and the standard library).

What it adds: a V1 stat logger, `load_metrics.LoadMetricsLogger`, that publishes on a ZMQ PUB socket, for
every engine step vLLM's frontend records that changes them, the load figures dynamo-base 0.8.4/0.8.5 attached
to every KV-event batch (patch 0004): running and waiting requests, KV-cache usage, prefix-cache queries, hits and
hit rate (docs/plugin.md has the message). The figures are vLLM's own `SchedulerStats`, made by the
engine's scheduler (`Scheduler.make_stats()`) after each step; vLLM's own KV-cache events are untouched, unless
`DYNAMO_KV_EVENTS_PUBLISHER=inline` asks for the plugin's publisher of them (`event_publisher.py`: upstream's
wire, sent on the engine thread instead of vLLM's publisher thread).

Configuration (environment of the vLLM process): `DYNAMO_LOAD_METRICS_ENDPOINT`, the endpoint the logger
binds (e.g. `tcp://*:5559`; engine N of a data-parallel frontend binds port + N); unset, the plugin adds
nothing. `DYNAMO_LOAD_METRICS_TOPIC`, the first frame of every message (default empty).
`DYNAMO_LOAD_METRICS_REPEAT_S`: a step whose figures equal the last ones sent is not sent again until this many
seconds have passed since that send (default 1; 0 sends every step).

How the logger gets into the engine, per vLLM release:

- vLLM with the `vllm.stat_logger_plugins` entry-point group (0.32.0 has it, 0.9.0 does not): AsyncLLM, and
  so `vllm serve`, loads `LoadMetricsLogger` through that group. A supported API.
- vLLM 0.9.0 up to that group: `vllm serve` builds AsyncLLM without `stat_loggers`, so there is no
  supported way to add a stat logger to the OpenAI server. `register()` below, the `vllm.general_plugins`
  entry point (0.9.0 loads general plugins in the API server process, from `EngineArgs`, before it builds
  AsyncLLM), therefore WRAPS AN INTERNAL FUNCTION: `vllm.v1.metrics.loggers.setup_default_loggers`, whose
  result gets one `LoadMetricsLogger` per engine appended (`hooks.py`). When that function is gone and the
  entry-point group is not there yet, it logs a warning and adds nothing.
- A server that builds the engine itself (Dynamo) passes `stat_loggers=[load_metrics.factory(endpoint)]`
  to `AsyncLLM(...)` / `AsyncLLM.from_engine_args(...)` (0.9.0+; 0.9.0 then drops its default loggers
  unless they are listed too) or `LLMEngine.from_engine_args(...)` (0.32.0). Supported in every release.
"""

from __future__ import annotations

import os

ENDPOINT_ENV = "DYNAMO_LOAD_METRICS_ENDPOINT"
TOPIC_ENV = "DYNAMO_LOAD_METRICS_TOPIC"
REPEAT_ENV = "DYNAMO_LOAD_METRICS_REPEAT_S"
PUBLISHER_ENV = "DYNAMO_KV_EVENTS_PUBLISHER"  # "inline": event_publisher.InlineZmqEventPublisher serves "zmq"
STAT_LOGGER_GROUP_ATTR = "STAT_LOGGER_PLUGINS_GROUP"  # vllm.plugins names the group when vLLM has it


def register() -> None:
    """The `vllm.general_plugins` entry point: vLLM calls it once per process (frontend, engine, workers)."""
    if not os.environ.get(ENDPOINT_ENV):
        return
    import vllm.plugins

    if hasattr(vllm.plugins, STAT_LOGGER_GROUP_ATTR):
        return  # vLLM loads LoadMetricsLogger itself, through the stat-logger entry point
    from .hooks import wrap_setup_default_loggers

    wrap_setup_default_loggers()


def register_kv_events() -> None:
    """The `vllm.general_plugins` entry point of the inline KV-event publisher (event_publisher.py): with
    DYNAMO_KV_EVENTS_PUBLISHER=inline, vLLM's "zmq" publisher name builds it in this process. vLLM is imported
    only then: unset, this costs one environment lookup."""
    choice = os.environ.get(PUBLISHER_ENV, "").strip()
    if choice in ("", "zmq"):
        return
    if choice != "inline":
        import logging

        logging.getLogger("dynamo_base_plugin").error(
            "dynamo-base plugin: %s=%r: expected 'inline' or 'zmq'; vLLM's own KV-event publisher stays",
            PUBLISHER_ENV,
            choice,
        )
        return
    from .event_publisher import install

    install()
