"""Applying a patch series with vpatch versus a raw `git am` of the same patch files.

Compared (the goal): on a fresh checkout of the real vLLM 0.8.4 sdist base,

  baseline  `git am --keep-cr --keep-non-patch --committer-date-is-author-date <files...>`
            run directly with subprocess in the checkout;
  ours      `toolkit.apply.apply_series(checkout, series)` (one `git am` plus the offset
            analysis: format-patch of the applied range and a parse of every mail).

Goal: ours takes at most 1.3x the baseline (ratio of medians). Each repetition creates a
fresh checkout for each side (not timed) and runs both sides, alternating which goes first.

Also reported, not part of the goal: the whole `vpatch apply` command (a new process,
loading the pins and series, cloning the cached base, applying) against
`git clone --local` of the cached base followed by the same raw `git am`.

The series is synthetic but realistic: ~12 commits, each editing 1-4 real Python files
under vllm/v1/ and vllm/engine/ in several places (inserted blocks and modified lines),
one of them adding a new module. It is exported with `toolkit.export` into a temporary
directory; nothing under the repository's patches/ is touched.

Run: .venv/bin/python bench/apply_vs_git_am.py [--repeat N] [--commits N] [--strict]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit.apply import CLEAN, apply_series
from toolkit.checkout import UPSTREAM_REF, Checkout, create_checkout
from toolkit.export import plan_export, write_export
from toolkit.git import Git, git_env
from toolkit.model import Series, load_series
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.sources import Base

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.8.4"
GOAL = 1.3
RAW_AM = ("am", "--keep-cr", "--keep-non-patch", "--committer-date-is-author-date")
AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "Dynamo Maintainer",
    "GIT_AUTHOR_EMAIL": "maintainer@dynamo.example",
}
SUBJECTS = (
    "v1 engine: publish KV cache events from the scheduler",
    "v1 core: expose block pool usage as a load metric",
    "engine: add a remote prefill request field",
    "v1 worker: hook KV block transfer into the model runner",
    "engine: forward kv-routing hints through the async engine",
    "v1 metrics: report prefix-cache hit rate per request",
    "v1 executor: allow an external KV connector process",
    "engine: keep disaggregated request ids stable across retries",
    "v1 engine: add an event batch size knob",
    "v1 core: evict blocks in the order the router expects",
    "engine: document the dynamo integration points",
    "v1 attention: skip local prefill for remotely prefilled requests",
    "v1 sample: make the sampler state transferable",
    "engine: guard the new fields behind an environment variable",
)
NEW_FILE = "vllm/v1/engine/kv_events.py"


# ---------------------------------------------------------------- setup (not timed)


def edit_file(path: Path, rng: random.Random, tag: str) -> None:
    """Insert blocks and modify lines at a few well-separated places of a Python file."""
    lines = path.read_text(encoding="utf-8").split("\n")
    candidates = [i for i, line in enumerate(lines) if line.strip() and not line.rstrip().endswith("\\")]
    wanted = rng.randint(2, 5)
    places: list[int] = []
    for index in rng.sample(candidates, min(len(candidates), 40)):
        if all(abs(index - other) > 12 for other in places):
            places.append(index)
        if len(places) == wanted:
            break
    for number, index in enumerate(sorted(places, reverse=True)):
        line = lines[index]
        indent = line[: len(line) - len(line.lstrip())]
        if rng.random() < 0.4 and not line.rstrip().endswith((",", "(", "[", "{")) and "#" not in line:
            lines[index] = f"{line.rstrip()}  # dynamo: {tag}.{number}"
        else:
            block = [f"{indent}# dynamo ({tag}.{number}): keep the router informed."]
            block += [f"{indent}_dynamo_{tag}_{number}_{k} = {k}" for k in range(rng.randint(0, 3))]
            lines[index:index] = block
    path.write_text("\n".join(lines), encoding="utf-8")


def new_module(lines: int = 60) -> str:
    body = ['"""KV cache events for the dynamo KV-aware router."""', "", "from __future__ import annotations", ""]
    body += ["", "class KVEvent:", '    """One block stored or removed."""', ""]
    body += [f"    FIELD_{i} = {i}" for i in range(lines)]
    return "\n".join(body) + "\n"


def make_series(base: Base, work: Path, commits: int) -> tuple[Path, str]:
    """Commit a synthetic series on a checkout, export it; return (series dir, expected HEAD tree)."""
    source = create_checkout(base, work / "source")
    repo = source.git
    files = sorted(
        name
        for name in repo.out("ls-files", "vllm/v1", "vllm/engine").splitlines()
        if name.endswith(".py") and len((source.path / name).read_bytes().splitlines()) >= 80
    )
    rng = random.Random(20250425)
    new_at = commits // 3
    for number in range(commits):
        tag = f"p{number + 1:02d}"
        touched = rng.sample(files, rng.randint(1, 4))
        for name in touched:
            edit_file(source.path / name, rng, tag)
        if number == new_at:
            (source.path / NEW_FILE).write_text(new_module(), encoding="utf-8")
            touched.append(NEW_FILE)
        repo.run("add", "--", *touched)
        feature = "kv-routing" if number % 2 == 0 else "pd-disagg"
        message = (
            f"{SUBJECTS[number % len(SUBJECTS)]}\n\n"
            f"Synthetic benchmark change {tag}: touches {len(touched)} file(s).\n\n"
            f"Upstream-Status: Pending\nFeature: {feature}\n"
        )
        date = f"2025-04-{1 + number % 28:02d}T12:00:00+00:00"
        repo.run("commit", "-q", "-m", message, env={**AUTHOR_ENV, "GIT_AUTHOR_DATE": date})
    patches = work / "patches"
    patches.mkdir()
    shutil.copy2(ROOT / "patches" / "pins.toml", patches / "pins.toml")
    series_dir = patches / f"vllm-{VERSION}"
    write_export(plan_export(source, series_dir))
    tree = repo.out("rev-parse", "HEAD^{tree}")
    shutil.rmtree(source.path)
    return series_dir, tree


# ---------------------------------------------------------------- timed sides


def raw_git_am(path: Path, files: list[str]) -> None:
    subprocess.run(["git", *RAW_AM, *files], cwd=path, env=git_env(), check=True, capture_output=True)


def time_raw_am(checkout: Checkout, files: list[str]) -> float:
    start = time.perf_counter()
    raw_git_am(checkout.path, files)
    return time.perf_counter() - start


def time_apply_series(checkout: Checkout, series: Series) -> float:
    start = time.perf_counter()
    result = apply_series(checkout, series)
    elapsed = time.perf_counter() - start
    bad = [o for o in result.outcomes if o.status != CLEAN]
    if bad:
        raise SystemExit(f"apply_series did not apply cleanly: {bad[0]}")
    return elapsed


def time_vpatch_cli(patches: Path, dest: Path) -> float:
    script = Path(sys.executable).with_name("vpatch")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "toolkit.cli"]
    command += ["--root", str(ROOT), "--patches-dir", str(patches), "apply", VERSION, "--into", str(dest)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"vpatch apply failed:\n{proc.stderr.decode(errors='replace')}")
    return elapsed


def time_clone_and_am(base: Base, dest: Path, files: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["git", "clone", "--quiet", "--local", str(base.repo), str(dest)],
        env=git_env(),
        check=True,
        capture_output=True,
    )
    raw_git_am(dest, files)
    return time.perf_counter() - start


def head_tree(path: Path) -> str:
    return Git(path).out("rev-parse", "HEAD^{tree}")


# ---------------------------------------------------------------- report


def report(rows: list[tuple[str, list[float], str | None]]) -> None:
    baselines = {name: statistics.median(times) for name, times, _ in rows}
    print(f"{'measurement':<44} {'median':>9} {'min':>9} {'ratio':>9}")
    print("-" * 74)
    for name, times, against in rows:
        ratio = f"{statistics.median(times) / baselines[against]:8.2f}x" if against else f"{'(base)':>9}"
        print(f"{name:<44} {statistics.median(times) * 1000:7.1f}ms {min(times) * 1000:7.1f}ms {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per side (default 5)")
    parser.add_argument("--commits", type=int, default=12, help="commits in the synthetic series (default 12)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()

    project = Project.load(load_options(cwd=ROOT))
    pin = project.pins.get(VERSION)
    base = project.base(pin)
    with tempfile.TemporaryDirectory(prefix="vpatch-bench-apply-") as tmp:
        work = Path(tmp)
        series_dir, expected_tree = make_series(base, work, args.commits)
        series = load_series(series_dir, pin.version)
        files = [str(p.path) for p in series.patches]
        size = sum(len(p.data) for p in series.patches)
        hunks = sum(f.hunks for p in series.patches for f in p.files)
        touched = len({path for p in series.patches for path in p.touched_paths})
        print(f"vLLM {VERSION} sdist base {base.commit[:12]} ({base.repo})")
        print(
            f"series: {len(files)} patches, {touched} files, {hunks} hunks, {size / 1024:.1f} KiB; "
            f"repeat {args.repeat}\n"
        )

        am_times: list[float] = []
        ours_times: list[float] = []
        load_times: list[float] = []
        cli_times: list[float] = []
        clone_am_times: list[float] = []
        for rep in range(args.repeat):
            sides = ["am", "ours"] if rep % 2 == 0 else ["ours", "am"]
            for side in sides:
                checkout = create_checkout(base, work / f"{side}-{rep}")
                if side == "am":
                    am_times.append(time_raw_am(checkout, files))
                else:
                    ours_times.append(time_apply_series(checkout, series))
                if head_tree(checkout.path) != expected_tree:
                    raise SystemExit(f"{side}: the applied tree differs from the exported series' tree")
                if len(checkout.git.commits(f"{UPSTREAM_REF}..HEAD")) != len(files):
                    raise SystemExit(f"{side}: wrong number of applied commits")
                shutil.rmtree(checkout.path)
            start = time.perf_counter()
            load_series(series_dir, pin.version)
            load_times.append(time.perf_counter() - start)
            for side in ["clone", "cli"] if rep % 2 == 0 else ["cli", "clone"]:
                dest = work / f"full-{side}-{rep}"
                if side == "clone":
                    clone_am_times.append(time_clone_and_am(base, dest, files))
                else:
                    cli_times.append(time_vpatch_cli(series_dir.parent, dest))
                if head_tree(dest) != expected_tree:
                    raise SystemExit(f"{side}: the applied tree differs from the exported series' tree")
                shutil.rmtree(dest)

    report(
        [
            ("raw git am (baseline)", am_times, None),
            ("apply_series (ours)", ours_times, "raw git am (baseline)"),
            ("  info: load_series (parse, not in ratio)", load_times, "raw git am (baseline)"),
            ("git clone --local + raw git am", clone_am_times, None),
            ("vpatch apply CLI incl. checkout (info)", cli_times, "git clone --local + raw git am"),
        ]
    )
    ratio = statistics.median(ours_times) / statistics.median(am_times)
    passed = ratio <= GOAL
    print(f"\ngoal: apply_series <= {GOAL:.2f}x raw git am; measured {ratio:.2f}x -> {'PASS' if passed else 'FAIL'}")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
