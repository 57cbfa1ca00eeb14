"""The dynamo-base plugin's per-step send on a cold cache: its `LoadPublisher.send` against pyzmq's `send_multipart`
of the same frames (what the plugin did before), on one real PUB socket, followed over TCP loopback by a SUB in
another process. Each call comes after ~3.5 ms of single-thread torch work (an engine step's worth), so its code
and data are as cold as they are on vLLM's stat-logger thread; the two sides alternate per repetition.

Printed per side: the sending thread's CPU per call (median, mean) and libzmq's I/O thread's CPU per message. No
goal: it says where the plugin's part of bench/engine_steps.py's per-step overhead goes.

Run with an engine venv's Python (torch, msgspec, pyzmq):
  ~/.cache/vpatch/envs/engine-0.32.0-*/bin/python bench/plugin_send.py [--calls 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: its plugin sources, no install


def subscriber(endpoint: str) -> int:
    import zmq

    sub: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 600_000)
    sub.connect(endpoint)
    while sub.recv_multipart()[-1] != b"quit":
        pass
    return 0


def zmq_threads_cpu() -> float:
    """CPU seconds so far of this process's libzmq I/O threads (comm "ZMQbg/IO/..."), by their kernel tid."""
    total = 0.0
    for entry in os.listdir("/proc/self/task"):
        try:
            if Path(f"/proc/self/task/{entry}/comm").read_text().startswith("ZMQbg/IO"):
                total += time.clock_gettime(((~int(entry)) << 3) | 6)
        except OSError:
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sub", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sub:
        return subscriber(args.sub)
    import torch
    import zmq

    from toolkit.serving.plugin.dynamo_base_plugin.figures import LoadTotals
    from toolkit.serving.plugin.dynamo_base_plugin.publisher import LoadPublisher, encode_message

    torch.set_num_threads(1)
    publisher = LoadPublisher("tcp://127.0.0.1:*")
    endpoint = publisher.socket.getsockopt_string(zmq.LAST_ENDPOINT)
    sub = subprocess.Popen([sys.executable, __file__, "--sub", endpoint])
    time.sleep(1.5)  # the subscription has arrived
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    stats: Any = type("Stats", (), {"num_running_reqs": 8, "num_waiting_reqs": 1, "kv_cache_usage": 0.25})()
    totals = LoadTotals()

    def before(engine_index: int, figures: dict[str, Any]) -> None:
        seq = publisher.seq
        publisher.seq += 1
        frames = [publisher.topic, seq.to_bytes(8, "big"), encode_message(seq, engine_index, figures)]
        publisher.socket.send_multipart(frames, flags=zmq.NOBLOCK)

    sides = {"plugin's send": publisher.send, "send_multipart": before}
    found: dict[str, list[tuple[float, float, float]]] = {k: [] for k in sides}
    for turn in range(args.repeat + 1):  # the first round warms up, untimed
        for name in sides if turn % 2 else reversed(sides):
            send, spent = sides[name], []
            zmq_before = zmq_threads_cpu()
            for _ in range(args.calls):
                end = time.thread_time() + 0.0035
                while time.thread_time() < end:
                    torch.mm(a, b)
                tick = time.thread_time()
                send(0, totals.figures(stats))
                spent.append(time.thread_time() - tick)
            zmq_spent = (zmq_threads_cpu() - zmq_before) / args.calls
            if turn:
                found[name].append((statistics.median(spent), statistics.fmean(spent), zmq_spent))
    publisher.socket.send_multipart([b"", b"", b"quit"])
    sub.wait(timeout=60)
    publisher.close()
    print(f"{args.calls} calls per side and round, {args.repeat} rounds, each call after 3.5 ms of torch work")
    for name, rows in found.items():
        cells = ", ".join(f"median {m * 1e6:.0f} / mean {n * 1e6:.0f} / libzmq {z * 1e6:.0f}" for m, n, z in rows)
        print(f"  {name:15} µs per call, sending thread (median / mean) and libzmq's I/O thread: {cells}")
    ours, base = (statistics.median(r[0] for r in found[k]) for k in sides)
    print(f"  sending thread, plugin's send / send_multipart: {ours / base:.2f}x (median of the rounds' medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
