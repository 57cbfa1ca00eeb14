"""Wall time of .ci/run's test command (`python -m pytest -q`), per test group and whole (issue 20: ≤ 10 min quiet).

Each run is a fresh pytest process under `nice`, one at a time: the unit group (`-m "not real and not engine"`),
the real-vLLM group (`-m "real and not engine"`), the engine group (`-m engine`), then the whole suite, each on
the workers pyproject.toml sets (`-n 2`) and, with `--one-process`, also with `-n 0` beside it (the ratio is
what the two workers buy on this machine now). The load average is printed with every line: on a loaded
machine read the ratios, not the minutes. Warm ~/.cache/vpatch assumed (a cold one adds the downloads).

    .venv/bin/python bench/suite_time.py [--groups unit,real,engine,all] [--one-process] [PATH ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SELECTIONS = {
    "unit": ["-m", "not real and not engine"],
    "real": ["-m", "real and not engine"],
    "engine": ["-m", "engine"],
    "all": [],
}


def timed(argv: list[str]) -> tuple[float, int, str]:
    began = time.monotonic()
    proc = subprocess.run(
        ["nice", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return time.monotonic() - began, proc.returncode, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="unit,real,engine,all")
    parser.add_argument("--one-process", action="store_true", help="also run each group with -n 0")
    parser.add_argument("paths", nargs="*", help="test paths (default: the whole suite, as .ci/run)")
    args = parser.parse_args()
    failed = False
    for group in args.groups.split(","):
        modes = [("-n 2", ["-n", "2"])] + ([("-n 0", ["-n", "0"])] if args.one_process else [])
        seconds: dict[str, float] = {}
        for label, flags in modes:
            load = os.getloadavg()[0]
            seconds[label], code, last = timed([*SELECTIONS[group], *flags, *args.paths])
            failed |= code not in (0, 5)
            print(f"{group:>6} {label}: {seconds[label] / 60:5.1f} min (load {load:.1f}); exit {code}; {last}")
        if len(seconds) == 2:
            print(f"{group:>6} -n 2 / -n 0: {seconds['-n 2'] / seconds['-n 0']:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
