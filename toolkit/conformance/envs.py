"""Venvs that hold one vLLM wheel (stock or dynamo-base) on top of the CPU runtime layer.

Keyed by the wheel's sha256 and cached under the cache root: the first use installs
the wheel (`--no-deps`, uv when present), later uses are instant. An entry whose
stamp is missing (an interrupted install) is rebuilt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from packaging.utils import parse_wheel_filename

from toolkit.cache import atomic_write_text, locked, sha256_file
from toolkit.envs import (
    compile_bytecode,
    create_venv,
    install,
    layer_on,
    offline_env,
    runtime_env,
    runtime_extra_env,
    transport_env,
    uv_binary,
    venv_python,
)
from toolkit.errors import VpatchError
from toolkit.serving.drivers import driver_command
from toolkit.wheel.linked_install import install_over

STAMP = "vpatch-vllm-env.json"


def vllm_env(
    cache_dir: Path,
    wheel: Path,
    *,
    sha256: str | None = None,
    nixl: bool = False,
    extra: tuple[Path, ...] = (),
    over: Path | None = None,
) -> Path:
    """`nixl=True`: NIXL (the P/D series' fast transport) is importable too, from its own cached layer.
    `extra`: wheels installed beside vLLM (a plugin for stock vLLM); the venv is keyed by them too.
    `over`: the venv of the stock wheel `wheel` was overlaid on (a dynamo-base wheel): the install is then
    hard links of that venv's unchanged files plus the few the series changed (toolkit/wheel/linked_install.py),
    not a second unpacking of the whole wheel. The venv is the same either way, so the key does not change."""
    digest = sha256 or sha256_file(wheel)
    extras = "".join(f"-{sha256_file(w)[:12]}" for w in extra)
    venv = cache_dir / "envs" / f"vllm-{digest[:20]}{extras}{'-nixl' if nixl else ''}"
    with locked(venv):
        stamp = _read_stamp(venv)
        if stamp is not None and venv_python(venv).exists():
            layers = runtime_layers(cache_dir, wheel, nixl)
            if stamp.get("layers", []) != [str(p) for p in layers[1:]]:  # the release's layers changed
                layer_on(venv, *on_path(layers))
                stamp = {**stamp, "layers": [str(p) for p in layers[1:]]}
                atomic_write_text(venv / STAMP, json.dumps(stamp) + "\n")
            if not stamp.get("bytecode"):  # made before venvs carried their .pyc: compiled once, now
                compile_bytecode(venv)
                atomic_write_text(venv / STAMP, json.dumps({**stamp, "bytecode": True}) + "\n")
            return venv
        if venv.exists():
            shutil.rmtree(venv)
        layers = runtime_layers(cache_dir, wheel, nixl)
        create_venv(venv)
        installer = "uv" if uv_binary() else "pip"
        how: dict = {}
        try:
            if extra:
                install(venv, [str(wheel), *map(str, extra)], installer=installer, no_deps=True)
                compile_bytecode(venv)
            else:
                how = install_over(venv, wheel, over, installer=installer)
            layer_on(venv, *on_path(layers))
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        stamp = {"wheel": wheel.name, "sha256": digest, **({"extra": [w.name for w in extra]} if extra else {})}
        stamp.update({"install": how} if how else {})
        stamp["layers"] = [str(p) for p in layers[1:]]
        atomic_write_text(venv / STAMP, json.dumps({**stamp, "bytecode": True}) + "\n")
    return venv


def runtime_layers(cache_dir: Path, wheel: Path, nixl: bool) -> list[Path]:
    """The layers under a venv of `wheel`: the runtime layer, what the wheel's release imports beyond it, and
    NIXL when asked for (the release read from the wheel's name, the local version label ignored)."""
    release = parse_wheel_filename(wheel.name)[1].release
    extra = runtime_extra_env(cache_dir, release)
    return [
        runtime_env(cache_dir),
        *([extra] if extra is not None else []),
        *([transport_env(cache_dir)] if nixl else []),
    ]


def on_path(layers: list[Path]) -> list[Path]:
    """`runtime_layers` in path order: the release's layers (and NIXL) first, the runtime layer last, so that a
    release layer can carry a newer version of a package the runtime layer has (0.11.1's transformers)."""
    return [*layers[1:], layers[0]]


def _read_stamp(venv: Path) -> dict | None:
    """The venv's stamp; None when it is missing or damaged (the venv is then built again)."""
    try:
        stamp = json.loads((venv / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def run_runner(
    venv: Path,
    out: Path,
    *,
    workloads: list[str] | None = None,
    kv_events: dict | None = None,
    hash_algo: str = "sha256",
    wait_for: Path | None = None,
    start_delay: float = 0.0,
    background: bool = False,
    timeout: float = 900,
    stat_loggers: bool = False,
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    log: Path | None = None,
) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run the scenario runner (the driver runner.py) inside `venv`, writing the trace to `out`.
    `stat_loggers`: feed each step's scheduler stats to the stat loggers vLLM's frontend would build (an
    installed plugin's among them); `extra_env` adds to the child's environment (e.g. the plugin's endpoint)."""
    argv = driver_command(venv_python(venv), "runner", "--out", str(out), "--hash-algo", hash_algo)
    if workloads:
        argv += ["--workloads", ",".join(workloads)]
    if kv_events is not None:
        argv += ["--kv-events", json.dumps(kv_events)]
    if wait_for is not None:
        argv += ["--wait-for", str(wait_for)]
    if start_delay:
        argv += ["--start-delay", str(start_delay)]
    if stat_loggers:
        argv.append("--stat-loggers")
    argv += extra_args
    env = offline_env()
    env.update(extra_env or {})
    env.setdefault("OMP_NUM_THREADS", "1")
    if background and log is not None:
        # a file, not a pipe: nobody reads the engine's log while it runs, and a full pipe would block it
        with log.open("wb") as handle:
            return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VpatchError(f"the scenario runner failed in {venv}: {last}")
    return proc


def run_pd(
    venv: Path,
    out: Path,
    *,
    mode: str,
    scenarios: list[str] | None = None,
    sabotage: bool = False,
    timeout: float = 900,
) -> dict:
    """Run the P/D scenarios (the driver pd_scenarios.py) inside `venv` (`mode` aggregated or disagg); returns
    their results."""
    argv = driver_command(venv_python(venv), "pd_scenarios", "--out", str(out), "--mode", mode)
    if scenarios:
        argv += ["--scenarios", ",".join(scenarios)]
    if sabotage:
        argv.append("--sabotage")
    env = offline_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VpatchError(f"the P/D scenario runner ({mode}) failed in {venv}: {last}")
    return json.loads(out.read_text(encoding="utf-8"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (toolkit/conformance/loopback.py)."""
    from toolkit.conformance.loopback import free_port as pick

    return pick()


def run_bench_child(venv: Path, driver: str, request: dict) -> dict:
    """Run a benchmark driver (kvload, pdload) inside `venv`; it prints its result as one `VPATCH-BENCH {json}`
    line."""
    env = offline_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        driver_command(venv_python(venv), driver, json.dumps(request)),
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise VpatchError(f"benchmark driver {driver}.py failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(line.removeprefix("VPATCH-BENCH "))


def read_trace(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
