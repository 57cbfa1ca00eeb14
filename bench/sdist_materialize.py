"""Materializing the vLLM 0.8.4 sdist as a base commit versus extracting it and committing with git.

Compared (the goal), both cold (every repetition writes into fresh temporary directories):

  baseline  `tar xzf --no-same-owner` of the sdist (as a non-root user would extract it), then
            `git init`, `git add -A -f` and `git commit` (fixed identity) in the extracted
            tree, each run with subprocess;
  ours      `toolkit.sources.sdist.build_base_repo(tarball, repo_dir, message=...)`: members
            are checked and streamed from the tarball into `git fast-import` (no work tree).

Goal: ours takes at most 2x the baseline (ratio of medians). The two sides run interleaved,
alternating which goes first.

Also reported, not part of the goal:
  - cold `materialize_sdist` with a fresh cache directory whose downloads/ is pre-seeded with
    the verified sdist (hard link, or a copy across file systems), so no network is used; this
    adds verifying the download's sha256, locking, the stamp (sha256 of every object file)
    and the rename into place;
  - warm `materialize` on that cache entry (the stamp is read and every object file re-hashed).

Run: .venv/bin/python bench/sdist_materialize.py [--repeat N] [--strict]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit.git import Git, git_env
from toolkit.index import cached_path, fetch_artifact
from toolkit.model import Pin
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.sources import materialize
from toolkit.sources.sdist import BASE_REF, build_base_repo, materialize_sdist

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.8.4"
GOAL = 2.0
IDENTITY = {
    "GIT_AUTHOR_NAME": "vpatch",
    "GIT_AUTHOR_EMAIL": "vpatch@localhost",
    "GIT_AUTHOR_DATE": "315532800 +0000",
    "GIT_COMMITTER_DATE": "315532800 +0000",
}


def message(pin: Pin) -> str:
    assert pin.sdist is not None
    return f"{pin.project} {pin.version} from {pin.sdist.file}\n\nsdist-sha256: {pin.sdist.sha256}\n"


def time_baseline(tarball: Path, work: Path, msg: str) -> tuple[float, str]:
    """tar xzf + git init + git add -A -f + git commit; returns (seconds, tree id)."""
    work.mkdir()
    env = git_env(IDENTITY)

    def run(*argv: str, cwd: Path) -> None:
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)

    start = time.perf_counter()
    run("tar", "xzf", str(tarball), "--no-same-owner", "-C", str(work), cwd=work)
    (tree,) = work.iterdir()
    run("git", "init", "-q", cwd=tree)
    run("git", "add", "-A", "-f", cwd=tree)
    run("git", "commit", "-q", "--no-verify", "-m", msg, cwd=tree)
    elapsed = time.perf_counter() - start
    return elapsed, Git(tree).out("rev-parse", "HEAD^{tree}")


def time_build_base_repo(tarball: Path, work: Path, msg: str) -> tuple[float, str]:
    start = time.perf_counter()
    build_base_repo(tarball, work / "repo.git", message=msg)
    elapsed = time.perf_counter() - start
    return elapsed, Git(work / "repo.git").out("rev-parse", f"{BASE_REF}^{{tree}}")


def seed_cache(cache: Path, pin: Pin, tarball: Path) -> None:
    assert pin.sdist is not None
    target = cached_path(cache, pin.sdist)
    target.parent.mkdir(parents=True)
    try:
        os.link(tarball, target)
    except OSError:
        shutil.copy2(tarball, target)


def report(rows: list[tuple[str, list[float], str | None]]) -> None:
    medians = {name: statistics.median(times) for name, times, _ in rows}
    print(f"{'measurement':<50} {'median':>9} {'min':>9} {'ratio':>9}")
    print("-" * 80)
    for name, times, against in rows:
        ratio = f"{medians[name] / medians[against]:8.2f}x" if against else f"{'(base)':>9}"
        print(f"{name:<50} {medians[name] * 1000:7.1f}ms {min(times) * 1000:7.1f}ms {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per side (default 5)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()

    options = load_options(cwd=ROOT)
    pin = Project.load(options).pins.get(VERSION)
    assert pin.sdist is not None
    tarball = fetch_artifact(options.cache_dir, pin.sdist, quiet=True)
    msg = message(pin)
    print(f"sdist {tarball} ({tarball.stat().st_size / 2**20:.1f} MiB); repeat {args.repeat}\n")

    base_times: list[float] = []
    ours_times: list[float] = []
    cold_times: list[float] = []
    warm_times: list[float] = []
    same_tree = True
    with tempfile.TemporaryDirectory(prefix="vpatch-bench-sdist-") as tmp:
        work = Path(tmp)
        for rep in range(args.repeat):
            trees = {}
            for side in ["baseline", "ours"] if rep % 2 == 0 else ["ours", "baseline"]:
                side_dir = work / f"{side}-{rep}"
                if side == "baseline":
                    elapsed, trees[side] = time_baseline(tarball, side_dir, msg)
                    base_times.append(elapsed)
                else:
                    side_dir.mkdir()
                    elapsed, trees[side] = time_build_base_repo(tarball, side_dir, msg)
                    ours_times.append(elapsed)
                shutil.rmtree(side_dir)
            if trees["baseline"] != trees["ours"]:
                print(f"note: tree ids differ (git add {trees['baseline'][:12]}, ours {trees['ours'][:12]})")
            same_tree = same_tree and trees["baseline"] == trees["ours"]

            cache = work / f"cache-{rep}"
            seed_cache(cache, pin, tarball)
            start = time.perf_counter()
            cold = materialize_sdist(pin, cache, quiet=True)
            cold_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            warm = materialize(pin, cache, quiet=True)
            warm_times.append(time.perf_counter() - start)
            if cold.reused or not warm.reused or cold.commit != warm.commit:
                raise SystemExit("the cold run reused an entry or the warm run rebuilt it")
            shutil.rmtree(cache)

    report(
        [
            ("tar xzf + git init/add/commit (baseline)", base_times, None),
            ("build_base_repo (ours)", ours_times, "tar xzf + git init/add/commit (baseline)"),
            ("cold materialize_sdist incl. stamp (info)", cold_times, "tar xzf + git init/add/commit (baseline)"),
            ("warm materialize, cached (info)", warm_times, "tar xzf + git init/add/commit (baseline)"),
        ]
    )
    print(f"\nsanity: both sides commit the same tree: {'yes' if same_tree else 'NO'}")
    ratio = statistics.median(ours_times) / statistics.median(base_times)
    passed = ratio <= GOAL
    print(f"goal: build_base_repo <= {GOAL:.2f}x baseline; measured {ratio:.2f}x -> {'PASS' if passed else 'FAIL'}")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
