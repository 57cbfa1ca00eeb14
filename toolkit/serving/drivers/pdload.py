"""Runs inside a vLLM venv (the dynamo-base wheel), run by path: KV-transfer throughput of the P/D connectors.

Started by bench/pd_transfer.py as `python pdload.py '{...}'`; prints one `VPATCH-BENCH {json}` line.

One process holds a producer ("prefill") and a consumer ("decode") KV cache on the CPU, separate tensors
in vLLM 0.8.4's FlashAttention layout `(2, num_blocks, block_size, heads, head_size)` per layer. A request
of BLOCKS blocks sits at scattered producer block ids and is moved to different scattered consumer block
ids (so every method has to honour the block mapping), by:

  torch_blocks      per layer `dst.index_copy_(1, dst_ids, src.index_select(1, src_ids))`: the same bytes
                    and the same mapping as the connectors, as plain torch (the ratio baseline)
  torch_contiguous  one `copy_` between two flat buffers of the same total size (a memory bandwidth
                    reference, no block mapping)
  shm / disk        SharedStorageConnectorV1 with storage_path under /dev/shm / the temp dir: from the
                    producer's start_step (a save) + end_step (writes the transfer) until the consumer's
                    start_step / end_step report the load in finished_recving
  nixl              NixlConnectorV1 (UCX), both workers in this process, kv_ip 127.0.0.1: from the
                    consumer's start_step (posts the READ) until it reports finished_recving; polled
                    without pause, as a worker's steps would poll it at best

Two phases, each with the torch methods as its own baseline: shared storage first, then NIXL. Every NIXL
agent's UCX progress thread keeps a core busy from the agent's creation on (nixl 1.5.1 defaults, as the
connector creates them), which slows everything else in the process; so the shared-storage runs happen
before the agents exist, and NIXL is compared with a baseline timed under the same load.

Each round runs the phase's methods once, in a rotated order (noise hits all alike); before each timed
transfer the consumer's target blocks are zeroed and after it they are compared with the producer's,
byte for byte (both outside the timing), so every sample is checked. The first round is a warm-up (page
faults, NIXL's metadata exchange) and is not counted; the NIXL connection set-up is reported on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import fake_engine  # the sibling driver (Python puts a script's own directory first on sys.path): use_cpu_platform

SHARED_STORAGE = "SharedStorageConnectorV1"
NIXL = "NixlConnectorV1"
POLL_LIMIT_S = 60.0
BASELINE = "torch_blocks"
# A timed transfer: (wall seconds, process CPU seconds).
Method = Callable[[], tuple[float, float]]


def nixl_missing() -> str | None:
    """Why NIXL cannot run in this venv (None: it can)."""
    try:
        import nixl._api  # noqa: F401
    except Exception as e:  # ImportError, or a NIXL build whose libraries do not load
        return f"nixl is not importable here: {type(e).__name__}: {e}"
    return None


class Clock:
    """Wall time, and CPU time of the whole process (every thread: UCX may copy on more than one)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class Bench:
    """The two caches, the request's block ids, and one timed transfer per method."""

    def __init__(self, args: dict[str, Any]) -> None:
        import torch
        from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend
        from vllm.v1.kv_transfer.base import block_dim_of

        self.args = args
        self.block_size = args["block_size"]
        heads, head_size = args["heads"], args["head_size"]
        dtype = getattr(torch, args["dtype"])
        shape = FlashAttentionBackend.get_kv_cache_shape(args["num_blocks"], self.block_size, heads, head_size)
        self.block_dim = block_dim_of(FlashAttentionBackend.get_kv_cache_shape, self.block_size, heads, head_size)
        generator = torch.Generator().manual_seed(args["seed"])
        # Random values: a block copied to the wrong place, or not at all, cannot compare equal by chance.
        self.src = {
            f"model.layers.{i}.self_attn.attn": torch.rand(shape, generator=generator).to(dtype)
            for i in range(args["layers"])
        }
        # fill_ commits the pages now, so no method pays the first touch.
        self.dst = {name: torch.empty(shape, dtype=dtype).fill_(0) for name in self.src}
        ids = torch.randperm(args["num_blocks"], generator=generator)
        count = args["blocks"]
        # Producer and consumer ids are disjoint scattered sets: a transport that ignores either mapping fails.
        self.src_ids = ids[:count].tolist()
        self.dst_ids = ids[count : 2 * count].tolist()
        self.src_index = torch.tensor(self.src_ids, dtype=torch.long)
        self.dst_index = torch.tensor(self.dst_ids, dtype=torch.long)
        first = next(iter(self.src.values()))
        self.block_bytes = first.element_size() * first.numel() // first.shape[self.block_dim]
        self.bytes = self.block_bytes * count * len(self.src)
        self.flat_src = torch.empty(self.bytes, dtype=torch.uint8).fill_(1)
        self.flat_dst = torch.empty(self.bytes, dtype=torch.uint8).fill_(0)
        self.token_ids = [3 + (i * 7_919) % 50_000 for i in range(count * self.block_size)]
        self.serial = 0

    # ------------------------------------------------------------ checks

    def clear(self) -> None:
        for kv in self.dst.values():
            kv.index_fill_(self.block_dim, self.dst_index, 0)

    def arrived(self) -> bool:
        import torch

        for name, src in self.src.items():
            sent = src.index_select(self.block_dim, self.src_index)
            got = self.dst[name].index_select(self.block_dim, self.dst_index)
            # Bitwise: equal as bytes, whatever the values (no NaN or -0.0 surprises).
            if not torch.equal(sent.view(torch.uint8), got.view(torch.uint8)):
                return False
        return True

    def next_req_id(self) -> str:
        self.serial += 1
        return f"bench-{self.serial}"

    # ------------------------------------------------------------ methods

    def torch_blocks(self) -> tuple[float, float]:
        clock = Clock()
        for name, src in self.src.items():
            blocks = src.index_select(self.block_dim, self.src_index)
            self.dst[name].index_copy_(self.block_dim, self.dst_index, blocks)
        return clock.stop()

    def torch_contiguous(self) -> tuple[float, float]:
        clock = Clock()
        self.flat_dst.copy_(self.flat_src)
        return clock.stop()

    def specs(self, req_id: str, key: str, params: dict[str, Any]):
        from vllm.v1.kv_transfer.base import KVLoadSpec, KVSaveSpec

        num_tokens = len(self.token_ids)
        save = KVSaveSpec(req_id, list(self.src_ids), num_tokens, list(self.token_ids), key)
        load = KVLoadSpec(req_id, list(self.dst_ids), 0, num_tokens, list(self.token_ids), params)
        return save, load


