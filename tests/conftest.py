from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness import LocalIndex, Workspace

_STARTED = pytest.StashKey[float]()


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


# ---------------------------------------------------------------- parallel runs (pytest-xdist)
# pyproject.toml runs the suite on two workers (`-n 2 --dist loadgroup`; `-n 0` for one process, e.g. with
# pdb or -s). Each test module is one group, so its module fixtures are built once, in one worker, and its
# tests keep their order; every engine test is in the group "engine", so one real engine runs at a time; modules
# that share one expensive session fixture name a group of their own (`pytest.mark.xdist_group("conform-084")`).
# Session fixtures (the cached stock and dynamo-base venvs) are built per worker, from ~/.cache/vpatch,
# whose entries are locked while they are built: the second worker waits, then reuses.
# Groups are handed out longest first (xdist gives a worker its next group when it is nearly done with its
# last): the engine group, then the groups that modules name (a shared expensive run), then the other real
# modules, then unit (a tail of short tests), so the two longest chains start at once on the two workers.
_GROUP_ORDER = {"engine": 0, "named": 1, "real": 2, "unit": 3}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank: dict[str, int] = {}
    for item in items:
        group = _group_of(item)
        if item.get_closest_marker("xdist_group"):  # a module that shares an expensive fixture names its group
            rank[item.nodeid] = _GROUP_ORDER["named"]
            continue
        rank[item.nodeid] = _GROUP_ORDER[group]
        item.add_marker(pytest.mark.xdist_group("engine" if group == "engine" else item.nodeid.split("::")[0]))
    items.sort(key=lambda item: rank[item.nodeid])  # stable: a module's tests keep their order


@pytest.hookimpl(tryfirst=True)  # before xdist's worker sends the collected ids to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    _name_groups(session.config, session.items)


def _name_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker under --dist loadgroup: the `@group` suffix on each test id, which the controller
    schedules by. pytest-xdist 3.8 sets it by assigning `item._nodeid`, which pytest 9.2 no longer reads
    (nodeid comes from `item._id`), so every test became a group of its own; this sets it where pytest reads it."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        marks = {
            str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")
        }
        if marks and "@" not in item.nodeid.rsplit("]", 1)[-1]:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(sorted(marks))}")


# ---------------------------------------------------------------- time per test group
# Printed at the end of every run (CI's log shows where its minutes went): the summed time of a group's
# tests (setup + call + teardown, in whichever worker ran them) against its budget, and the run's wall
# time against the 10-minute goal of .ci/run's test command (issue #20). Reported, never asserted: a loaded
# machine is slower, not wrong. A group over its budget gets a line of its own, the last before pytest's.
GROUP_BUDGETS = {"unit": 7.0, "real": 10.0, "engine": 5.0}
WALL_BUDGET = 10.0
_group_seconds: dict[str, float] = {}
_group_tests: dict[str, set[str]] = {}


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
        _group_tests.setdefault(group, set()).add(report.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    outcome.get_result().vpatch_group = _group_of(item)  # travels with the report from an xdist worker


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_STARTED] = time.monotonic()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if not _group_seconds:
        return
    wall = (time.monotonic() - config.stash[_STARTED]) / 60
    workers = getattr(config.option, "numprocesses", None) or 0
    terminalreporter.section("time per test group (summed setup + call + teardown of its tests)")
    over = []
    for group, budget in GROUP_BUDGETS.items():
        minutes = _group_seconds.get(group, 0.0) / 60
        count = len(_group_tests.get(group, ()))
        mark = "  OVER BUDGET" if minutes > budget else ""
        terminalreporter.write_line(f"{group:>6}: {minutes:5.1f} min of a {budget:.0f} min budget, {count} tests{mark}")
        if mark:
            over.append(f"{group} {minutes:.1f} > {budget:.0f} min")
    ran = f"on {workers} workers" if workers else "in one process"
    terminalreporter.write_line(f"  wall: {wall:5.1f} min {ran} (goal for the whole suite: {WALL_BUDGET:.0f} min)")
    if over:
        terminalreporter.write_line(f"vpatch test budget: OVER BUDGET: {'; '.join(over)}", red=True, bold=True)
