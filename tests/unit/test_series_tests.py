"""The tests a series ships (files its patches add under tests/): found per patch, judged per outcome."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from toolkit.conformance.checks import FAIL, PASS
from toolkit.conformance.upstream_tests import series_test_files, series_tests_result
from toolkit.options import load_options
from toolkit.project import Project

REPO = Path(__file__).resolve().parents[2]


def test_every_pd_patch_of_090_ships_its_own_test():
    project = Project.load(load_options({"root": str(REPO)}))
    series = project.series(project.pins.get("0.9.0"))
    files = series_test_files(series)
    assert len(files) == len(series.patches) == len(set(files))
    for patch in series.patches:
        added = [f for f in files if f in patch.touched_paths]
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
