"""`Router`: picks the worker with the longest cached prefix of a request, weighed against load."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from toolkit.serving.kv.hashes import content_chain
from toolkit.serving.kv.index import KVIndex


@dataclass(frozen=True)
class WorkerScore:
    worker: str
    overlap_blocks: int
    score: float
    kv_cache_usage: float
    num_waiting: int
    num_running: int
    stale: bool


@dataclass(frozen=True)
class RouteDecision:
    worker: str | None
    total_blocks: int
    overlaps: dict[str, int]
    ranking: list[WorkerScore]  # best first


class Router:
    """Pick a worker for a request from the cached prefixes in a `KVIndex`.

    Overlap is measured with `hash_blocks` (the engine's own block hashes, recomputed: exact, but only
    possible when the engine's hash is reproducible outside it) or, by default, with content keys that
    the index derives from the token ids the events carry (`content_chain`): independent of the engine's
    hash function and of the Python it runs on. vLLM 0.8.4's default builtin block hash includes
    `hash(None)`, which before Python 3.12 differs from process to process, so content keys are what a
    router can rely on.

    For a request of `total_blocks` full blocks, each worker gets

        score = overlap_blocks - load_weight * kv_cache_usage * max(total_blocks, 1)

    where `overlap_blocks` is the number of leading request blocks in the worker's set and
    `kv_cache_usage` (0..1) comes from the worker's latest metrics (0 when it has none). Both terms are
    in blocks: a full cache costs as much as the whole request being a hit (with `load_weight` 1), and
    `max(.., 1)` keeps load relevant for requests shorter than a block. The highest score wins; ties go
    to fewer waiting requests, then fewer running requests, then the worker name. Stale workers are
    scored like the others (their overlap is a best guess); `WorkerScore.stale` tells the caller.
    """

    def __init__(
        self,
        index: KVIndex,
        hash_blocks: Callable[[Sequence[int]], list[int]] | None = None,
        *,
        load_weight: float = 1.0,
        block_size: int = 16,
    ) -> None:
        self.index = index
        self.hash_blocks = hash_blocks
        self.load_weight = load_weight
        self.block_size = block_size

    def route(self, token_ids: Sequence[int], workers: Iterable[str] | None = None) -> RouteDecision:
        if self.hash_blocks is not None:
            block_hashes = self.hash_blocks(token_ids)
        else:
            block_hashes = content_chain(token_ids, self.block_size)
        total = len(block_hashes)
        ranking = []
        for worker in self.index.workers() if workers is None else workers:
            state = self.index.state(worker)
            if self.hash_blocks is not None:
                overlap = self.index.overlap(worker, block_hashes)
            else:
                overlap = self.index.content_overlap(worker, block_hashes)
            metrics = state.metrics
            usage = metrics.kv_cache_usage if metrics else 0.0
            score = overlap - self.load_weight * usage * max(total, 1)
            ranking.append(
                WorkerScore(
                    worker=worker,
                    overlap_blocks=overlap,
                    score=score,
                    kv_cache_usage=usage,
                    num_waiting=metrics.num_waiting if metrics else 0,
                    num_running=metrics.num_running if metrics else 0,
                    stale=state.stale,
                )
            )
        ranking.sort(key=lambda s: (-s.score, s.num_waiting, s.num_running, s.worker))
        return RouteDecision(
            worker=ranking[0].worker if ranking else None,
            total_blocks=total,
            overlaps={s.worker: s.overlap_blocks for s in ranking},
            ranking=ranking,
        )
