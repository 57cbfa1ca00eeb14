"""`vpatch ci` reuses what an earlier run produced for the same inputs, says so per step, and runs releases
side by side (synthetic releases; flags asserted, never timings)."""

from __future__ import annotations

import json

from tests.harness import commit_in, module_text
from toolkit.records.ci_summary import decode_summary

STEPS = ["pin-verify", "check", "build", "verify", "conform-static"]


def run_ci(ws, capsys, out, *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = ws.run("ci", "-o", str(out), "--tiers", "static", "--no-install-check", "--json", *extra)
    return code, json.loads(capsys.readouterr().out)


def series_with(ws, version: str, extra: str, files: dict[str, str] | None = None) -> None:
    """The release's series: one patch, made and exported the way a maintainer would."""
    ws.write_series(version, {})
    assert ws.run("apply", version) == 0
    change = files or {"vllm/core/scheduler.py": module_text("scheduler") + extra}
    commit_in(ws.checkout(version), change, subject="[Core] extra")
    assert ws.run("export", version) == 0


def two_releases(ws) -> None:
    ws.publish("1.1")
    assert ws.run("pin", "add", "1.1") == 0
    series_with(ws, "1.0", "EXTRA = 1\n")
    series_with(ws, "1.1", "EXTRA = 1\n")


def steps_of(summary: dict, version: str) -> dict[str, dict]:
    (run,) = [v for v in summary["versions"] if v["version"] == version]
    return {s["name"]: s for s in run["steps"]}


def test_a_second_run_reuses_every_step_and_says_so(pinned, capsys, tmp_path):
    ws = pinned
    series_with(ws, "1.0", "EXTRA = 1\n")
    out = tmp_path / "out"
    code, first = run_ci(ws, capsys, out)
    assert code == 0
    cold = steps_of(first, "1.0")
    # `pin add` hashed the pinned files just now: only pin-verify has something to reuse
    assert list(cold) == STEPS and [n for n, s in cold.items() if s["reused"]] == ["pin-verify"]
    assert all(s["key"] for name, s in cold.items() if name != "pin-verify")
    wheel = out / "wheels" / first["versions"][0]["wheel"]["file"]
    results = (out / "conform" / "vllm-1.0-static.json").read_text()
    (out / "conform" / "vllm-1.0-static.json").unlink()

    code, second = run_ci(ws, capsys, out)
    assert code == 0 and second["ok"] is True
    warm = steps_of(second, "1.0")
    assert all(s["reused"] and s["status"] == "pass" for s in warm.values()), warm
    assert {n: s["key"] for n, s in warm.items()} == {n: s["key"] for n, s in cold.items()}
    assert warm["build"]["detail"].startswith(f"reused (fingerprint {cold['build']['key'][:12]})")
    assert warm["conform-static"]["detail"].startswith("reused (key ")
    # the same wheel file (one per fingerprint), the same results written back, the same record fields
    assert second["versions"][0]["wheel"] == {**first["versions"][0]["wheel"], "seconds": 0.0}
    (kept,) = ws.cache.glob(f"ci/wheels/*/{wheel.name}")
    assert wheel.stat().st_ino == kept.stat().st_ino
    assert (out / "conform" / "vllm-1.0-static.json").read_text() == results
    on_disk = decode_summary((out / "ci-summary.json").read_text())
    assert on_disk.reused_steps == len(STEPS) and all(s.reused for s in on_disk.versions[0].steps)

    # into another output directory: the kept wheel is linked there, not rebuilt
    code, third = run_ci(ws, capsys, tmp_path / "elsewhere")
    assert code == 0 and steps_of(third, "1.0")["build"]["reused"] is True
    assert (tmp_path / "elsewhere" / "wheels" / wheel.name).stat().st_ino == kept.stat().st_ino

    code, forced = run_ci(ws, capsys, out, "--no-reuse")
    assert code == 0 and not any(s["reused"] for s in steps_of(forced, "1.0").values())


def test_a_kept_wheel_written_to_is_built_again(pinned, capsys, tmp_path):
    ws = pinned
    series_with(ws, "1.0", "EXTRA = 1\n")
    code, first = run_ci(ws, capsys, tmp_path / "out")
    assert code == 0
    built = tmp_path / "out" / "wheels" / first["versions"][0]["wheel"]["file"]
    with built.open("ab") as handle:  # the hard link shares the kept file's bytes: its stamp changes
        handle.write(b"\0")
    code, second = run_ci(ws, capsys, tmp_path / "out")
    assert code == 0
    steps = steps_of(second, "1.0")
    assert steps["build"]["reused"] is False and steps["check"]["reused"] is True
    assert second["versions"][0]["wheel"]["sha256"] == first["versions"][0]["wheel"]["sha256"]


def test_a_changed_patch_invalidates_only_its_release(pinned, capsys, tmp_path):
    ws = pinned
    two_releases(ws)
    out = tmp_path / "out"
    code, first = run_ci(ws, capsys, out, "--jobs", "2")
    assert code == 0 and first["jobs"] == 2
    commit_in(ws.checkout("1.0"), {"vllm/core/scheduler.py": module_text("scheduler") + "EXTRA = 2\n"}, subject="x")
    assert ws.run("export", "1.0") == 0

    code, second = run_ci(ws, capsys, out, "--jobs", "2")
    assert code == 0, second
    changed, same = steps_of(second, "1.0"), steps_of(second, "1.1")
    assert all(s["reused"] for s in same.values()), same
    assert changed["pin-verify"]["reused"] is True  # the pinned files did not change
    for name in ("check", "build", "verify", "conform-static"):
        assert changed[name]["reused"] is False and changed[name]["status"] == "pass", name
        assert changed[name]["key"] != steps_of(first, "1.0")[name]["key"], name
    old_wheel = steps_of(first, "1.0")["build"]["detail"].split()[0]
    assert second["versions"][0]["wheel"]["file"] != old_wheel


def test_releases_side_by_side_one_failing_still_writes_the_summary(pinned, capsys, tmp_path):
    ws = pinned
    ws.publish("1.1")
    assert ws.run("pin", "add", "1.1") == 0
    series_with(ws, "1.0", "", files={"csrc/ops.cu": "// changed kernel\n"})
    series_with(ws, "1.1", "EXTRA = 1\n")
    capsys.readouterr()
    code = ws.run("ci", "-o", str(tmp_path / "out"), "--tiers", "static", "--no-install-check", "--jobs", "2")
    log = capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "ci-summary.json").read_text())
    assert code == 1 and summary["ok"] is False and summary["jobs"] == 2
    assert [v["version"] for v in summary["versions"]] == ["1.0", "1.1"]  # pin order, whichever ended first
    failing, passing = steps_of(summary, "1.0"), steps_of(summary, "1.1")
    assert failing["build"]["status"] == "fail" and "--mode source" in failing["build"]["detail"]
    assert failing["verify"]["status"] == "skipped"
    assert list(passing) == STEPS and all(s["status"] == "pass" for s in passing.values())
    on_disk = decode_summary((tmp_path / "out" / "ci-summary.json").read_text())
    assert on_disk.ok is False and on_disk.jobs == 2
    # side by side, every step line says its release, also those of the work inside a step
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and all(line.startswith(("[1.0] ", "[1.1] ")) for line in lines), lines
    assert "[1.1] ✓ vllm 1.1: build (" in log and "[1.0] ✗ vllm 1.0: build (" in log
    # the failure was not kept: the next run builds again (and fails again), the passing release is reused
    code, again = run_ci(ws, capsys, tmp_path / "out", "--jobs", "2")
    assert code == 1
    assert steps_of(again, "1.0")["build"]["reused"] is False
    assert all(s["reused"] for s in steps_of(again, "1.1").values())


