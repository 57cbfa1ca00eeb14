"""The load figures of one engine step, from vLLM's own `SchedulerStats` (any release from 0.9.0).

Runs INSIDE a vLLM venv (see the package docstring), but imports nothing from vLLM: it reads the stats by
attribute, so the field renames between releases are handled here in one place:

- `gpu_cache_usage` (0.9.0) became `kv_cache_usage` (later releases);
- waiting requests deferred by transient constraints moved to `num_skipped_waiting_reqs` (0.32.0 has it);
  dynamo-base counted every request in the waiting queue, so both are added;
- prefix-cache queries and hits of resumed preempted requests moved to `preempted_queries` /
  `preempted_hits`; dynamo-base counted every lookup, so both are added.

vLLM's prefix-cache stats are per step (reset by `make_stats()`) and count tokens; the figures are the
cumulative sums since the logger started, in tokens (dynamo-base counted blocks: `prefix_cache_unit` says
which), and the hit rate is hits / queries (0 before any query).
"""

from __future__ import annotations

from typing import Any

UNIT = "tokens"


class LoadTotals:
    """Cumulative prefix-cache counters of one engine, fed one `SchedulerStats` per step."""

    def __init__(self) -> None:
        self.queries = 0
        self.hits = 0

    def figures(self, stats: Any) -> dict[str, Any]:
        prefix = getattr(stats, "prefix_cache_stats", None)
        if prefix is not None:
            self.queries += int(prefix.queries) + int(getattr(prefix, "preempted_queries", 0))
            self.hits += int(prefix.hits) + int(getattr(prefix, "preempted_hits", 0))
        usage: Any = getattr(stats, "kv_cache_usage", None)
        if usage is None:
            usage = getattr(stats, "gpu_cache_usage", 0.0)
        waiting = int(stats.num_waiting_reqs) + int(getattr(stats, "num_skipped_waiting_reqs", 0))
        return {
            "num_running": int(stats.num_running_reqs),
            "num_waiting": waiting,
            "kv_cache_usage": float(usage),
            "prefix_cache_queries": self.queries,
            "prefix_cache_hits": self.hits,
            "prefix_cache_hit_rate": self.hits / self.queries if self.queries else 0.0,
            "prefix_cache_unit": UNIT,
        }
