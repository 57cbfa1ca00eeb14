"""A KV-event publisher in its own process that replays recorded frames (tests/fixtures/kv-streams/ or frames
a test writes) through real ZMQ sockets, as an engine would: PUB stream `[topic, seq, payload]`, and a ROUTER
answering `[b"", start]` with the buffered frames and the end marker.

    python kv_stream_peer.py FRAMES.jsonl [--pub EP] [--connect] [--replay EP] [--delay S]
                             [--replay-never-ends]

Prints `READY <pub endpoint> <replay endpoint or ->` once its sockets are up, publishes after `--delay`
(printing `PUBLISHED` after the last frame),
then serves replay until its stdin closes. `--connect` connects the PUB socket instead of binding it (what
stock vLLM does for `tcp://host:port`). `--replay-never-ends`: answer replay requests without the end
marker, one buffered frame every 50 ms, forever.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time

import zmq

END_OF_REPLAY = b"\xff" * 8


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("frames")
    parser.add_argument("--pub", default="tcp://127.0.0.1:*")
    parser.add_argument("--connect", action="store_true")
    parser.add_argument("--replay")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--replay-never-ends", action="store_true")
    args = parser.parse_args()
    with open(args.frames, encoding="utf-8") as handle:
        frames = [json.loads(line) for line in handle if line.strip()]
    ctx: zmq.Context = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    if args.connect:
        pub.connect(args.pub)
        pub_endpoint = args.pub
    else:
        pub.bind(args.pub)
        pub_endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    router = None
    replay_endpoint = "-"
    if args.replay:
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.bind(args.replay)
        replay_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    print(f"READY {pub_endpoint} {replay_endpoint}", flush=True)
    closed = threading.Event()

    def wait_for_stdin_eof() -> None:  # the parent closes our stdin to stop us
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait_for_stdin_eof, daemon=True).start()
    start = time.monotonic() + args.delay
    sent: list[tuple[bytes, bytes, bytes]] = []
    pending = [
        (base64.b64decode(f["topic"]), f["seq"].to_bytes(8, "big"), base64.b64decode(f["payload"])) for f in frames
    ]
    endless: list[tuple[bytes, int]] = []  # (client, index of the next frame to trickle)
    while not closed.is_set():
        if pending and time.monotonic() >= start:
            frame = pending.pop(0)
            pub.send_multipart(frame)
            sent.append(frame)
            if not pending:
                print("PUBLISHED", flush=True)
        if router is not None and router.poll(0):
            client, _, start_seq = router.recv_multipart()
            wanted = int.from_bytes(start_seq, "big")
            replay = [(seq, payload) for _, seq, payload in sent if int.from_bytes(seq, "big") >= wanted]
            if args.replay_never_ends:
                endless.append((client, 0))
            else:
                for seq, payload in replay:
                    router.send_multipart([client, b"", seq, payload])
                router.send_multipart([client, b"", END_OF_REPLAY, b""])
        if endless and sent:
            time.sleep(0.05)
            endless = [(client, i + 1) for client, i in endless]
            for client, i in endless:
                _, seq, payload = sent[i % len(sent)]
                router.send_multipart([client, b"", seq, payload])  # type: ignore[union-attr]
        elif not (pending and time.monotonic() >= start):
            time.sleep(0.005)
    pub.close(linger=0)
    if router is not None:
        router.close(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
