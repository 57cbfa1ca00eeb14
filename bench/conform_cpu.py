"""The full `cpu` conformance tier for vLLM 0.8.4: warm (venvs cached) and cold (an empty cache).

Goal: warm under 5 minutes on this 2-core machine. The cold time is reported beside it: an empty cache
downloads the pinned sdist and wheel (about 300 MB), builds the CPU runtime layer (torch 2.13.0+cpu and
vLLM's import-time dependencies) and both vLLM venvs. The reference point printed with it is the time of
a bare `pip install torch==2.13.0` into a fresh venv, measured in the same run.

Run: .venv/bin/python bench/conform_cpu.py [--skip-cold] [--strict]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 300.0


def conform(cache_dir: str | None, out: Path) -> float:
    vpatch = Path(sys.executable).with_name("vpatch")
    argv = [str(vpatch), "--root", str(ROOT)]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    argv += ["conform", "0.8.4", "--tier", "cpu", "-o", str(out), "--json"]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"conform failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def torch_baseline(tmp: Path) -> float:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "torch")], check=True)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(tmp / "torch" / "bin" / "python"),
            "install",
            "-q",
            "--no-cache-dir",
            "torch==2.13.0",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-conform-") as tmp_name:
        tmp = Path(tmp_name)
        conform(None, tmp / "prime")  # make sure the normal cache is warm
        warm = conform(None, tmp / "warm")
        print(
            f"cpu tier, warm cache: {warm:.1f}s (goal < {GOAL_SECONDS:.0f}s): "
            f"{'PASS' if warm < GOAL_SECONDS else 'FAIL'}"
        )
        if not args.skip_cold:
            cold_cache = tmp / "cache"
            os.environ.pop("VPATCH_CACHE_DIR", None)
            cold = conform(str(cold_cache), tmp / "cold")
            baseline = torch_baseline(tmp)
            print(
                f"cpu tier, empty cache: {cold:.1f}s; a bare `pip install torch==2.13.0` in the same run: "
                f"{baseline:.1f}s ({cold / baseline:.1f}x)"
            )
    return 1 if args.strict and warm >= GOAL_SECONDS else 0


if __name__ == "__main__":
    sys.exit(main())
