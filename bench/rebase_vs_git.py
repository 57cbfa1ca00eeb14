"""Rebasing the series onto the next release with `vpatch rebase` versus a raw `git rebase` of the same commits.

Compared (the goal), on the same workload in the same run:

  baseline  `git -c gc.auto=0 rebase --quiet --onto NEW_BASE OLD_BASE series`, run with subprocess in a
            plain git repository that already holds both base commits, with branch `series` (the old
            series as commits on OLD's base) checked out and clean. That is all it includes.
  ours      `vpatch --root P --cache-dir C rebase 0.8.4 --onto 0.8.4.post1 --json`, the command as a user
            runs it, in a new process (the `vpatch` console script of this venv), end to end: interpreter
            start and imports, loading pins and the series, both bases from the warm cache (stamps
            checked, nothing built), a new checkout of NEW's base (`git clone --local` and a full work
            tree), OLD's base fetched into it and rerere enabled, the old series applied on a sparse
            checkout of OLD (for the range-diff), the replay (one `git am --3way` per patch), and the
            completion: the new series rendered (`format-patch`, patch-ids), `range-diff.txt`,
            `evidence.json` (patch-id and reverse-apply per patch) and the new series directory written.
            `--json` only silences the progress lines and prints the result as JSON instead of a table.

Goal: ours takes at most 1.5x the baseline (ratio of medians). Each repetition runs both sides,
alternating which goes first; between runs (not timed) the vpatch checkout and the new series directory
are removed and the git branch is reset to the old series. Every run is checked: every patch clean,
and both sides end at the same tree.

Also reported, not part of the goal: `git clone --local` of the plain repository (a full work tree of
the old series) followed by the same `git rebase` -- the nearest git analogue to vpatch starting from
its cache and making a new checkout; `vpatch --version` (interpreter start and imports alone); and,
with `--profile`, one more in-process run (`toolkit.cli.main`) broken down by step, by toolkit
function and by git subcommand.

The workload (see bench/_rebase_fixture.py) is real-size: OLD is the real vLLM 0.8.4 sdist (2271
files, 21 MiB); the series is the committed patches/vllm-0.8.4/ (9 patches: kv-routing and pd-disagg,
20 files, 123 KiB); NEW ("0.8.4.post1") is a synthetic release built from 0.8.4's tree with a delta the
size of the real 0.8.4 -> 0.8.5 one (~700 files modified, added, deleted or renamed; +40k/-8k lines),
none of it overlapping a patch (the files the series touches only move, so their patches apply at an
offset): the real 0.8.4 -> 0.8.5 and 0.8.5 -> 0.9.0 rebases conflict, which would time a person, not
the tool. NEW is published as a local sdist in a temporary cache and pinned in a temporary project;
nothing under the repository's patches/ or the user's cache is written (the 0.8.4 sdist is read from
the user's cache, downloaded there first if missing).

Run: .venv/bin/python bench/rebase_vs_git.py [--repeat N] [--profile] [--json] [--strict]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _rebase_fixture import BRANCH, Fixture, build_fixture

from toolkit.git import Git, git_env

GOAL = 1.5


# ---------------------------------------------------------------- the two sides


def vpatch_command(fixture: Fixture) -> list[str]:
    return [*vpatch_command_base(), *vpatch_args(fixture)]


def vpatch_args(fixture: Fixture) -> list[str]:
    return [
        "--root",
        str(fixture.root),
        "--cache-dir",
        str(fixture.cache),
        "rebase",
        fixture.old_version,
        "--onto",
        fixture.new_version,
        "--json",
    ]


def rebase_checkout(fixture: Fixture) -> Path:
    return fixture.root / "checkouts" / f"vllm-{fixture.new_version}-rebase"


def reset_vpatch(fixture: Fixture) -> None:
    shutil.rmtree(rebase_checkout(fixture), ignore_errors=True)
    shutil.rmtree(fixture.root / "patches" / f"vllm-{fixture.new_version}", ignore_errors=True)


def check_vpatch(fixture: Fixture, output: bytes, expected_tree: str | None) -> str:
    result = json.loads(output)
    statuses = [p["status"] for p in result["patches"]]
    if not result["done"] or statuses != ["clean"] * fixture.patches:
        raise SystemExit(f"vpatch rebase did not replay cleanly: {statuses} (stopped: {result['stopped']})")
    series_dir = Path(result["series"])
    for name in ("series", "range-diff.txt", "evidence.json"):
        if not (series_dir / name).is_file():
            raise SystemExit(f"vpatch rebase wrote no {name} in {series_dir}")
    tree = Git(rebase_checkout(fixture)).out("rev-parse", "HEAD^{tree}")
    if expected_tree is not None and tree != expected_tree:
        raise SystemExit(f"vpatch rebase ended at tree {tree}, git rebase at {expected_tree}")
    return tree


def time_vpatch(fixture: Fixture, expected_tree: str | None) -> tuple[float, str]:
    reset_vpatch(fixture)
    command = vpatch_command(fixture)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"vpatch rebase failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}")
    return elapsed, check_vpatch(fixture, proc.stdout, expected_tree)


def git_rebase_argv(fixture: Fixture) -> list[str]:
    # Commit ids rather than refs, so the same command works in a clone (which does not copy refs/bench/*).
    return ["git", "-c", "gc.auto=0", "rebase", "--quiet", "--onto", fixture.new_base, fixture.old_base, BRANCH]


def reset_git(path: Path, fixture: Fixture) -> None:
    repo = Git(path)
    repo.run("checkout", "--quiet", "--force", BRANCH)
    repo.run("reset", "--quiet", "--hard", fixture.old_head)


def time_git(path: Path, fixture: Fixture, expected_tree: str | None) -> tuple[float, str]:
    start = time.perf_counter()
    subprocess.run(git_rebase_argv(fixture), cwd=path, env=git_env(), check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    repo = Git(path)
    tree = repo.out("rev-parse", "HEAD^{tree}")
    if len(repo.commits(f"{fixture.new_base}..HEAD")) != fixture.patches:
        raise SystemExit("git rebase: wrong number of commits on the new base")
    if expected_tree is not None and tree != expected_tree:
        raise SystemExit(f"git rebase ended at tree {tree}, expected {expected_tree}")
    return elapsed, tree


def time_clone_and_rebase(fixture: Fixture, dest: Path, expected_tree: str) -> float:
    start = time.perf_counter()
    clone = ["git", "clone", "--quiet", "--local", str(fixture.repo), str(dest)]
    subprocess.run(clone, env=git_env(), check=True, capture_output=True)
    subprocess.run(git_rebase_argv(fixture), cwd=dest, env=git_env(), check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    if Git(dest).out("rev-parse", "HEAD^{tree}") != expected_tree:
        raise SystemExit("clone + git rebase: unexpected tree")
    shutil.rmtree(dest)
    return elapsed


def time_startup() -> float:
    command = vpatch_command_base()
    start = time.perf_counter()
    subprocess.run([*command, "--version"], capture_output=True, check=True)
    return time.perf_counter() - start


def vpatch_command_base() -> list[str]:
    script = Path(sys.executable).with_name("vpatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "toolkit.cli"]


# ---------------------------------------------------------------- profile (in-process, one run)


class Recorder:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.git: dict[str, list[float]] = defaultdict(list)

    def timed(self, name: str, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.calls[name].append(time.perf_counter() - start)

        return wrapper


def profile_run(fixture: Fixture) -> dict:
    """One in-process `toolkit.cli.main` run with the steps, toolkit functions and git calls timed."""
    from toolkit import cli, ui
    from toolkit.git import Git as GitClass
    from toolkit.lifecycle import upstream as upstream_module
    from toolkit.lifecycle.rebase import complete, recipes, replay, session

    recorder = Recorder()
    patched: list[tuple[object, str, object]] = []

    def patch(owner: object, name: str, replacement: object) -> None:
        patched.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    original_step = ui.step

    @contextlib.contextmanager
    def step(title: str, *, quiet: bool = False):
        start = time.perf_counter()
        with original_step(title, quiet=quiet):
            yield
        recorder.steps.append((title, time.perf_counter() - start))

    original_run = GitClass.run

    def git_run(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original_run(self, *args, **kwargs)
        finally:
            recorder.git[args[0] if args else "?"].append(time.perf_counter() - start)

    patch(ui, "step", step)
    patch(GitClass, "run", git_run)
    for name in (
        "materialize",
        "create_checkout",
        "add_base_objects",
        "old_series_head",
        "series_commits",
        "render_range",
        "patch_id",
        "range_diff",
        "collect_evidence",
        "write_series",
        "finish",
        "final_mails",
    ):
        # Timed where it is called from: each module of the package that has the name looks it up there.
        for module in (session, replay, complete, recipes):
            if hasattr(module, name):
                patch(module, name, recorder.timed(f"rebase.{name}", getattr(module, name)))
    for name in ("reverse_applies", "patch_id", "upstream_patch_ids"):
        patch(upstream_module, name, recorder.timed(f"upstream.{name}", getattr(upstream_module, name)))
    for name in ("replay", "after_stop"):
        patch(replay.Replay, name, recorder.timed(f"Replay.{name}", getattr(replay.Replay, name)))
    reset_vpatch(fixture)
    out = io.StringIO()
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = cli.main(vpatch_args(fixture))
        total = time.perf_counter() - start
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
    if code != 0:
        raise SystemExit(f"in-process vpatch rebase failed ({code})")
    check_vpatch(fixture, out.getvalue().encode(), None)
    git_total = sum(sum(times) for times in recorder.git.values())
    return {
        "total": total,
        "git_total": git_total,
        "git_processes": sum(len(times) for times in recorder.git.values()),
        "steps": [{"step": title, "seconds": seconds} for title, seconds in recorder.steps],
        "functions": {name: {"calls": len(t), "seconds": sum(t)} for name, t in recorder.calls.items()},
        "git": {name: {"calls": len(t), "seconds": sum(t)} for name, t in recorder.git.items()},
    }


def print_profile(profile: dict) -> None:
    print(f"\nprofile: one in-process run (toolkit.cli.main), {profile['total'] * 1000:.0f} ms in all")
    print(f"  git subprocesses: {profile['git_processes']}, {profile['git_total'] * 1000:.0f} ms")
    print(f"  in Python (everything else): {(profile['total'] - profile['git_total']) * 1000:.0f} ms")
    print("  steps (as `vpatch rebase` prints them; the replay step includes completing the rebase):")
    for entry in profile["steps"]:
        print(f"    {entry['seconds'] * 1000:7.0f} ms  {entry['step']}")
    print("  toolkit functions (nested: a caller's time includes its callees'):")
    for name, entry in sorted(profile["functions"].items(), key=lambda kv: -kv[1]["seconds"]):
        print(f"    {entry['seconds'] * 1000:7.0f} ms  {entry['calls']:3d}x  {name}")
    print("  git subcommands:")
    for name, entry in sorted(profile["git"].items(), key=lambda kv: -kv[1]["seconds"]):
        print(f"    {entry['seconds'] * 1000:7.0f} ms  {entry['calls']:3d}x  git {name}")


# ---------------------------------------------------------------- main


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "runs": len(times), "times": times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per side (default 5)")
    parser.add_argument("--profile", action="store_true", help="also break one in-process run down")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vpatch-bench-rebase-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        fixture = build_fixture(work)
        setup = time.perf_counter() - start
        facts = fixture.facts
        if not args.json:
            print(
                f"OLD vLLM {fixture.old_version} sdist base {fixture.old_base[:12]} "
                f"({facts['files']} files, {facts['size'] / 2**20:.1f} MiB)"
            )
            print(
                f"NEW {fixture.new_version} (synthetic) base {fixture.new_base[:12]}: {facts['delta']} "
                f"({facts['modified']} modified, {facts['added']} added, {facts['deleted']} deleted, "
                f"{facts['renamed']} renamed; {facts['offset_files']} patched files moved)"
            )
            print(
                f"series: patches/vllm-{fixture.old_version}/, {facts['patches']} patches, "
                f"{len(fixture.touched)} files, {facts['patch_bytes'] / 1024:.0f} KiB; "
                f"setup {setup:.1f}s; repeat {args.repeat}\n"
            )

        # Warm-up (not timed): both sides once, the trees compared.
        _, expected = time_git(fixture.repo, fixture, None)
        reset_git(fixture.repo, fixture)
        time_vpatch(fixture, expected)

        vpatch_times: list[float] = []
        git_times: list[float] = []
        clone_times: list[float] = []
        startup_times: list[float] = []
        for rep in range(args.repeat):
            for side in ("git", "vpatch") if rep % 2 == 0 else ("vpatch", "git"):
                if side == "git":
                    git_times.append(time_git(fixture.repo, fixture, expected)[0])
                    reset_git(fixture.repo, fixture)
                else:
                    vpatch_times.append(time_vpatch(fixture, expected)[0])
            clone_times.append(time_clone_and_rebase(fixture, work / f"clone-{rep}", expected))
            startup_times.append(time_startup())
        profile = profile_run(fixture) if args.profile else None

    ratio = statistics.median(vpatch_times) / statistics.median(git_times)
    passed = ratio <= GOAL
    if args.json:
        print(
            json.dumps(
                {
                    "workload": {
                        "old": fixture.old_version,
                        "new": fixture.new_version,
                        "patches": fixture.patches,
                        "files_touched": len(fixture.touched),
                        **facts,
                    },
                    "git_rebase": summary(git_times),
                    "vpatch_rebase_cli": summary(vpatch_times),
                    "ratio": ratio,
                    "goal": GOAL,
                    "pass": passed,
                    "info": {
                        "git_clone_and_rebase": summary(clone_times),
                        "vpatch_version_startup": summary(startup_times),
                        "vpatch_vs_clone_and_rebase": statistics.median(vpatch_times) / statistics.median(clone_times),
                    },
                    "profile": profile,
                },
                indent=1,
                sort_keys=True,
            )
        )
    else:
        git_median = statistics.median(git_times)
        clone_median = statistics.median(clone_times)
        rows = [
            ("git rebase (baseline)", git_times, None),
            ("vpatch rebase CLI (ours)", vpatch_times, git_median),
            ("info: git clone --local + git rebase", clone_times, None),
            ("info: vpatch rebase vs clone + rebase", vpatch_times, clone_median),
            ("info: vpatch --version (startup)", startup_times, None),
        ]
        print(f"{'measurement':<40} {'median':>9} {'min':>9} {'runs':>5} {'ratio':>8}")
        print("-" * 75)
        for name, times, against in rows:
            ratio_text = f"{statistics.median(times) / against:7.2f}x" if against else f"{'':>8}"
            print(
                f"{name:<40} {statistics.median(times) * 1000:7.0f}ms {min(times) * 1000:7.0f}ms "
                f"{len(times):>5} {ratio_text}"
            )
        if profile:
            print_profile(profile)
        print(
            f"\ngoal: vpatch rebase <= {GOAL:.2f}x git rebase; measured {ratio:.2f}x -> {'PASS' if passed else 'FAIL'}"
        )
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