def test_jobs_must_be_a_positive_number(pinned, capsys, tmp_path):
    ws = pinned
    try:
        code = ws.run("ci", "-o", str(tmp_path / "out"), "--jobs", "0")
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert "--jobs: expected a whole number of releases, 1 or more; got '0'" in capsys.readouterr().err


def test_the_report_shows_what_was_reused(pinned, capsys, tmp_path):
    ws = pinned
    series_with(ws, "1.0", "EXTRA = 1\n")
    out = tmp_path / "out"
    assert run_ci(ws, capsys, out)[0] == 0
    assert ws.run("report", "-i", str(out), "-o", str(tmp_path / "cold")) == 0
    assert "(1 reused)" in (tmp_path / "cold" / "summary.md").read_text()  # pin-verify: `pin add` hashed them
    assert run_ci(ws, capsys, out)[0] == 0
    assert ws.run("report", "-i", str(out), "-o", str(tmp_path / "warm")) == 0
    assert f"| {len(STEPS)} pass ({len(STEPS)} reused) |" in (tmp_path / "warm" / "summary.md").read_text()
    html = (tmp_path / "warm" / "index.html").read_text()
    assert f"{len(STEPS)} of {len(STEPS)} steps reused from earlier runs." in html
    assert html.count(" (reused)</td>") == len(STEPS)


def test_the_console_summary_says_what_was_reused(pinned, capsys, tmp_path):
    ws = pinned
    series_with(ws, "1.0", "EXTRA = 1\n")
    args = ("ci", "-o", str(tmp_path / "out"), "--tiers", "static", "--no-install-check")
    assert ws.run(*args) == 0
    assert ws.run(*args) == 0
    printed = capsys.readouterr()
    assert f"{len(STEPS)} of {len(STEPS)} steps reused from earlier runs" in printed.out
    assert "reused" in printed.out.split("steps reused")[0].split("vpatch ci →")[-1]  # the table's column
    assert "✓ vllm 1.0: build (" in printed.err and "s, reused)\n" in printed.err.split("✓ vllm 1.0: build")[-1]


def test_the_files_digest_ignores_bytecode_but_not_sources(tmp_path):
    from toolkit.ci_reuse import files_digest

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    before = files_digest(tmp_path)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00compiled")
    (tmp_path / "pkg" / "stray.pyc").write_bytes(b"\x00")
    assert files_digest(tmp_path) == before
    (tmp_path / "pkg" / "mod.py").write_text("x = 2\n")
    assert files_digest(tmp_path) != before
