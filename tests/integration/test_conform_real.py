"""`vpatch conform 0.8.4 --tier gpu` on the real wheels: every cpu check runs for real, gpu says why it cannot."""

from __future__ import annotations

import json

import pytest

from tests.harness import run_vpatch
from tests.harness.paths import REPO_ROOT

REPO = REPO_ROOT
pytestmark = [pytest.mark.real, pytest.mark.xdist_group("conform-084")]


def test_conform_084_all_tiers(conform_084):
    result = conform_084.result
    statuses = {c["name"]: c["status"] for c in result["checks"]}
    for name in (
        "series-applies",
        "api-surface",
        "parity",
        "non-interference",
        "kv-index-invariant",
        "no-block-leaks",
        "upstream-tests",
    ):
        assert statuses[name] == "pass", (name, result["checks"])
    assert statuses["gpu-greedy-parity"] == "not-applicable"
    assert statuses["series-tests"] == "not-applicable"  # the 0.8.4 series ships no tests of its own
    upstream = next(c for c in result["checks"] if c["name"] == "upstream-tests")
    # vLLM's own tests: the prefix caching, specialized manager, kv cache utils and scheduler files ran
    assert "62 tests" in upstream["detail"] and "same outcome in both builds" in upstream["detail"]
    written = json.loads((conform_084.out / "vllm-0.8.4-gpu.json").read_text())
    assert written["schema"] == 1 and written["stock"]["sha256"] and written["patched"]["fingerprint"]
    assert written["ok"] is True


def test_a_scenario_that_crashes_in_one_build_only_fails_with_its_cause(conform_084, tmp_path):
    """A (deliberately) broken patch: the checks fail with the cause, never pass, and the others still run.
    Its stock side is the one conform_084 ran (the same stock wheel, venv, drivers, base): reused, and said so."""
    import shutil

    from tests.harness import commit_in
    from toolkit.export import plan_export, write_export
    from toolkit.options import load_options
    from toolkit.project import Project

    root = tmp_path / "project"
    shutil.copytree(REPO / "patches", root / "patches")
    project = Project.load(load_options({"root": str(root), "cache_dir": str(load_options().cache_dir)}))
    pin = project.pins.get("0.8.4")
    with project.scratch_checkout(pin) as checkout:
        from toolkit.apply import apply_series

        assert apply_series(checkout, project.series(pin)).ok
        scheduler = checkout.path / "vllm/v1/core/sched/scheduler.py"
        text = scheduler.read_text()
        anchor = "    def schedule(self) -> SchedulerOutput:\n"
        assert anchor in text
        commit_in(
            checkout.path,
            {
                "vllm/v1/core/sched/scheduler.py": text.replace(
                    anchor, anchor + '        raise RuntimeError("broken on purpose by a test")\n'
                )
            },
            subject="[Test] break the scheduler",
            headers="Upstream-Status: Inappropriate [test]\nFeature: kv-routing",
        )
        write_export(plan_export(checkout, project.series_dir(pin)))
    proc = run_vpatch(root, "conform", "0.8.4", "--tier", "cpu", "-o", str(tmp_path / "out"), "--json", expect=1)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["results"][0]["checks"]}
    assert checks["run-stock"]["status"] == "pass"
    for name in ("run-stock", "run-pd-aggregated", "upstream-tests"):  # the stock side of conform_084's run
        assert "stock side reused (key " in checks[name]["detail"], (name, checks[name]["detail"])
    assert "stock side reused" not in checks["run-patched-off"]["detail"]
    assert checks["run-patched-off"]["status"] == "fail"
    assert "broken on purpose by a test" in checks["run-patched-off"]["detail"]
    for name in ("parity", "non-interference", "kv-index-invariant"):
        assert checks[name]["status"] == "fail" and "missing trace" in checks[name]["detail"], name
    assert checks["api-surface"]["status"] == "pass" and checks["series-applies"]["status"] == "pass"
    assert checks["upstream-tests"]["status"] == "fail"  # vLLM's own scheduler tests now fail in one build only
