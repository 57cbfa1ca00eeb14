"""What the consumer holds after each batch, as `vpatch kv-watch --record PATH` writes it.

Runs in the core (vpatch's own venv), inside kv-watch: it reads the project's `KVIndex` and asks the
project's `Router` for the overlap of every probe prompt, exactly what a deployment's router would get.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import IO

import msgspec

from toolkit.records.contract import Observation, encode_observation
from toolkit.serving.kv.load import LoadReport
from toolkit.serving.kv.router import Router
from toolkit.serving.kv.subscriber import Subscriber


class Recorder:
    """Appends one `Observation` per call; probes are read from `probes` once that file exists (the
    engine's runner writes it before its first step). A subscriber that follows a plugin load endpoint
    also gets one "load" observation per LoadMetrics message, written as the message is applied."""

    def __init__(self, path: Path, subscribers: list[Subscriber], probes: Path | None) -> None:
        self.path = path
        self.probes_path = probes
        self.probes: dict[str, list[int]] | None = None if probes is not None else {}
        self.routers = {id(s): Router(s.index) for s in subscribers}
        self._out: IO[bytes] = path.open("wb")
        for subscriber in subscribers:
            if subscriber.load is not None:
                subscriber.load.on_report = functools.partial(self.observe_load, subscriber)

    def observe_load(self, subscriber: Subscriber, report: LoadReport) -> None:
        """The figures the router weighs for the worker right after the plugin's message `report`."""
        assert subscriber.load is not None
        metrics = subscriber.index.metrics(subscriber.worker)
        observation = Observation(
            worker=subscriber.worker,
            epoch=subscriber.load.restarts,
            seq=report.seq,
            batches=subscriber.batches,
            hashes=[],
            overlaps={},
            metrics=None if metrics is None else {k: float(v) for k, v in msgspec.structs.asdict(metrics).items()},
            stream="load",
            step=report.step,
        )
        self._out.write(encode_observation(observation))
        self._out.flush()

    def _load_probes(self) -> dict[str, list[int]]:
        if self.probes is None and self.probes_path is not None and self.probes_path.is_file():
            try:
                self.probes = msgspec.convert(json.loads(self.probes_path.read_text("utf-8")), dict[str, list[int]])
            except (ValueError, msgspec.ValidationError) as exc:
                raise ValueError(f"{self.probes_path.name}: not a probes file ({exc})") from None
        return self.probes or {}

    def observe(self, subscriber: Subscriber) -> None:
        worker = subscriber.worker
        index = subscriber.index
        router = self.routers[id(subscriber)]
        # the block size the engine's events carry (a deployment's router is configured with the engine's)
        learned = index.state(worker).block_size if worker in index.workers() else None
        if learned:
            router.block_size = learned
        overlaps = {
            probe: router.route(tokens, [worker]).overlaps[worker] for probe, tokens in self._load_probes().items()
        }
        metrics = index.metrics(worker)
        observation = Observation(
            worker=worker,
            epoch=subscriber.restarts,
            seq=subscriber.seq,
            batches=subscriber.batches,
            hashes=sorted(index.hashes(worker)),
            overlaps=overlaps,
            stale=subscriber.stale,
            decode_errors=subscriber.decode_errors,
            metrics=None if metrics is None else {k: float(v) for k, v in msgspec.structs.asdict(metrics).items()},
            encoding=index.encoding(worker),
        )
        self._out.write(encode_observation(observation))
        self._out.flush()

    def close(self) -> None:
        self._out.close()