def wait_recv(worker, req_id: str, status) -> None:
    """Step the consumer (start_step(None) + end_step()) until `req_id` is reported loaded."""
    deadline = time.monotonic() + POLL_LIMIT_S
    while req_id not in status.finished_recving:
        if req_id in status.failed_recving:
            raise RuntimeError(f"load {req_id} failed: {status.failed_recving[req_id]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"load {req_id} not finished after {POLL_LIMIT_S} s")
        worker.start_step(None)
        status = worker.end_step()


class SharedStorage:
    """A producer and a consumer SharedStorageConnectorV1 worker over one directory."""

    def __init__(self, bench: Bench, storage: str) -> None:
        from vllm.config import KVTransferConfig
        from vllm.v1.kv_transfer.factory import make_worker_connector

        self.bench = bench
        self.storage = storage
        extra = {"storage_path": storage}
        self.producer = make_worker_connector(
            KVTransferConfig(
                kv_connector=SHARED_STORAGE,
                kv_role="kv_producer",
                kv_connector_extra_config={**extra, "engine_id": "bench-prefill"},
            )
        )
        self.consumer = make_worker_connector(
            KVTransferConfig(kv_connector=SHARED_STORAGE, kv_role="kv_consumer", kv_connector_extra_config=extra)
        )
        self.producer.register_kv_caches(bench.src, bench.block_dim)
        self.consumer.register_kv_caches(bench.dst, bench.block_dim)
        # Where the time goes: the producer's save (end_step writes the transfer) vs the consumer's load.
        self.save_s: list[float] = []

    def transfer(self) -> tuple[float, float]:
        from vllm.v1.kv_transfer.base import KVConnectorMetadata, transfer_key

        req_id = self.bench.next_req_id()
        # A fresh key per transfer, as every request gets: nothing is reused from an earlier round.
        key = transfer_key("bench-prefill", req_id)
        save, load = self.bench.specs(req_id, key, {"transfer_key": key})
        clock = Clock()
        self.producer.start_step(KVConnectorMetadata(saves=[save]))
        sent = self.producer.end_step()
        saved = time.perf_counter()
        self.consumer.start_step(KVConnectorMetadata(loads=[load]))
        wait_recv(self.consumer, req_id, self.consumer.end_step())
        elapsed, cpu = clock.stop()
        self.save_s.append(saved - clock.wall)
        if req_id not in sent.finished_sending:
            raise RuntimeError(f"save {req_id} not reported in finished_sending")
        left = [n for n in os.listdir(self.storage)]
        if left:
            raise RuntimeError(f"{self.storage}: transfers left after the load: {left}")
        return elapsed, cpu

    def shutdown(self) -> None:
        self.producer.shutdown()
        self.consumer.shutdown()


class Nixl:
    """A producer and a consumer NixlConnectorV1 worker in this process, talking over 127.0.0.1."""

    def __init__(self, bench: Bench, port: int) -> None:
        from vllm.config import KVTransferConfig
        from vllm.v1.kv_transfer.factory import make_worker_connector

        self.bench = bench
        self.port = port
        common = {"kv_connector": NIXL, "kv_ip": "127.0.0.1", "kv_port": port}
        begin = time.perf_counter()
        self.producer = make_worker_connector(
            KVTransferConfig(**common, kv_role="kv_producer", kv_connector_extra_config={"engine_id": "bench-prefill"})
        )
        self.consumer = make_worker_connector(
            KVTransferConfig(**common, kv_role="kv_consumer", kv_connector_extra_config={"engine_id": "bench-decode"})
        )
        # Registration: both caches with their agents, one descriptor per (layer, K/V, block).
        self.producer.register_kv_caches(bench.src, bench.block_dim)
        self.consumer.register_kv_caches(bench.dst, bench.block_dim)
        self.register_s = time.perf_counter() - begin
        self.first_s: float | None = None
        self.ack_s: list[float] = []

    def transfer(self) -> tuple[float, float]:
        from vllm.v1.kv_transfer.base import KVConnectorMetadata

        req_id = self.bench.next_req_id()
        params = {
            "remote_host": "127.0.0.1",
            "remote_port": self.port,
            "remote_block_ids": list(self.bench.src_ids),
            "remote_request_id": req_id,
        }
        _, load = self.bench.specs(req_id, "", params)
        clock = Clock()
        self.consumer.start_step(KVConnectorMetadata(loads=[load]))
        wait_recv(self.consumer, req_id, self.consumer.end_step())
        elapsed, cpu = clock.stop()
        if self.first_s is None:
            self.first_s = elapsed  # includes the metadata fetch and the remote descriptor list
        # The producer frees its blocks when the READ's notification arrives: how long after the load.
        deadline = time.monotonic() + POLL_LIMIT_S
        while req_id not in self.producer.end_step().finished_sending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the producer never reported {req_id} in finished_sending")
        self.ack_s.append(time.perf_counter() - clock.wall - elapsed)
        return elapsed, cpu

    def shutdown(self) -> None:
        self.producer.shutdown()
        self.consumer.shutdown()


def rounds(bench: Bench, methods: dict[str, Method], checked: set[str], repeat: int) -> dict[str, Any]:
    """`repeat` rounds after a warm-up round, each method once per round in a rotated order."""
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeat + 1):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if name in checked:
                bench.clear()
            elapsed, cpu = methods[name]()
            if name in checked and not bench.arrived():
                raise RuntimeError(f"{name}: the consumer's blocks differ from the producer's after the transfer")
            if round_index:
                times[name].append(elapsed)
                cpu_times[name].append(cpu)
    median = {name: statistics.median(samples) for name, samples in times.items()}
    base = times[BASELINE]
    return {
        "times": times,
        "median_s": median,
        "gib_per_s": {name: bench.bytes / m / 2**30 for name, m in median.items()},
        # The ratio of the medians, and the median of the same-round ratios: noise shows as a gap.
        "ratio": {name: m / median[BASELINE] for name, m in median.items()},
        "paired_ratio": {
            name: statistics.median(t / b for t, b in zip(samples, base, strict=True))
            for name, samples in times.items()
        },
        # CPU seconds per wall second (1.0: one core busy; more: other threads ran, e.g. NIXL's).
        "cpu_per_wall": {
            name: statistics.median(c / t for c, t in zip(cpu_times[name], times[name], strict=True)) for name in names
        },
        "verified": sorted(checked & set(names)),
    }


