"""Runs inside a vLLM venv (the dynamo-base wheel), run by path: KV-event load measurements.

Started by bench/kv_events_overhead.py and by the real-vLLM tests, as
`python kvload.py '{"mode": ..., ...}'`; prints one `VPATCH-BENCH {json}` line.

Modes:
  overhead    step time of vLLM's V1 scheduler on a workload, KV events off vs on (ZMQ, subscriber attached),
              interleaved; prints one JSON line.
  throughput  the ZMQ publisher under load: BATCHES batches of EVENTS events each, paced to RATE events/s,
              a subscriber in another thread counting what arrives; prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time

# The sibling drivers; importable because Python puts a script's own directory first on sys.path.
import fake_engine
import runner


def subscriber(endpoint: str, stop: threading.Event, counts: dict) -> None:
    import msgspec
    import zmq

    context: zmq.Context = zmq.Context.instance()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.connect(endpoint)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    decoder = msgspec.msgpack.Decoder()
    while not stop.is_set() or socket.poll(200):
        if socket.poll(50):
            frames = socket.recv_multipart()
            counts["batches"] += 1
            counts["events"] += len(decoder.decode(frames[2])["events"])
    socket.close()


def overhead(args: dict) -> dict:
    """Step time with events off and on, on engines built once (setup is not measured), interleaved."""
    fake_engine.use_cpu_platform()
    model_dir = tempfile.mkdtemp()
    with open(os.path.join(model_dir, "config.json"), "w") as handle:
        json.dump(fake_engine.MODEL_CONFIG, handle)
    endpoint = args["endpoint"]
    stop = threading.Event()
    counts = {"batches": 0, "events": 0}
    thread = threading.Thread(target=subscriber, args=(endpoint, stop, counts), daemon=True)
    thread.start()
    modes = ("off", "null", "on")
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    configs = {
        "off": None,
        "null": {"enable_kv_cache_events": True, "publisher": "null"},
        "on": {"enable_kv_cache_events": True, "endpoint": endpoint},
    }
    events = 0
    for repetition in range(args["repeat"]):
        order = modes if repetition % 2 == 0 else tuple(reversed(modes))
        for mode in order:
            engine = fake_engine.Engine(
                num_blocks=96,
                max_num_seqs=8,
                max_batched=256,
                kv_events=configs[mode],
                model_dir=model_dir,
                hash_algo="builtin",
            )
            time.sleep(0.3)  # let the subscriber finish joining a fresh PUB socket
            times[mode].append(
                runner.run_stream(
                    engine, steps=args["steps"], seed=repetition, model_seconds=args.get("model_ms", 0) / 1000
                )
            )
            if mode == "on":
                events += sum(len(e) for _, e in engine.recorded)
            engine.shutdown()
    time.sleep(0.5)
    stop.set()
    thread.join(timeout=10)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    return {
        "off": times["off"],
        "on": times["on"],
        "null": times["null"],
        "ratio": on / off,
        "null_ratio": statistics.median(times["null"]) / off,
        "steps": args["steps"],
        "events_published": events,
        "received_batches": counts["batches"],
        "received_events": counts["events"],
    }


def throughput(args: dict) -> dict:
    fake_engine.use_cpu_platform()
    from vllm.config import KVEventsConfig
    from vllm.v1.core.kv_events import BlockStored, ZmqEventPublisher

    publisher = ZmqEventPublisher(KVEventsConfig(enable_kv_cache_events=True, endpoint=args["endpoint"]))
    stop = threading.Event()
    counts = {"batches": 0, "events": 0}
    thread = threading.Thread(target=subscriber, args=(publisher.endpoint, stop, counts), daemon=True)
    thread.start()
    time.sleep(0.5)  # subscription handshake
    per_batch, batches, rate = args["events"], args["batches"], args["rate"]
    interval = per_batch / rate
    events = [
        BlockStored(
            block_hashes=[i],
            parent_block_hash=i - 1 if i else None,
            token_ids=list(range(16)),
            block_size=16,
            lora_id=None,
        )
        for i in range(per_batch)
    ]
    durations = []
    start = time.perf_counter()
    for index in range(batches):
        target = start + index * interval
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        begin = time.perf_counter()
        publisher.publish(list(events))
        durations.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - start
    publisher.shutdown()
    time.sleep(0.5)
    stop.set()
    thread.join(timeout=10)
    durations.sort()
    return {
        "events_sent": per_batch * batches,
        "seconds": elapsed,
        "events_per_second": per_batch * batches / elapsed,
        "received_events": counts["events"],
        "dropped_batches": publisher.num_dropped,
        "publish_p50_us": durations[len(durations) // 2] * 1e6,
        "publish_p99_us": durations[int(len(durations) * 0.99)] * 1e6,
        "publish_max_us": durations[-1] * 1e6,
        "interval_us": interval * 1e6,
    }


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    result = overhead(request) if request["mode"] == "overhead" else throughput(request)
    print("VPATCH-BENCH " + json.dumps(result), flush=True)
