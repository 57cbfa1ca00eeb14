"""`LoadMetricsLogger`: a vLLM V1 stat logger that publishes each step's load figures over ZMQ.

Runs INSIDE a vLLM venv (see the package docstring). It is the class the `vllm.stat_logger_plugins` entry
point names, what the 0.9.0 hook (`hooks.py`) appends, and what `factory()` builds for servers that pass
`stat_loggers=` themselves. vLLM calls `record()` in its frontend for every `EngineCoreOutputs`, each
carrying the `SchedulerStats` the engine's scheduler made after that step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase

from . import ENDPOINT_ENV, REPEAT_ENV, TOPIC_ENV
from .figures import LoadTotals
from .publisher import LoadPublisher, endpoint_for_engine, repeat_seconds

logger = logging.getLogger("dynamo_base_plugin")


class LoadMetricsLogger(StatLoggerBase):
    """Publishes the load figures of engine `engine_index`; inert when no endpoint is configured."""

    def __init__(
        self, vllm_config: Any, engine_index: int = 0, *, endpoint: str | None = None, topic: str | None = None
    ) -> None:
        self.engine_index = engine_index
        self.totals = LoadTotals()
        endpoint = endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV, "")
        topic = topic if topic is not None else os.environ.get(TOPIC_ENV, "")
        self.steps = 0  # SchedulerStats recorded so far: the next one's `step`
        self.publisher: LoadPublisher | None = None
        if endpoint:
            repeat_s = repeat_seconds(os.environ.get(REPEAT_ENV, ""))
            self.publisher = LoadPublisher(endpoint_for_engine(endpoint, engine_index), topic, repeat_s)
            logger.info("dynamo-base plugin: engine %d publishes load metrics on %s", engine_index, endpoint)

    def record(self, scheduler_stats: Any, iteration_stats: Any = None, *args: Any, **kwargs: Any) -> None:
        # 0.9.0 calls record(scheduler_stats, iteration_stats); later releases add mm_cache_stats and
        # engine_idx and may pass scheduler_stats=None (a step that made no stats).
        if scheduler_stats is None or self.publisher is None:
            return
        step = self.steps
        self.steps = step + 1
        self.publisher.offer(self.engine_index, step, self.totals.figures(scheduler_stats))

    def log_engine_initialized(self) -> None:
        pass

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()


def factory(endpoint: str, topic: str = "") -> Callable[[Any, int], LoadMetricsLogger]:
    """A `StatLoggerFactory` (`(vllm_config, engine_index) -> logger`) for `stat_loggers=[...]`."""

    def make(vllm_config: Any, engine_index: int = 0) -> LoadMetricsLogger:
        return LoadMetricsLogger(vllm_config, engine_index, endpoint=endpoint, topic=topic)

    return make
