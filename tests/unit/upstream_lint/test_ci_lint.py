"""`vpatch ci`'s check step runs the upstream lint (`check --lint`) on a synthetic release with its own ruff.

A finding fails the check step, named by the patch that wrote the line, and is in the summary's `lint`; a
failure is not kept (the next run checks again, from the lint-results cache); once the patch is fixed the
step passes and the next run reuses it, lint record and all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import Workspace, commit_in, default_tree, module_text
from toolkit.git import Git

PRE_COMMIT = """\
repos:
- repo: https://github.com/astral-sh/ruff-pre-commit
  rev: v0.9.3
  hooks:
  - id: ruff
    args: [--output-format, github, --fix]
"""
PYPROJECT = '[project]\nname = "vllm"\n\n[tool.ruff]\nline-length = 80\n\n[tool.ruff.lint]\nselect = ["E", "F"]\n'
LONG_LINE = "LONG_NAME = " + repr("x" * 80)  # 94 characters: E501 at line-length 80
SCHEDULER = "vllm/core/scheduler.py"


@pytest.fixture
def ws(lint_ws: Workspace) -> Workspace:
    workspace = lint_ws
    tree = default_tree("1.0")
    tree.update({".pre-commit-config.yaml": PRE_COMMIT, "pyproject.toml": PYPROJECT})
    tree[SCHEDULER] = upstream_scheduler()  # upstream's own long line: never the patch's
    workspace.publish("1.0", tree)
    assert workspace.run("pin", "add", "1.0") == 0
    return workspace


def upstream_scheduler() -> str:
    return module_text("scheduler") + LONG_LINE + "\n"


def ci(ws: Workspace, capsys: pytest.CaptureFixture[str], out: Path) -> tuple[int, dict]:
    capsys.readouterr()
    code = ws.run("ci", "-o", str(out), "--tiers", "static", "--no-install-check", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert json.loads((out / "ci-summary.json").read_text())["versions"][0]["lint"] == summary["versions"][0]["lint"]
    return code, summary


def test_a_lint_finding_fails_the_ci_check_step_until_the_patch_is_fixed(ws, capsys, tmp_path):
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    checkout = ws.checkout("1.0")
    commit_in(checkout, {SCHEDULER: upstream_scheduler() + "CLEAN = 1\n" + LONG_LINE + "\n"}, subject="[Core] extra")
    assert ws.run("export", "1.0") == 0
    (patch,) = [p.name for p in ws.series_dir("1.0").glob("0001-*.patch")]
    long_line = len(upstream_scheduler().splitlines()) + 2

    code, summary = ci(ws, capsys, tmp_path / "out")
    assert code == 1 and summary["ok"] is False
    (version,) = summary["versions"]
    steps = {s["name"]: s for s in version["steps"]}
    assert steps["check"]["status"] == "fail"
    assert patch in steps["check"]["detail"] and "E501 Line too long (94 > 80)" in steps["check"]["detail"]
    assert steps["build"]["status"] == "pass"  # the later steps still run
    lint = version["lint"]
    assert lint["configured"] is True and lint["tools"] == ["ruff 0.9.3"] and lint["files"] == 1
    assert [(f["patch"], f["path"], f["line"], f["code"]) for f in lint["findings"]] == [
        (patch, SCHEDULER, long_line, "E501")
    ]
    assert lint["upstream_findings"] == 1 and lint["linted"] == 1

    # A failure is not kept: the next run checks again, the report taken from the lint-results cache.
    code, again = ci(ws, capsys, tmp_path / "out")
    check = next(s for s in again["versions"][0]["steps"] if s["name"] == "check")
    assert code == 1 and check["status"] == "fail" and check["reused"] is False
    assert again["versions"][0]["lint"]["linted"] == 0
    assert again["versions"][0]["lint"]["findings"] == lint["findings"]

    # Fixed the maintainer's way: the patch's commit amended, the series exported again.
    assert ws.run("apply", "1.0", "--force") == 0
    (checkout / SCHEDULER).write_text(upstream_scheduler() + "CLEAN = 1\nSHORT = 'x'\n")
    Git(checkout).run("commit", "-q", "-a", "--amend", "--no-edit")
    assert ws.run("export", "1.0") == 0
    code, fixed = ci(ws, capsys, tmp_path / "out")
    assert code == 0, fixed["versions"][0]["steps"]
    check = next(s for s in fixed["versions"][0]["steps"] if s["name"] == "check")
    assert check["status"] == "pass" and check["reused"] is False
    assert "upstream lint clean (1 hooks on 1 files, 1 on upstream lines" in check["detail"]
    assert fixed["versions"][0]["lint"]["findings"] == [] and fixed["versions"][0]["lint"]["linted"] == 1

    # Nothing changed: the check step is reused with what its lint ran and found.
    code, warm = ci(ws, capsys, tmp_path / "out")
    check = next(s for s in warm["versions"][0]["steps"] if s["name"] == "check")
    assert (
        code == 0
        and check["reused"] is True
        and check["key"] == next(s["key"] for s in fixed["versions"][0]["steps"] if s["name"] == "check")
    )
    assert warm["versions"][0]["lint"] == fixed["versions"][0]["lint"]


def test_no_upstream_lint_skips_the_linters_and_says_so(ws, capsys, tmp_path):
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(ws.checkout("1.0"), {SCHEDULER: upstream_scheduler() + LONG_LINE + "\n"}, subject="[Core] extra")
    assert ws.run("export", "1.0") == 0
    capsys.readouterr()
    out = tmp_path / "out"
    args = ("ci", "-o", str(out), "--tiers", "static", "--no-install-check", "--json")
    code = ws.run(*args, "--no-upstream-lint")
    summary = json.loads(capsys.readouterr().out)
    check = next(s for s in summary["versions"][0]["steps"] if s["name"] == "check")
    # the long line the patch wrote is not looked at: the check passes and says the linters did not run
    assert code == 0 and check["status"] == "pass" and "not run (--no-upstream-lint)" in check["detail"]
    assert summary["versions"][0]["lint"] is None
    # the linted check is another key: it runs, and fails on the patch's line
    code = ws.run(*args)
    linted = json.loads(capsys.readouterr().out)
    check = next(s for s in linted["versions"][0]["steps"] if s["name"] == "check")
    assert code == 1 and check["status"] == "fail" and check["reused"] is False and "E501" in check["detail"]
