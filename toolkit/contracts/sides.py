"""The two sides of a contract run and the transport configurations each is run under.

A side is a `BuildSpec` (toolkit/records/contract.py): a release, its build kind (dynamo-base: the
series' overlay wheel; stock: the pinned upstream wheel; stock+plugin: the upstream wheel with extra wheels
installed beside it) and a venv holding it. Transport configurations are what deployments use:

- `bind`: the engine's endpoint `tcp://*:P` (every build binds it; the consumer connects to
  `tcp://127.0.0.1:P`);
- `loopback`: `tcp://127.0.0.1:P`, for which dynamo-base binds but upstream vLLM (0.9.0+) *connects* its PUB
  socket, so the consumer binds (`vpatch kv-watch --bind`);

each with a replay endpoint (both builds' publishers have a replay ROUTER) and with both prefix-caching
hash algorithms (`builtin`, `sha256`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.conformance.envs import vllm_env
from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact
from toolkit.project import Project
from toolkit.records.conformance import WheelRef
from toolkit.records.contract import BuildSpec

HASH_ALGOS = ("builtin", "sha256")
PLUGIN_ENDPOINT_ENV = "DYNAMO_LOAD_METRICS_ENDPOINT"  # where the dynamo-base plugin binds (docs/plugin.md)
# stock + plugin runs publish their KV events through the plugin's inline publisher (docs/plugin.md), so the
# kv-routing contracts are proven over it; the engine reports the publisher class it built, checked against this
PLUGIN_PUBLISHER_ENV = {"DYNAMO_KV_EVENTS_PUBLISHER": "inline"}
INLINE_PUBLISHER = "dynamo_base_plugin.event_publisher.InlineZmqEventPublisher"
UPSTREAM_PUBLISHER = "vllm.distributed.kv_events.ZmqEventPublisher"
ENDPOINT_FORMS = ("bind", "loopback")


@dataclass(frozen=True)
class Side:
    name: str  # "old" or "new"
    build: BuildSpec
    venv: Path
    wheel: WheelRef


@dataclass(frozen=True)
class TransportConfig:
    form: str  # one of ENDPOINT_FORMS
    hash_algo: str

    @property
    def name(self) -> str:
        return f"{self.form}-{self.hash_algo}"

    def endpoints(self, pub: int, replay: int) -> tuple[str, str]:
        host = "*" if self.form == "bind" else "127.0.0.1"
        return f"tcp://{host}:{pub}", f"tcp://{host}:{replay}"


def plugin_endpoint(config: TransportConfig, port: int) -> str:
    """The plugin's load endpoint in the configuration's form (the plugin binds it either way)."""
    return f"tcp://{'*' if config.form == 'bind' else '127.0.0.1'}:{port}"


def all_configs() -> list[TransportConfig]:
    return [TransportConfig(form, algo) for form in ENDPOINT_FORMS for algo in HASH_ALGOS]


def parse_configs(text: str) -> list[TransportConfig]:
    """`bind-builtin,loopback-sha256` (or `all`) into configurations; bad names are one clear error."""
    if text == "all":
        return all_configs()
    known = {c.name: c for c in all_configs()}
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise VpatchError(
            f"unknown transport configuration(s) {', '.join(unknown) or '(none)'}: use {', '.join(known)}"
        )
    return [known[name] for name in wanted]


def consumer_binds(kind: str, endpoint: str) -> bool:
    """Whether the consumer must bind `endpoint`: dynamo-base's publisher always binds; upstream's binds only
    for `*`, `::`, ipc:// and inproc:// endpoints and connects otherwise (vllm/distributed/kv_events.py)."""
    if kind == "dynamo-base":
        return False
    return not ("*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://")))


def consumer_endpoint(endpoint: str) -> str:
    """The address the consumer uses for an engine endpoint (a wildcard host is reached on loopback)."""
    return endpoint.replace("tcp://*:", "tcp://127.0.0.1:")


def events_config(kind: str, endpoint: str, replay: str) -> dict:
    """The `--kv-events-config` a deployment of this build kind passes."""
    config = {"enable_kv_cache_events": True, "endpoint": endpoint, "replay_endpoint": replay}
    if kind != "dynamo-base":
        config["publisher"] = "zmq"  # upstream's default publisher is "null"
    return config


def prepare_side(project: Project, name: str, build: BuildSpec, *, nixl: bool = False) -> Side:
    """The venv of one side (built once into the cache). dynamo-base needs the release's series. The side's
    recorded build names its extra wheels by file name, with what each is (`plugins`)."""
    from toolkit.cache import sha256_file
    from toolkit.conformance.suite import patched_wheel
    from toolkit.plugin.ref import plugin_ref

    pin = project.pins.get(build.version)
    cache = project.options.cache_dir
    extra = tuple(Path(w) for w in build.extra_wheels)
    for wheel in extra:
        if not wheel.is_file() or wheel.suffix != ".whl":
            raise VpatchError(f"{wheel}: not a wheel file (extra wheel of the {build.label} side)")
    if build.kind == "dynamo-base":
        if not project.has_series(pin):
            raise VpatchError(f"no dynamo-base series for {pin.label}: the {name} side cannot be built")
        series = project.series(pin)
        wheel = patched_wheel(project, pin, series)
        ref = WheelRef(wheel.name, sha256_file(wheel), series.fingerprint())
        over = None
        if pin.wheels and not extra:  # a thin layer of hard links over the stock venv (the cpu tier's too)
            over = vllm_env(cache, fetch_artifact(cache, pin.wheels[0], quiet=True), sha256=pin.wheels[0].sha256)
        return Side(name, build, vllm_env(cache, wheel, nixl=nixl, extra=extra, over=over), ref)
    artifact = pin.wheels[0]
    wheel = fetch_artifact(cache, artifact, quiet=True)
    venv = vllm_env(cache, wheel, sha256=artifact.sha256, nixl=nixl, extra=extra)
    if extra:
        refs = tuple(plugin_ref(w) for w in extra)
        build = BuildSpec(build.version, build.kind, tuple(w.name for w in extra), refs)
    return Side(name, build, venv, WheelRef(artifact.file, artifact.sha256))
