"""`vpatch ci` on a synthetic release: every step runs, is timed, and a failure still writes the summary."""

from __future__ import annotations

import json

from tests.harness import commit_in, module_text
from toolkit.records.ci_summary import decode_summary, encode_summary
from toolkit.records.conformance import decode_results, encode_results


def run_ci(ws, capsys, out) -> tuple[int, dict]:
    capsys.readouterr()
    code = ws.run("ci", "-o", str(out), "--tiers", "static", "--no-install-check", "--json")
    return code, json.loads(capsys.readouterr().out)


def one_patch_series(ws) -> None:
    """vllm 1.0's series: one patch, made and exported the way a maintainer would."""
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(
        ws.checkout("1.0"), {"vllm/core/scheduler.py": module_text("scheduler") + "EXTRA = 1\n"}, subject="[Core] extra"
    )
    assert ws.run("export", "1.0") == 0


def test_ci_runs_every_step_and_writes_the_summary(pinned, capsys, tmp_path):
    ws = pinned
    one_patch_series(ws)
    code, summary = run_ci(ws, capsys, tmp_path / "out")
    assert code == 0 and summary["ok"] is True
    (version,) = summary["versions"]
    assert [s["name"] for s in version["steps"]] == ["pin-verify", "check", "build", "verify", "conform-static"]
    assert all(s["status"] == "pass" and s["seconds"] >= 0 for s in version["steps"])
    assert version["wheel"]["file"].startswith("vllm-1.0+dynamo.")
    built = tmp_path / "out" / "wheels" / version["wheel"]["file"]
    assert built.exists()
    # conform's wheel is the one the build step made (kept in the cache), not a second build
    (kept,) = ws.cache.glob(f"wheels/vllm-1.0-*/{built.name}")
    assert kept.read_bytes() == built.read_bytes() and kept.stat().st_ino == built.stat().st_ino
    assert version["conformance"] == {"static": "conform/vllm-1.0-static.json"}
    (patch,) = version["series"]["patches"]
    assert (patch["added_lines"], patch["removed_lines"], patch["apply"]) == (1, 0, "clean")
    assert version["verdict"]["summary"].startswith("dynamo-base needed (1 active patch")
    assert version["verdict"]["feature_verdicts"][0]["engine"] == "dynamo-base"
    text = (tmp_path / "out" / "ci-summary.json").read_text()
    on_disk = json.loads(text)
    assert on_disk["versions"][0]["steps"] == version["steps"]
    # Written by the schema the report reads, in the one format: sorted keys, one-space indent.
    assert encode_summary(decode_summary(text)) == text == json.dumps(on_disk, indent=1, sort_keys=True) + "\n"
    results = (tmp_path / "out" / "conform" / "vllm-1.0-static.json").read_text()
    assert encode_results(decode_results(results)) == results


def test_a_failing_step_fails_the_job_but_the_summary_is_written(pinned, capsys, tmp_path):
    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(ws.checkout("1.0"), {"csrc/ops.cu": "// changed kernel\n"}, subject="[Kernel] change a kernel")
    assert ws.run("export", "1.0") == 0
    code, summary = run_ci(ws, capsys, tmp_path / "out")
    assert code == 1 and summary["ok"] is False
    steps = {s["name"]: s for s in summary["versions"][0]["steps"]}
    assert steps["check"]["status"] == "pass"
    assert steps["build"]["status"] == "fail" and "--mode source" in steps["build"]["detail"]
    assert steps["verify"]["status"] == "skipped" and steps["verify"]["detail"] == "needs build"
    assert json.loads((tmp_path / "out" / "ci-summary.json").read_text())["ok"] is False


def test_report_appends_the_summary_to_the_job_summary(pinned, capsys, tmp_path, monkeypatch):
    ws = pinned
    ws.write_series("1.0", {})
    code, _ = run_ci(ws, capsys, tmp_path / "out")
    assert code == 0
    job_summary = tmp_path / "step-summary.md"
    job_summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(job_summary))
    assert ws.run("report", "-i", str(tmp_path / "out"), "-o", str(tmp_path / "report"), "--job-summary") == 0
    text = job_summary.read_text()
    assert text.startswith("earlier step\n")
    assert text.removeprefix("earlier step\n") == (tmp_path / "report" / "summary.md").read_text()


def test_rebase_outcomes_from_evidence_reach_the_summary(pinned, capsys, tmp_path):
    ws = pinned
    one_patch_series(ws)
    (name,) = [n for n in (ws.series_dir("1.0") / "series").read_text().split() if n.endswith(".patch")]
    (ws.series_dir("1.0") / "evidence.json").write_text(
        json.dumps({"format": 1, "patches": {name: {"outcome": "merged"}}})
    )
    code, summary = run_ci(ws, capsys, tmp_path / "out")
    assert code == 0
    assert summary["versions"][0]["series"]["patches"][0]["rebase"] == "merged"


def test_a_stock_release_pinned_without_a_stock_wheel_skips_what_has_no_dynamo_base_build(workspace, capsys, tmp_path):
    """Empty series, sdist and CPU flavor only (`pin add --no-wheel --flavor cpu`): pin-verify re-hashes the sdist and
    the flavor's wheel, check runs, build/verify/conform are skipped with the reason, and the job passes."""
    from tests.unit.wheel.test_flavor import publish_cpu

    ws = workspace
    ws.publish("1.0")
    publish_cpu(ws, "1.0", {})
    assert ws.run("pin", "add", "1.0", "--no-wheel", "--flavor", "cpu") == 0
    ws.write_series("1.0", {}, comment="# nothing carried: see NOTES.md")
    (ws.series_dir("1.0") / "NOTES.md").write_text("# 1.0\n")
    code, summary = run_ci(ws, capsys, tmp_path / "out")
    assert code == 0 and summary["ok"] is True
    steps = {s["name"]: s for s in summary["versions"][0]["steps"]}
    assert list(steps) == ["pin-verify", "check", "build", "verify", "conform-static"]
    assert steps["pin-verify"]["status"] == "pass" and "2 pinned files" in steps["pin-verify"]["detail"]
    assert steps["check"]["status"] == "pass"
    for name in ("build", "verify", "conform-static"):
        assert steps[name]["status"] == "skipped"
        assert steps[name]["detail"].startswith("not applicable: the series is empty: stock vLLM 1.0 (here its CPU")
    assert not (tmp_path / "out" / "wheels").exists()
    # and `vpatch build` says the same instead of failing
    capsys.readouterr()
    assert ws.run("build", "1.0", "-o", str(tmp_path / "dist")) == 0
    assert "1.0: nothing to build: the series is empty" in capsys.readouterr().out
    # and `vpatch conform` too, tier by tier: one not-applicable check naming the evidence to run instead
    for tier in ("static", "engine"):
        capsys.readouterr()
        assert ws.run("conform", "1.0", "--tier", tier, "-o", str(tmp_path / "conform"), "--json") == 0
        (check,) = json.loads(capsys.readouterr().out)["results"][0]["checks"]
        assert (check["name"], check["status"]) == ("dynamo-base", "not-applicable")
        assert check["detail"].endswith("its evidence: `vpatch conform 1.0 --tier engine --new-kind stock+plugin`")
