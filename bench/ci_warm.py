"""`vpatch ci` cold against warm on a synthetic project, in the same run (issue 20, item 3).

The project: RELEASES synthetic vLLM releases served by a local index over HTTP on 127.0.0.1 (tests/harness),
each pinned, with a one-patch series made and exported as a maintainer would, and a stock wheel carrying an
incompressible compiled member of `--wheel-mb` MB (the real ones are ~300 MB, mostly such members).

- cold: `vpatch ci` in a process of its own with an empty cache and output directory (a fresh machine:
  every pinned file downloaded and hashed, bases materialized, every wheel built, verified, conformed);
- warm: the same command again, nothing changed: every step reused (the run asserts it).

Tiers: static only (cpu and engine need the real vLLM builds; their results are reused by the same keys),
`--no-install-check` (the synthetic wheels are not installable into a real venv). The sides alternate;
medians, min and max are printed, and warm / cold as the ratio.

Run: .venv/bin/python bench/ci_warm.py [--repeat 3] [--releases 3] [--wheel-mb 64] [--jobs N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/harness, when run as a script

from tests.harness import LocalIndex, Workspace, commit_in, default_tree, make_sdist, make_wheel, module_text  # noqa: E402


def make_project(work: Path, releases: int, wheel_mb: int) -> tuple[Workspace, list[str]]:
    index = LocalIndex(work / "index")
    index.start()
    ws = Workspace(work / "project", work / "setup-cache", index)
    blob = os.urandom(wheel_mb * 1024 * 1024)
    versions = [f"1.{n}" for n in range(releases)]
    for version in versions:
        tree = default_tree(version)
        index.add(make_sdist(ws.root / "build", version, tree))
        shipped = {k: v for k, v in tree.items() if k.startswith("vllm/")}
        index.add(make_wheel(ws.root / "build", version, shipped, extra={"vllm/_big.abi3.so": blob}))
        assert ws.run("pin", "add", version) == 0
        ws.write_series(version, {})
        assert ws.run("apply", version) == 0
        scheduler = module_text("scheduler") + "EXTRA = 1\n"
        commit_in(ws.checkout(version), {"vllm/core/scheduler.py": scheduler}, subject="[Core] extra")
        assert ws.run("export", version) == 0
    return ws, versions


def ci_command(ws: Workspace, cache: Path, out: Path, jobs: int | None) -> list[str]:
    vpatch = str(Path(sys.executable).with_name("vpatch"))
    command = [vpatch, "--root", str(ws.root), "--cache-dir", str(cache), "--index-url", ws.index.url]
    command += ["ci", "-o", str(out), "--tiers", "static", "--no-install-check", "--json"]
    return command + (["--jobs", str(jobs)] if jobs else [])


def timed(command: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"vpatch ci failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds, json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--releases", type=int, default=3)
    parser.add_argument("--wheel-mb", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=None, help="vpatch ci --jobs (default: its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ci-warm-") as tmp:
        work = Path(tmp)
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            ws, versions = make_project(work, args.releases, args.wheel_mb)
        try:
            colds, warms = [], []
            for attempt in range(args.repeat):
                cache, out = work / f"cache-{attempt}", work / f"out-{attempt}"
                cold, first = timed(ci_command(ws, cache, out, args.jobs))
                warm, second = timed(ci_command(ws, cache, out, args.jobs))
                steps = [s for v in second["versions"] for s in v["steps"]]
                if not all(s["reused"] for s in steps) or any(
                    s["reused"] for v in first["versions"] for s in v["steps"]
                ):
                    raise SystemExit("the warm run did not reuse every step, or the cold run reused one")
                colds.append(cold)
                warms.append(warm)
                shutil.rmtree(cache)
                shutil.rmtree(out)
        finally:
            ws.index.stop()
    print(f"{len(versions)} releases, {args.wheel_mb} MB stock wheels, {len(steps)} steps, jobs {second['jobs']}")
    print(f"{'side':<34}{'median':>10}{'min':>10}{'max':>10}")
    for name, values in (("vpatch ci, cold (empty cache)", colds), ("vpatch ci, warm (all reused)", warms)):
        print(f"{name:<34}{statistics.median(values):>9.2f}s{min(values):>9.2f}s{max(values):>9.2f}s")
    ratio = statistics.median(warms) / statistics.median(colds)
    print(f"warm / cold = {ratio:.3f} ({1 / ratio:.1f}x faster warm)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
