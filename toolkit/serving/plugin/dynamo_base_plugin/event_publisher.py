"""The inline KV-event publisher, and its registration: the `vllm.general_plugins` entry point `register()`.

Runs INSIDE a vLLM venv (see the package docstring). `InlineZmqEventPublisher` is vLLM's own `ZmqEventPublisher`
(vllm/distributed/kv_events.py, 0.9.0 to 0.32.0) with its publisher thread taken out: `publish()` encodes the
batch and sends it on the calling thread, the engine thread, through inline_events.InlineSender (whose docstring
has the wire and why it is thread-safe). The rest is upstream's, inherited: the endpoint's bind-or-connect rule
and `tcp://*:0` resolution (`_socket_setup`), the data-parallel port offset (`offset_endpoint_port`, 0.9.1+),
`hwm` on the PUB socket, `buffer_steps`, the topic, and the configuration it reports (0.32.0's
`get_publisher_config`, with publisher "zmq": it speaks that wire). `max_queue_size` bounds nothing: there is no
queue.

Selection: `DYNAMO_KV_EVENTS_PUBLISHER=inline` in the environment of vLLM's processes. The package's
`register_kv_events()` (a `vllm.general_plugins` entry point, so it runs in every vLLM process before the engine
builds its scheduler) then imports this module, and `install()` adds the class to vLLM's registry under
`dynamo-inline` (`EventPublisherFactory.register_publisher`, vLLM's hook since 0.9.0) and makes the name "zmq"
build it in that process. Why "zmq" and not only the new name: from vLLM 0.13.0 `KVEventsConfig.publisher` is
`Literal["null", "zmq"]`, which pydantic enforces, so `--kv-events-config '{"publisher": "dynamo-inline"}'` is
refused before any registry is asked (0.9.0's `publisher: str` takes it). The wire is upstream's, so the consumer
cannot tell; a deployment opts in by the variable, and each publisher logs a line saying so (INFO, through
vLLM's logger: "dynamo-base plugin: KV events published inline on the engine thread (ENDPOINT)"). Unset (or
"zmq"), this module is not imported and vLLM's publisher is untouched; another value is a logged error, upstream's
publisher stays.
"""

from __future__ import annotations

import logging
from typing import Any

from vllm.distributed import kv_events
from vllm.distributed.kv_events import EventPublisherFactory, ZmqEventPublisher

from .inline_events import InlineSender

# under vLLM's logger, whose handler and INFO level vLLM sets up: the selection line shows in the engine's log
logger = logging.getLogger("vllm.dynamo_base_plugin")

NAME = "dynamo-inline"


def _replay_sends_topic() -> bool:
    """True when this release's replay answer carries the topic frame (0.32.0; not up to 0.22.1): read from the
    names upstream's `_service_replay` refers to, so the layout follows the release's own code."""
    return "_topic_bytes" in ZmqEventPublisher._service_replay.__code__.co_names


class InlineZmqEventPublisher(ZmqEventPublisher):
    """vLLM's ZmqEventPublisher, encoding and sending in `publish()` on the engine thread (no publisher thread)."""

    def __init__(
        self,
        data_parallel_rank: int = 0,
        endpoint: str = "tcp://*:5557",
        replay_endpoint: str | None = None,
        buffer_steps: int = 10_000,
        hwm: int = 100_000,
        max_queue_size: int = 100_000,
        topic: str = "",
    ) -> None:
        # upstream's __init__ starts its thread, so it is not called; these are the attributes its helpers read
        import zmq

        self._data_parallel_rank = self._dp_rank = data_parallel_rank
        offset = getattr(ZmqEventPublisher, "offset_endpoint_port", None)  # 0.9.1+; 0.9.0 has no DP rank
        self._endpoint = offset(endpoint, data_parallel_rank) if offset else endpoint
        self._replay_endpoint = offset(replay_endpoint, data_parallel_rank) if offset else replay_endpoint
        self._hwm = hwm
        self._ctx: Any = zmq.Context.instance()
        self._pub: Any = None
        self._replay: Any = None
        try:
            self._socket_setup()
        except BaseException:
            for sock in (self._pub, self._replay):
                if sock is not None:
                    sock.close(linger=0)
            raise
        self._topic_bytes = topic.encode("utf-8")
        if "get_publisher_config" in vars(ZmqEventPublisher):  # 0.32.0: the engine reports what it publishes
            self._publisher_config = kv_events.KVEventsConfig(
                enable_kv_cache_events=True,
                publisher="zmq",
                endpoint=self._endpoint,
                replay_endpoint=self._replay_endpoint,
                buffer_steps=buffer_steps,
                hwm=hwm,
                max_queue_size=max_queue_size,
                topic=topic,
            )
        pub: Any = self._pub  # set by upstream's _socket_setup
        self._sender = InlineSender(
            pub, self._replay, topic=topic, buffer_steps=buffer_steps, replay_topic=_replay_sends_topic()
        )
        self._running = True
        logger.info("dynamo-base plugin: KV events published inline on the engine thread (%s)", self._endpoint)

    def publish(self, events: Any) -> None:
        if not self._running:
            raise RuntimeError("Publisher is closed")
        if getattr(events, "data_parallel_rank", 0) is None:  # 0.9.0's EventBatch has no such field
            events.data_parallel_rank = self._data_parallel_rank
        self._sender.send(events)

    def shutdown(self) -> None:
        """Join the replay thread (it closes the ROUTER socket), close the PUB socket; no socket lingers."""
        self._running = False
        self._sender.close()


def install() -> None:
    """Make "zmq" and "dynamo-inline" build InlineZmqEventPublisher in this process (idempotent); called by the
    package's `register_kv_events` when DYNAMO_KV_EVENTS_PUBLISHER=inline."""
    registry = EventPublisherFactory._registry
    if NAME not in registry:
        EventPublisherFactory.register_publisher(NAME, InlineZmqEventPublisher)
    registry["zmq"] = InlineZmqEventPublisher  # the name 0.13.0+ configurations can give (module docstring)
