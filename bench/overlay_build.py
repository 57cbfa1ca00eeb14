"""The overlay build of the real vLLM 0.8.4 wheel against `cp` of the same wheel, and against a source build.

Compared in one run:

  baseline   `cp` of the pinned stock wheel (294 MB) to a new file in the output directory;
  ours       `toolkit.wheel.overlay.build_overlay`: verify the stock wheel's sha256, apply the
             series on a sparse checkout of the cached base, write the new wheel (unchanged
             members copied as raw byte ranges, changed ones deflated, dist-info rewritten);
  source     `toolkit.wheel.source.build_source` with VLLM_TARGET_DEVICE=empty (pypa/build,
             no CUDA), reported beside it.

Goals: overlay ≤ 1.5× cp (ratio of medians); source ≥ 20× overlay. Also reported: the overlay build
when the series' patched files are not cached yet (the first build after the series changed applies
it with `git apply --cached` in a throw-away index).

The series is a real one-patch series made on the fly (block_pool.py edited, one module
added) in a copy of patches/; the repository's patches/ is never written. The stock wheel,
base and build environment come from the cache (the first run fills it; that time is not
measured).

Run: .venv/bin/python bench/overlay_build.py [--repeat N] [--source-repeat N] [--strict]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: the test harness

from tests.harness import commit_in
from toolkit.export import plan_export, write_export
from toolkit.index import fetch_artifact
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.wheel.overlay import build_overlay
from toolkit.wheel.source import build_source

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.8.4"
OVERLAY_GOAL = 1.5
SOURCE_GOAL = 20.0


def make_project(workdir: Path) -> Project:
    shutil.copytree(ROOT / "patches", workdir / "patches")
    project = Project.load(load_options({"root": str(workdir), "cache_dir": str(load_options().cache_dir)}))
    pin = project.pins.get(VERSION)
    with project.scratch_checkout(pin) as checkout:
        target = checkout.path / "vllm/v1/core/block_pool.py"
        commit_in(
            checkout.path,
            {
                "vllm/v1/core/block_pool.py": target.read_text() + "\n# dynamo-base marker\n",
                "vllm/v1/core/bench_marker.py": "ENABLED = False\n",
            },
            subject="[V1] bench marker",
        )
        write_export(plan_export(checkout, project.series_dir(pin)))
    return project


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--source-repeat", type=int, default=1)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-overlay-") as tmp:
        workdir = Path(tmp)
        project = make_project(workdir)
        pin = project.pins.get(VERSION)
        stock = fetch_artifact(project.options.cache_dir, pin.wheels[0])
        out = workdir / "dist"
        out.mkdir()
        build_overlay(project, pin, out)  # warm the page cache and the base for both sides
        cp_times, overlay_times, cold_times = [], [], []
        for index in range(args.repeat):
            # Both sides write a new file: the previous outputs are removed beforehand, untimed.
            for old in out.iterdir():
                old.unlink()
            copy_target = out / f"copy-{index}.whl"
            sides = [
                ("cp", lambda t=copy_target: subprocess.run(["cp", str(stock), str(t)], check=True)),
                ("overlay", lambda: build_overlay(project, pin, out)),
            ]
            if index % 2:
                sides.reverse()
            for name, action in sides:
                (cp_times if name == "cp" else overlay_times).append(timed(action))
            # Cold: the series' patched files are not cached yet (a new or edited series).
            for old in out.glob("vllm-*.whl"):
                old.unlink()
            shutil.rmtree(project.options.cache_dir / "patched", ignore_errors=True)
            cold_times.append(timed(lambda: build_overlay(project, pin, out)))
        build_source(project, pin, workdir / "src-warm", target_device="empty")  # fills the build env
        source_times = [
            timed(lambda i=i: build_source(project, pin, workdir / f"src-{i}", target_device="empty"))
            for i in range(args.source_repeat)
        ]
    cp, overlay, source = (statistics.median(t) for t in (cp_times, overlay_times, source_times))
    overlay_ratio, source_ratio = overlay / cp, source / overlay
    print(f"stock wheel: {stock.name} ({stock.stat().st_size / 1e6:.1f} MB), {args.repeat} repetitions")
    print(f"{'side':<28}{'median':>10}{'min':>10}{'max':>10}")
    for name, times in (
        ("cp (baseline)", cp_times),
        ("overlay build", overlay_times),
        ("source build (empty)", source_times),
    ):
        print(f"{name:<28}{statistics.median(times):>9.3f}s{min(times):>9.3f}s{max(times):>9.3f}s")
    overlay_ok = overlay_ratio <= OVERLAY_GOAL
    source_ok = source_ratio >= SOURCE_GOAL
    print(f"overlay / cp     = {overlay_ratio:.2f}x (goal ≤ {OVERLAY_GOAL}x): {'PASS' if overlay_ok else 'FAIL'}")
    print(f"source / overlay = {source_ratio:.1f}x (goal ≥ {SOURCE_GOAL}x): {'PASS' if source_ok else 'FAIL'}")
    print(f"(overlay with the series not yet cached: {statistics.median(cold_times) / cp:.2f}x cp)")
    return 1 if args.strict and not (overlay_ok and source_ok) else 0


if __name__ == "__main__":
    sys.exit(main())
