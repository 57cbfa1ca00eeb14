"""The real lifecycle: the kv-routing series rebased from vLLM 0.8.4 onto 0.8.5 and committed.

The committed 0.8.5 series applies to its pinned base and re-exports byte for byte, its review files
(range-diff.txt, evidence.json) account for every 0.8.4 patch, and the static conformance tier passes.
The cpu tier (two venvs, about a minute warm) is `vpatch conform 0.8.5 --tier cpu`; it is left out here
because the 0.8.4 tests already drive it. Nothing under the repository's patches/ is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.apply import apply_series
from toolkit.export import plan_export
from toolkit.lifecycle.rebase import EVIDENCE_FILE, RANGE_DIFF_FILE

REPO = Path(__file__).resolve().parents[2]
OLD, NEW = "0.8.4", "0.8.5"
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def series_pair(repo_project):
    old_pin, new_pin = repo_project.pins.get(OLD), repo_project.pins.get(NEW)
    return old_pin, new_pin, repo_project.series(old_pin), repo_project.series(new_pin)


def test_rebased_series_applies_clean_and_re_exports_byte_identically(repo_project, series_pair, tmp_path):
    _, new_pin, _, new_series = series_pair
    with repo_project.scratch_checkout(new_pin) as checkout:
        assert checkout.base_commit == new_pin.base_commit
        result = apply_series(checkout, new_series)
        assert result.ok, result.outcomes
        assert [o.status for o in result.outcomes] == ["clean"] * len(new_series.patches)
        copy = tmp_path / "series"
        shutil.copytree(new_series.directory, copy)
        plan = plan_export(checkout, copy)
        assert plan.changes() == {}
        for name, data in plan.patches:
            assert (new_series.directory / name).read_bytes() == data, name
        assert plan.series_text == (new_series.directory / "series").read_text(encoding="utf-8")


def test_review_files_account_for_every_old_patch(series_pair):
    old_pin, new_pin, old_series, new_series = series_pair
    old_names = [p.name for p in old_series.patches]
    assert [p.name for p in new_series.patches] == old_names  # nothing retired at 0.8.5
    for old, new in zip(old_series.patches, new_series.patches, strict=True):
        assert new.subject == old.subject
        for header in ("Upstream-Status", "Feature", "Origin", "Patch-File"):
            assert new.header(header) == old.header(header), (new.name, header)

    range_diff = (new_series.directory / RANGE_DIFF_FILE).read_text(encoding="utf-8")
    for number, patch in enumerate(old_series.patches, start=1):
        assert f"{number}:  " in range_diff and patch.subject in range_diff, patch.name

    evidence = json.loads((new_series.directory / EVIDENCE_FILE).read_text(encoding="utf-8"))
    assert evidence["old"] == {"version": OLD, "source": old_pin.source, "base_commit": old_pin.base_commit}
    assert evidence["new"] == {"version": NEW, "source": new_pin.source, "base_commit": new_pin.base_commit}
    assert sorted(evidence["patches"]) == sorted(old_names)
    assert evidence["kept"] == old_names and evidence["dropped"] == []
    outcomes = {name: entry["outcome"] for name, entry in evidence["patches"].items()}
    assert outcomes[old_names[0]] == "clean"
    assert all(outcomes[name] == "merged" for name in old_names[1:]), outcomes  # the three conflicts
    for name, entry in evidence["patches"].items():
        # 0.8.5 has no KV events of its own: no patch shows any sign of being upstream.
        assert entry["upstream_signals"] == [], name
        assert entry["evidence"]["became_empty"] is False and entry["evidence"]["reverse_applies"] is False
    assert (new_series.directory / "NOTES.md").is_file()


def test_conform_085_static(tmp_path):
    vpatch = Path(sys.executable).with_name("vpatch")
    proc = subprocess.run(
        [str(vpatch), "--root", str(REPO), "conform", NEW, "--tier", "static", "-o", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)["results"][0]
    statuses = {c["name"]: c["status"] for c in result["checks"]}
    assert statuses == {"series-applies": "pass", "wheels": "pass", "api-surface": "pass"}, result["checks"]
    assert json.loads((tmp_path / f"vllm-{NEW}-static.json").read_text())["ok"] is True
