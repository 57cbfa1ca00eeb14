"""The story of a release reached by a jump (an empty series with NOTES.md, no `retired/` patches): its
capabilities judged from the plugin's delivery table (toolkit/plugin/delivers.toml) and pins.toml's
`native-since`, on the release's own contract files; bad tables refused by file and line. Synthetic projects
in tmp, as in test_story.py; the real tree's 0.32.0 is in test_story.py::test_the_real_tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT
from tests.unit.report.test_story import ALL, PINS, contract, release
from toolkit.cli import main
from toolkit.errors import VpatchError
from toolkit.exit_codes import FAILED
from toolkit.options import load_options
from toolkit.pins import load_pins
from toolkit.plugin.delivers import DELIVERS_FILE, load_table
from toolkit.project import Project
from toolkit.report.story import compute_story
from toolkit.report.story_text import short

TABLE = """["dynamo_base_plugin.load_metrics"]
object = "LoadMetricsLogger"
since = "1.0"
capabilities = ["kv-routing"]
what = "load metrics"

["dynamo_base_plugin.shared_storage"]
object = "SharedStorageConnectorV1"
since = "{since}"
capabilities = ["pd-disagg/b"]
what = "the shared-storage transport"
"""


def jumped(tmp_path: Path, *, native: str = "2.0", pins: str = PINS) -> Path:
    """1.0 carries everything; 3.0 is pinned past the chain: an empty series that NOTES.md explains, and its
    own contract files (stock lacks load-figures and no-leaks; stock + plugin passes every item)."""
    root = tmp_path / "project"
    (root / "patches").mkdir(parents=True)
    text = pins.replace('"pd-disagg/a" = { description = "part a",', f'"pd-disagg/a" = {{ native-since = "{native}",')
    (root / "patches" / "pins.toml").write_text(text)
    release(root, "1.0", ALL)
    release(root, "3.0", [])
    (root / "patches" / "vllm-3.0" / "NOTES.md").write_text(
        "# 3.0: the series is empty\n\nStock has a; b is the plugin's.\n"
    )
    contract(root, "3.0", "stock", {"kv-routing": "load-figures", "pd-disagg": "no-leaks"})
    contract(root, "3.0", "stock+plugin")
    return root


def table(tmp_path: Path, since: str = "3.0", text: str = TABLE) -> Path:
    path = tmp_path / "delivers.toml"
    path.write_text(text.replace("{since}", since))
    return path


def story(root: Path, table_path: Path):
    return compute_story(Project.load(load_options({"root": str(root)})), table=load_table(table_path))


def test_a_jumped_release_shows_plugin_and_native_capabilities_from_the_data(tmp_path):
    root = jumped(tmp_path)
    found = story(root, table(tmp_path))
    at3 = found.release("3.0")
    assert at3 is not None and at3.engine == "stock+plugin"
    cell = {c.capability: c for c in at3.cells}
    files = ["vllm-3.0+plugin-against-1.0.json", "vllm-3.0-against-1.0.json"]
    b = cell["pd-disagg/b"]
    assert (b.status, b.module, b.since, b.plugin) == (
        "plugin",
        "dynamo_base_plugin.shared_storage",
        "3.0",
        "dynamo-base-plugin 2.0+plugin.abc",
    )
    assert b.evidence == files and b.items == ["adds no-leaks"] and b.patches == []
    assert "dynamo_base_plugin.shared_storage:SharedStorageConnectorV1 (since vLLM 3.0)" in b.note
    a = cell["pd-disagg/a"]
    assert (a.status, a.since, a.evidence) == ("retired", "2.0", files)
    assert a.items == ["passes decode-equals-aggregated", "passes no-leaks"]
    assert "native since 2.0" in a.note and "vllm-3.0+plugin-against-1.0.json" in a.note
    assert (short(a), short(b)) == ("retired, native since 2.0", "plugin since 3.0")
    kv = cell["kv-routing"]
    assert (kv.status, kv.module, kv.since, kv.items) == (
        "plugin",
        "dynamo_base_plugin.load_metrics",
        "1.0",
        ["adds load-figures"],
    )
    whole = cell["pd-disagg"]
    assert (whole.status, whole.module) == ("plugin", "dynamo_base_plugin.shared_storage")
    # the rebased release keeps what its series says
    assert {c.status for c in found.release("1.0").cells} == {"carried"}  # type: ignore[union-attr]
    assert found.switch.release == "3.0"


def test_not_yet_delivered_or_not_yet_native_stays_not_applicable(tmp_path):
    root = jumped(tmp_path, native="4.0")
    at3 = story(root, table(tmp_path, since="4.0")).release("3.0")
    assert at3 is not None
    cell = {c.capability: c for c in at3.cells}
    for name in ("pd-disagg/a", "pd-disagg/b", "pd-disagg"):
        assert cell[name].status == "not-applicable", cell[name]
        assert cell[name].note == "not in the series of 3.0, and no patch of it was retired"
    assert cell["kv-routing"].status == "plugin"  # its module delivers it from 1.0


def test_an_empty_series_prints_one_line_not_an_empty_table(tmp_path, capsys):
    root = jumped(tmp_path, pins=PINS.split('"pd-disagg/a"')[0])  # pd-disagg not split: the shipped table fits
    capsys.readouterr()
    assert main(["--root", str(root), "status", "3.0"]) == 0
    out = capsys.readouterr().out
    assert (
        "vllm 3.0: no patches: the series is empty (fingerprint e3b0c44298fc; patches/vllm-3.0/NOTES.md says why)"
        in (" ".join(out.split()))
    )
    assert "patch" not in out.split("no patches")[0] and "subject" not in out
    capsys.readouterr()
    assert main(["--root", str(root), "status", "--json"]) == 0
    cells = next(r for r in json.loads(capsys.readouterr().out)["story"]["releases"] if r["version"] == "3.0")["cells"]
    assert {c["capability"]: c["status"] for c in cells} == {"kv-routing": "plugin", "pd-disagg": "plugin"}


def test_the_report_shows_the_contract_evidence_a_jumped_release_rests_on(tmp_path):
    inp = tmp_path / "out"
    inp.mkdir()
    verdict = {
        "engine": "stock+plugin",
        "active_patches": 0,
        "features": [],
        "summary": "stock vLLM 3.0 with the plugin provides every feature",
        "contracts": ["vllm-3.0+plugin-against-1.0.json", "vllm-3.0-against-1.0.json"],
    }
    summary = {"schema": 2, "project": "vllm", "started": "2026-12-02T00:00:00Z", "ok": True}
    summary["versions"] = [{"version": "3.0", "verdict": verdict}, {"version": "2.0"}]
    (inp / "ci-summary.json").write_text(json.dumps(summary))
    out = tmp_path / "report"
    assert main(["--root", str(jumped(tmp_path)), "report", "-i", str(inp), "-o", str(out)]) == 0
    page = (out / "index.html").read_text()
    row = page.split("<th>3.0</th>", 1)[1].split("</tr>", 1)[0]
    assert "contract evidence (committed): vllm-3.0+plugin-against-1.0.json, vllm-3.0-against-1.0.json" in row
    assert "not run" not in row
    assert "not run" in page.split("<th>2.0</th>", 1)[1].split("</tr>", 1)[0]  # no verdict, no evidence


@pytest.mark.parametrize(
    ("edit", "message", "line"),
    [
        (('["pd-disagg/b"]', '["pd-disagg/c"]'), "unknown sub-feature 'pd-disagg/c' of pd-disagg", 7),
        (('["kv-routing"]', '["kv-routin"]'), "unknown feature 'kv-routin'", 1),
        (('["kv-routing"]', '["Kv Routing"]'), "feature name 'Kv Routing'", 1),
        (('what = "load metrics"', 'whatt = "load metrics"'), "whatt", 5),
        (("load_metrics", "load_metricz"), "not a module of the plugin package", 1),
        (('since = "1.0"', 'since = "one"'), "invalid version 'one'", 3),
    ],
)
def test_a_bad_delivery_table_is_refused_by_file_and_line(tmp_path, edit, message, line):
    root = jumped(tmp_path)
    path = table(tmp_path, text=TABLE.replace(*edit))
    with pytest.raises(VpatchError) as caught:
        load_table(path).check(load_pins(root / "patches" / "pins.toml").features)
    rendered = caught.value.render()
    assert "\n" not in rendered and message in rendered, rendered
    assert (caught.value.path, caught.value.line) == (path, line)


def test_the_shipped_table_is_refused_for_a_project_that_splits_the_feature_otherwise(tmp_path, capsys):
    """The shipped table names pd-disagg/shared-storage; a project whose pd-disagg declares other parts does
    not have it: `vpatch status` refuses with one line naming the table, instead of a story that skips it."""
    root = jumped(tmp_path)
    capsys.readouterr()
    assert main(["--root", str(root), "status", "3.0"]) == FAILED
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "delivers.toml:" in err and "unknown sub-feature 'pd-disagg/shared-storage'" in err
    load_table(DELIVERS_FILE).check(load_pins(REPO_ROOT / "patches" / "pins.toml").features)  # the real project: fine


def test_a_sub_feature_native_since_that_is_no_version_is_refused(tmp_path):
    root = jumped(tmp_path, native="soon")
    with pytest.raises(VpatchError) as caught:
        load_pins(root / "patches" / "pins.toml")
    assert "invalid version 'soon'" in caught.value.render() and caught.value.path == root / "patches" / "pins.toml"
