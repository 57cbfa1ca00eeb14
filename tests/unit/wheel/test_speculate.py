"""The console's speculative copy (`toolkit.wheel.speculate`): real builds of the synthetic stock wheel, each run
as the console script runs one (`speculate.start`, `main`, `speculate.end`), in tmp dirs.

What can fail: a plan taken over when it should not be (the wheel then differs from a build without any
speculation), a speculative file left behind, a plan that matches not taken over.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from tests.unit.wheel.test_wheel_overlay import KV_EVENTS, PENDING, SCHEDULER, fail_on_write, files_in, make_series
from toolkit import tempnames
from toolkit.cli import main
from toolkit.wheel import speculate


def console_build(ws, out: Path, *args: str) -> tuple[int, str | None]:
    """`vpatch build 1.0 -o OUT --no-verify` the way the console script runs it: exit code and the outcome."""
    argv = ["--root", str(ws.root), "--cache-dir", str(ws.cache), "--index-url", ws.index.url, "build", "1.0"]
    argv += ["-o", str(out), "--no-verify", *args]
    speculate.start(argv)
    try:
        code = main(argv)
    finally:
        outcome = speculate.end()
    return code, outcome


def plan_files(ws) -> list[Path]:
    return sorted((ws.cache / speculate.PLANS_DIR).glob("*.json"))


@pytest.fixture
def planned(pinned, tmp_path) -> tuple[object, Path, bytes]:
    """A build of a series that modifies and adds a file, which left its plan: the workspace, its output
    directory, and the wheel's bytes."""
    changes = {"vllm/core/scheduler.py": SCHEDULER, "vllm/core/kv_events.py": KV_EVENTS}
    make_series(pinned, [(changes, "[Core] scale value twenty, publish kv events", PENDING)])
    series = pinned
    out = tmp_path / "dist"
    assert console_build(series, out) == (0, None)  # no plan yet: nothing speculated
    [wheel] = out.glob("*.whl")
    assert len(plan_files(series)) == 1
    return series, out, wheel.read_bytes()


def only_the_wheel(out: Path) -> bytes:
    [name] = files_in(out)  # no speculative or temporary file beside it
    return (out / name).read_bytes()


def test_a_matching_plan_is_taken_over_and_the_wheel_is_the_same(planned, tmp_path):
    ws, out, first = planned
    assert console_build(ws, out) == (0, "adopted")
    assert only_the_wheel(out) == first
    (out / files_in(out)[0]).unlink()  # fresh: the speculation's file is renamed into an empty directory
    assert console_build(ws, out) == (0, "adopted")
    assert only_the_wheel(out) == first
    # a build without any speculation writes the same bytes
    assert ws.run("build", "1.0", "-o", str(tmp_path / "plain"), "--no-verify") == 0
    assert only_the_wheel(tmp_path / "plain") == first


def test_a_plan_the_build_does_not_match_is_cancelled(planned, monkeypatch):
    ws, out, first = planned
    # the stamps cannot see SOURCE_DATE_EPOCH: the written members' dates differ from the plan's
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert console_build(ws, out) == (0, "cancelled")
    epoch_wheel = only_the_wheel(out)
    assert epoch_wheel != first
    plain = out.parent / "plain"
    assert ws.run("build", "1.0", "-o", str(plain), "--no-verify") == 0
    assert only_the_wheel(plain) == epoch_wheel
    # the plan saved is the build's: the next build with the same epoch takes it over
    assert console_build(ws, out) == (0, "adopted")
    assert only_the_wheel(out) == epoch_wheel


def test_a_plan_whose_jobs_were_altered_is_cancelled(planned):
    ws, out, first = planned
    [path] = plan_files(ws)
    plan = json.loads(path.read_bytes())
    kind, data, offset = next(job for job in plan["jobs"] if job[0] == "write")
    altered = bytes(b ^ 0xFF for b in bytes.fromhex(data)).hex()  # what a wrong speculation would write
    plan["jobs"] = [[kind, altered, offset] if job[0] == "write" else job for job in plan["jobs"]]
    path.write_text(json.dumps(plan))
    assert console_build(ws, out) == (0, "cancelled")
    assert only_the_wheel(out) == first


