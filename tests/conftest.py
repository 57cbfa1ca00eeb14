from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import LocalIndex, Workspace


@pytest.fixture
def index(tmp_path: Path):
    served = LocalIndex(tmp_path / "index")
    served.start()
    yield served
    served.stop()


@pytest.fixture
def workspace(tmp_path: Path, index: LocalIndex, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path / "project", tmp_path / "cache", index)


@pytest.fixture
def pinned(workspace: Workspace) -> Workspace:
    """A workspace with vllm 1.0 published on the local index and pinned."""
    workspace.publish("1.0")
    assert workspace.run("pin", "add", "1.0") == 0
    return workspace


# ---------------------------------------------------------------- time per test group
# Printed at the end of every run (CI's log shows where its minutes went); budgets in minutes, from the
# 25-minute budget of .ci/run. Reported, never asserted: a loaded machine is slower, not wrong.
GROUP_BUDGETS = {"unit": 6.0, "real": 13.0, "engine": 5.0}
_group_seconds: dict[str, float] = {}


def _group_of(item: pytest.Item) -> str:
    if item.get_closest_marker("engine"):
        return "engine"
    if item.get_closest_marker("real"):
        return "real"
    return "unit"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    group = getattr(report, "vpatch_group", None)
    if group is not None:
        _group_seconds[group] = _group_seconds.get(group, 0.0) + report.duration


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    outcome.get_result().vpatch_group = _group_of(item)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _group_seconds:
        return
    terminalreporter.section("time per test group (setup + call + teardown)")
    for group, budget in GROUP_BUDGETS.items():
        minutes = _group_seconds.get(group, 0.0) / 60
        over = "  OVER BUDGET" if minutes > budget else ""
        terminalreporter.write_line(f"{group:>6}: {minutes:5.1f} min of a {budget:.0f} min budget{over}")
