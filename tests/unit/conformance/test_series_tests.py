"""The tests a series ships (files its patches add under tests/): found per patch, judged per outcome."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from tests.harness.paths import REPO_ROOT
from toolkit.conformance.checks import FAIL, PASS
from toolkit.conformance.upstream_tests import series_test_files, series_tests_result
from toolkit.options import load_options
from toolkit.project import Project

REPO = REPO_ROOT


def test_every_pd_patch_of_090_ships_its_own_test():
    project = Project.load(load_options({"root": str(REPO)}))
    series = project.series(project.pins.get("0.9.0"))
    files = series_test_files(series)
    assert len(files) == len(set(files))
    for position, patch in enumerate(series.patches):
        added = [f for f in files if f in patch.touched_paths]
        if not added:
            # a patch on another patch's code extends that patch's test (0016: 0014's transport, issue #19)
            earlier = {f for p in series.patches[:position] for f in files if f in p.touched_paths}
            added = [f for f in patch.touched_paths if f in earlier]
        assert len(added) == 1, patch.name
        assert PurePosixPath(added[0]).parent == PurePosixPath("tests/v1/kv_connector/unit"), patch.name


def test_result_passes_only_when_every_test_passes():
    files = ("tests/a/test_x.py",)
    ok = series_tests_result(files, {"a.test_x::test_1": "passed", "a.test_x::test_2": "skipped"})
    assert ok.status == PASS and "2 tests" in ok.detail and "1 skipped" in ok.detail
    bad = series_tests_result(files, {"a.test_x::test_1": "passed", "a.test_x::test_2": "error"})
    assert bad.status == FAIL and bad.diff == "a.test_x::test_2"
    none = series_tests_result(files, {})
    assert none.status == FAIL and "none of the 1 test file(s)" in none.detail


def test_every_pd_patch_is_a_declared_sub_feature_under_the_size_limit():
    """Issue 15: each P/D capability its own patch (or small group) with its own `Feature: pd-disagg/SUB`,
    a rationale with its test and retire condition, at most ~400 changed lines."""
    from toolkit.features import parent_of, sub_of
    from toolkit.lint import MAX_CHANGED_LINES, patch_stats

    project = Project.load(load_options({"root": str(REPO)}))
    for version in ("0.9.0", "0.9.1", "0.10.2"):
        series = project.series(project.pins.get(version))
        features = [p.feature for p in series.patches]
        assert all(parent_of(f) == "pd-disagg" and sub_of(f) for f in features), features
        assert set(features) <= set(project.pins.features)
        # a sub-feature's patches are adjacent (a small group), each carries its own test; a patch that builds on
        # a later patch follows that one instead (0016: hold-timeout on 0014's transport, issue #19)
        follow_ups = [p for p in series.patches if p.name.startswith("0016-")]
        assert [(p.feature, "0014" in p.message) for p in follow_ups] == [("pd-disagg/hold-timeout", True)]
        grouped = [p.feature for p in series.patches if p not in follow_ups]
        assert [f for i, f in enumerate(grouped) if i == 0 or grouped[i - 1] != f] == list(dict.fromkeys(grouped))
        for patch in series.patches:
            assert sum(patch_stats(patch)) <= MAX_CHANGED_LINES, (version, patch.name)
            assert re.search(r"\nTest:\s+tests/", patch.message) and "\nRetire when:" in patch.message, (
                version,
                patch.name,
            )