@pytest.mark.parametrize("change", ["series", "stock"])
def test_a_plan_of_other_inputs_is_not_speculated(planned, change):
    ws, out, first = planned
    if change == "series":  # a patch file rewritten with another change: another wheel
        patch = next(p for p in ws.series_dir("1.0").glob("*.patch") if "VALUE_20 = 2000" in p.read_text())
        patch.write_text(patch.read_text().replace("VALUE_20 = 2000", "VALUE_20 = 3000"))
    else:  # the stock wheel touched: same bytes, other stamp
        [stock] = (ws.cache / "downloads").rglob("vllm-1.0-*.whl")
        os.utime(stock)
    code, outcome = console_build(ws, out)
    assert code == 0 and outcome is None
    if change == "series":
        [wheel] = [p for p in out.glob("*.whl") if p.read_bytes() != first]
        with zipfile.ZipFile(wheel) as archive:
            assert "VALUE_20 = 3000" in archive.read("vllm/core/scheduler.py").decode()
    else:
        assert only_the_wheel(out) == first
    assert not [name for name in files_in(out) if name.endswith(".tmp")]


@pytest.mark.parametrize(
    "damage",
    [b"", b"{not json", b'{"format": 1}', b"[]", "truncated", "bad job"],
)
def test_a_corrupt_plan_is_ignored(planned, damage):
    ws, out, first = planned
    [path] = plan_files(ws)
    if damage == "truncated":
        damage = path.read_bytes()[: path.stat().st_size // 2]
    elif damage == "bad job":
        plan = json.loads(path.read_bytes())
        plan["jobs"][0] = ["copy", -1, "x"]
        damage = json.dumps(plan).encode()
    path.write_bytes(damage)
    assert console_build(ws, out) == (0, None)
    assert only_the_wheel(out) == first
    assert console_build(ws, out) == (0, "adopted")  # the build saved its plan again


@pytest.mark.parametrize("when", ["before the copy", "after the take-over"])
def test_an_error_after_speculating_leaves_no_files(planned, monkeypatch, capsys, when):
    ws, out, _ = planned
    (out / files_in(out)[0]).unlink()
    # the first write is a replaced member, before the plan is settled; the last (RECORD), after
    with monkeypatch.context() as patch:
        fail_on_write(patch, 1 if when == "before the copy" else 7)
        code, outcome = console_build(ws, out)
    assert code == 1 and "No space left on device" in capsys.readouterr().err
    assert outcome == ("cancelled" if when == "before the copy" else "adopted")
    assert files_in(out) == []


def test_a_build_that_never_gets_to_the_copy_removes_the_speculation(planned, monkeypatch):
    ws, out, first = planned
    seen: list[str] = []

    def interrupted(*args, **kwargs):
        seen.extend(files_in(out))
        raise KeyboardInterrupt

    monkeypatch.setattr("toolkit.wheel.overlay.patched_files", interrupted)
    assert console_build(ws, out) == (130, "unused")
    [speculative] = [name for name in seen if name.endswith(".tmp")]  # named so that a later run sweeps it if killed
    assert tempnames.owner_pid(speculative) == os.getpid()
    assert only_the_wheel(out) == first  # the previous wheel untouched, the speculative file gone


def test_the_plans_kept_are_the_last_few(planned, tmp_path):
    ws, _, _ = planned
    for n in range(speculate.KEEP_PLANS + 2):  # another output directory: another command line, another plan
        assert console_build(ws, tmp_path / f"out-{n}") == (0, None)
    plans = plan_files(ws)
    assert len(plans) == speculate.KEEP_PLANS
    assert console_build(ws, tmp_path / f"out-{speculate.KEEP_PLANS + 1}") == (0, "adopted")  # the last one kept
