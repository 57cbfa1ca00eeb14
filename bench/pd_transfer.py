"""P/D disaggregation: KV transfer throughput of the connectors against a plain torch copy of the same bytes.

Runs inside a venv holding the dynamo-base wheel of the committed vLLM 0.8.4 series plus NIXL (built and
cached by the toolkit), through toolkit/serving/drivers/pdload.py. One process holds a producer and a consumer
KV cache on the CPU in vLLM 0.8.4's FlashAttention layout (default 24 layers of (2, 512, 16, 8, 128)
float16) and moves one request's blocks (default 128 blocks = 2048 tokens = 192 MiB) from scattered
producer block ids to different scattered consumer block ids:

  torch_blocks      per layer index_select + index_copy_ of the same blocks: THE BASELINE of every ratio
  torch_contiguous  one copy_ of the same number of bytes between flat buffers (memory bandwidth, shown
                    for reference; no block mapping)
  shm               SharedStorageConnectorV1 under /dev/shm: producer start_step(save) + end_step, then
                    consumer steps until the load is reported in finished_recving
  disk              the same under the temp dir (a page-cache round trip: the file is gone within a second)
  nixl              NixlConnectorV1 (UCX), both workers in the process, 127.0.0.1: consumer start_step(load)
                    until finished_recving; skipped with the reason when nixl does not import

Two phases, each interleaved (rounds run every method once in a rotated order, so machine noise hits all
alike; the first round is a warm-up) and each with its own torch baseline: shared storage first, then
NIXL. Each NIXL agent's UCX progress thread keeps a core busy from its creation on, which slows all else
in the process: the shared-storage runs happen before the agents exist, NIXL's baseline runs beside them.
Every timed transfer lands in zeroed blocks and is compared byte for byte afterwards (outside the
timing). The issue sets no number to reach: the ratios (> 1: slower than the torch copy) are printed,
nothing is asserted. torch runs on one thread (OMP_NUM_THREADS=1), as in the other benches.

Run: .venv/bin/python bench/pd_transfer.py [--repeat N] [--blocks N] [--layers N] [--no-disk] [--no-nixl] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from toolkit.conformance.envs import free_port, run_bench_child, vllm_env
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.wheel.overlay import build_overlay

ROOT = Path(__file__).resolve().parent.parent
CHILD = "pdload"  # the driver in toolkit/serving/drivers/, run by path in the venv
BASELINE = "torch_blocks"
LABELS = {
    "torch_blocks": "torch, per block (baseline)",
    "torch_contiguous": "torch, one contiguous copy_",
    "shm": "shared storage, /dev/shm",
    "disk": "shared storage, temp dir",
    "nixl": "NIXL (UCX), same process",
}


def child(venv: Path, request: dict) -> dict:
    return run_bench_child(venv, CHILD, request)  # a failed child raises VpatchError with its last line


def table(phase: dict[str, Any]) -> None:
    print(f"    {'method':<30} {'median':>9} {'GiB/s':>7} {'× baseline':>11} {'CPU/wall':>9}   runs (ms)")
    for name, median in phase["median_s"].items():
        runs = " ".join(f"{t * 1e3:.0f}" for t in phase["times"][name])
        print(
            f"    {LABELS.get(name, name):<30} {median * 1e3:7.1f}ms {phase['gib_per_s'][name]:7.2f} "
            f"{phase['ratio'][name]:10.2f}x {phase['cpu_per_wall'][name]:9.2f}   {runs}"
        )


def report(result: dict[str, Any]) -> None:
    config = result["config"]
    shape = (2, config["num_blocks"], config["block_size"], config["heads"], config["head_size"])
    tokens = result["blocks"] * config["block_size"]
    print(
        f"KV transfer of one request: {result['blocks']} blocks ({tokens} tokens) × {config['layers']} layers, "
        f"K and V = {result['bytes'] / 2**20:.1f} MiB"
    )
    print(
        f"  CPU caches in FlashAttention layout {shape} {config['dtype']} per layer, scattered block ids, "
        f"producer ≠ consumer; {result['repeat']} rounds after a warm-up, interleaved; medians; "
        f"torch threads {result['torch_threads']}"
    )
    phases = result["phases"]
    if "shared_storage" in phases:
        print("  phase 1, shared storage (no NIXL agent alive)")
        table(phases["shared_storage"])
        for name in ("shm", "disk"):
            if name in result:
                split = result[name]
                print(
                    f"    {name} ({split['storage_path']}): save (producer end_step) "
                    f"{split['save_s'] * 1e3:.0f} ms + load (consumer steps) {split['load_s'] * 1e3:.0f} ms"
                )
    if "nixl" in phases:
        print("  phase 2, NIXL (both agents alive: their progress threads spin, see CPU/wall)")
        table(phases["nixl"])
        nixl = result["nixl"]
        print(
            f"    set-up, not in the runs: two agents registering their caches {nixl['register_s'] * 1e3:.0f} ms; "
            f"first transfer (metadata exchange + remote descriptors) {nixl['first_transfer_s'] * 1e3:.0f} ms; "
            f"producer's finished_sending {nixl['ack_after_load_s'] * 1e3:.1f} ms after the load (median)"
        )
    for name, why in result["skipped"].items():
        print(f"  {LABELS.get(name, name)}: skipped, {why}")
    print(f"ratios against the torch per-block copy of the same blocks in the same phase ({BASELINE}); > 1 is slower:")
    for phase in phases.values():
        for name, ratio in phase["ratio"].items():
            if name in ("shm", "disk", "nixl"):
                connector = "nixl" if name == "nixl" else f"shared_storage[{name}]"
                print(
                    f"  {connector}_time / torch_copy_time = {ratio:.2f}x "
                    f"(median of same-round ratios {phase['paired_ratio'][name]:.2f}x)"
                )
    verified = sorted({name for phase in phases.values() for name in phase["verified"]})
    print(f"bytes verified after every timed transfer: {', '.join(verified)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="rounds after the warm-up")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--num-blocks", type=int, default=512, help="blocks in each KV cache")
    parser.add_argument("--blocks", type=int, default=128, help="blocks the request transfers")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--no-disk", action="store_true", help="skip the shared-storage run under the temp dir")
    parser.add_argument("--no-nixl", action="store_true", help="skip the NIXL phase")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args()
    if 2 * args.blocks > args.num_blocks:
        parser.error("--num-blocks must be at least twice --blocks (disjoint producer and consumer ids)")
    project = Project.load(load_options({"root": str(ROOT)}))
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_overlay(project, project.pins.get("0.8.4"), Path(tmp)).path
        venv = vllm_env(project.options.cache_dir, wheel, nixl=True)
    result = child(
        venv,
        {
            "layers": args.layers,
            "num_blocks": args.num_blocks,
            "blocks": args.blocks,
            "block_size": args.block_size,
            "heads": 8,
            "head_size": 128,
            "dtype": "float16",
            "seed": 1234,
            "repeat": args.repeat,
            "disk": not args.no_disk,
            "nixl": not args.no_nixl,
            "port": free_port(),
        },
    )
    if args.json:
        print(json.dumps({"baseline": BASELINE, "venv": str(venv), **result}, indent=1, sort_keys=True))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