def measure(args: dict[str, Any]) -> dict[str, Any]:
    fake_engine.use_cpu_platform()  # before vllm.config: there is no GPU platform here
    import torch

    bench = Bench(args)
    torch_methods: dict[str, Method] = {BASELINE: bench.torch_blocks, "torch_contiguous": bench.torch_contiguous}
    # torch_contiguous moves other buffers than the caches; its copy is torch's own business.
    checked = {BASELINE}
    skipped: dict[str, str] = {}
    result: dict[str, Any] = {
        "config": {k: args[k] for k in ("layers", "num_blocks", "block_size", "heads", "head_size", "dtype")},
        "blocks": args["blocks"],
        "bytes": bench.bytes,
        "block_bytes": bench.block_bytes,
        "repeat": args["repeat"],
        "baseline": BASELINE,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "phases": {},
        "skipped": skipped,
    }

    # Phase 1, no NIXL agent alive: shared storage (its deployments have no spinning NIXL threads either).
    storages = {"shm": "/dev/shm"} if os.path.isdir("/dev/shm") else {}
    if "shm" not in storages:
        skipped["shm"] = "no /dev/shm on this machine"
    if args.get("disk", True):
        storages["disk"] = tempfile.gettempdir()
    methods = dict(torch_methods)
    shared: dict[str, SharedStorage] = {}
    try:
        for label, base in storages.items():
            shared[label] = SharedStorage(bench, tempfile.mkdtemp(prefix="vpatch-pd-bench-", dir=base))
            methods[label] = shared[label].transfer
        result["phases"]["shared_storage"] = rounds(bench, methods, checked | set(shared), args["repeat"])
    finally:
        for connector in shared.values():
            connector.shutdown()
            shutil.rmtree(connector.storage, ignore_errors=True)
    for label, connector in shared.items():
        save = statistics.median(connector.save_s[1:])  # [0]: the warm-up round
        load = result["phases"]["shared_storage"]["median_s"][label] - save
        result[label] = {"save_s": save, "load_s": load, "storage_path": os.path.dirname(connector.storage)}

    # Phase 2, both NIXL agents alive (each one's UCX progress thread keeps a core busy from its creation on,
    # which slows everything else in the process): NIXL against a baseline timed under the same load.
    if not args.get("nixl", True):
        skipped["nixl"] = "not asked for"
    elif why := nixl_missing():
        skipped["nixl"] = why
    else:
        nixl = Nixl(bench, args["port"])
        try:
            methods = {**torch_methods, "nixl": nixl.transfer}
            result["phases"]["nixl"] = rounds(bench, methods, checked | {"nixl"}, args["repeat"])
        finally:
            nixl.shutdown()
        result["nixl"] = {
            "register_s": nixl.register_s,
            "first_transfer_s": nixl.first_s,
            "ack_after_load_s": statistics.median(nixl.ack_s[1:] or nixl.ack_s),
        }
    return result


if __name__ == "__main__":
    print("VPATCH-BENCH " + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
