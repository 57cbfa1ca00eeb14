"""The hook for vLLM releases without a stat-logger entry point (0.9.0 ..): wraps an INTERNAL function.

Runs INSIDE a vLLM venv (see the package docstring). `vllm.v1.metrics.loggers.setup_default_loggers` is what
AsyncLLM calls to build its per-engine stat loggers; it is not a public API, which is why this is the
fallback and the entry point (`vllm.stat_logger_plugins`) is used wherever vLLM has one.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

logger = logging.getLogger("dynamo_base_plugin")
MARK = "__dynamo_base_plugin__"


def wrap_setup_default_loggers() -> bool:
    """Make `setup_default_loggers` append a `LoadMetricsLogger` per engine; True when the hook is in place."""
    from vllm.v1.metrics import loggers

    original = getattr(loggers, "setup_default_loggers", None)
    if original is None:
        logger.warning(
            "dynamo-base plugin: this vLLM has neither vllm.stat_logger_plugins nor setup_default_loggers; "
            "no load metrics are published (pass stat_loggers=[dynamo_base_plugin.load_metrics.factory(...)])"
        )
        return False
    if getattr(original, MARK, False):
        return True  # plugins may be loaded more than once per process

    @functools.wraps(original)
    def setup_default_loggers(*args: Any, **kwargs: Any) -> Any:
        per_engine = original(*args, **kwargs)
        vllm_config = kwargs["vllm_config"] if "vllm_config" in kwargs else args[0]
        from .load_metrics import LoadMetricsLogger

        # stats off: the result is empty and vLLM records nothing, so there is nothing to publish
        for engine_index, group in enumerate(per_engine):
            if not any(isinstance(existing, LoadMetricsLogger) for existing in group):
                group.append(LoadMetricsLogger(vllm_config, engine_index))
        return per_engine

    setattr(setup_default_loggers, MARK, True)
    loggers.setup_default_loggers = setup_default_loggers
    # AsyncLLM imported the name itself; when it is imported already, its binding is the one that counts.
    async_llm = sys.modules.get("vllm.v1.engine.async_llm")
    if async_llm is not None and getattr(async_llm, "setup_default_loggers", None) is original:
        setattr(async_llm, "setup_default_loggers", setup_default_loggers)  # noqa: B010 (a module mypy cannot see)
    return True
