"""Value translations the table names (`translator = "..."`): a dynamo-base value -> what stock gets.

Each takes the value and the rule's target and returns an `Outcome`: values to set, a refusal, or a
note; `events_off` means the whole --kv-events-config is left out (stock builds a publisher from any
kv_events_config it is given).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    sets: list[tuple[str, Any]] = field(default_factory=list)
    refusal: str | None = None
    note: str | None = None
    plugin: bool = False
    events_off: bool = False
    caution: str | None = None  # said as a warning when the value is dynamo-base's default, as a note when set


Translator = Callable[[Any, str, str], Outcome]
"""(value, target, rule text) -> Outcome."""


def publisher(value: Any, target: str, text: str) -> Outcome:
    if value == "zmq":
        return Outcome(sets=[(target, "zmq")])
    # dynamo-base's null publisher counts batches and sends nothing: nobody outside sees a difference from off.
    return Outcome(events_off=True, note="publisher null (batches counted, nothing sent) becomes events off")


def is_bind_endpoint(endpoint: str) -> bool:
    """Stock's rule (kv_events.py, every verified release): bind wildcards and ipc/inproc, connect the rest."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def bind_endpoint(value: Any, target: str, text: str) -> Outcome:
    if is_bind_endpoint(value):
        return Outcome(sets=[(target, value)])
    port = value.rsplit(":", 1)[-1]
    if not port.isdigit():
        return Outcome(refusal=f"{value!r} has no port stock could bind on every interface")
    wildcard = f"tcp://*:{port}"
    return Outcome(
        sets=[(target, wildcard)],
        note=f"{value} becomes {wildcard}: stock would connect to a host address instead of binding it",
    )


def load_metrics(value: Any, target: str, text: str) -> Outcome:
    if value is False:
        return Outcome(note="load metrics off: stock publishes none either")
    return Outcome(plugin=True, refusal=text)


def recompute_only(value: Any, target: str, text: str) -> Outcome:
    if value == "recompute":
        return Outcome(note="recompute is what stock does (" + text.split(";")[0] + ")")
    return Outcome(refusal=text)


def whole_seconds(value: Any, target: str, text: str) -> Outcome:
    seconds = math.ceil(value)
    note = f"{value} s rounded up to {seconds} s" if seconds != value else None
    return Outcome(sets=[(target, seconds)], note=note)


def ucx_only(value: Any, target: str, text: str) -> Outcome:
    if list(value) == ["UCX"]:
        return Outcome(note="UCX is the backend stock creates")
    return Outcome(refusal=text)


def true_only(value: Any, target: str, text: str) -> Outcome:
    if value is True:
        return Outcome(note="on, as stock runs it")
    return Outcome(refusal=text)


def vram_only(value: Any, target: str, text: str) -> Outcome:
    """NixlConnectorV1 registers the KV cache where it lives; stock's NixlConnector before 0.11.1 as VRAM only."""
    if value == "cuda":
        return Outcome(sets=[(target, value)], caution=text)
    return Outcome(refusal=text)


def buffer_device(value: Any, target: str, text: str) -> Outcome:
    """Stock's NixlConnector from 0.11.1 registers what kv_buffer_device names: "cuda" is right for a KV cache
    on the GPU only, which dynamo-base's configuration does not say (its connector reads the tensors' device)."""
    if value == "cuda":
        return Outcome(sets=[(target, value)], caution=text)
    return Outcome(sets=[(target, value)], note="host memory, registered as DRAM as dynamo-base does")


TRANSLATORS: dict[str, Translator] = {
    "publisher": publisher,
    "bind_endpoint": bind_endpoint,
    "load_metrics": load_metrics,
    "recompute_only": recompute_only,
    "whole_seconds": whole_seconds,
    "ucx_only": ucx_only,
    "true_only": true_only,
    "vram_only": vram_only,
    "buffer_device": buffer_device,
}
