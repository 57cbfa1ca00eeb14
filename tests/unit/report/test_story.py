"""The story (toolkit/report/story.py, toolkit/records/story.py): per pinned release and capability, carried /
plugin / retired / n/a, and the release from which stock vLLM is the recommended default, on small synthetic
projects written in tmp (pins.toml, series, retired/ patches, contract files as `vpatch conform --save`
writes them), through `vpatch status` and `vpatch report`; and on the real patches/ tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.version import Version

from tests.harness.paths import REPO_ROOT
from toolkit.cli import main
from toolkit.model import parse_patch
from toolkit.options import load_options
from toolkit.plugin.delivers import default_table
from toolkit.project import Project
from toolkit.records.contract import BuildSpec, ConfigRun, ContractResults, ItemResult, PluginRef, encode_contract
from toolkit.records.outcome import Outcome
from toolkit.records.status import Status
from toolkit.records.story import STORY_FILE, decode_story
from toolkit.report.story import compute_story
from toolkit.verdict import decide

PINS = """project = "vllm"

[features]
kv-routing = { description = "KV events and load metrics" }
pd-disagg = "prefill/decode disaggregation"
"pd-disagg/a" = { description = "part a", upstream = "vllm-project/vllm#111 (2.0)" }
"pd-disagg/b" = { description = "part b", upstream = "lead: 3.0 (#222)" }
"""
ITEMS = {"kv-routing": ("cached-prefixes", "load-figures"), "pd-disagg": ("decode-equals-aggregated", "no-leaks")}
PLUGIN = PluginRef("dynamo-base-plugin", "2.0+plugin.abc", "p.whl", "ab" * 32, None, {"kv-routing": "load metrics"})
NUMBER = {"kv-routing": "0001", "pd-disagg/a": "0002", "pd-disagg/b": "0003"}


def mail(feature: str, *extra: str) -> str:
    number = NUMBER[feature]
    path = f"vllm/{feature.replace('/', '_').replace('-', '_')}.py"
    headers = "\n".join(["Upstream-Status: Pending", f"Feature: {feature}", *extra])
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: A <a@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
        f"Subject: [PATCH] {feature}\n\nWhy it is carried.\n\n{headers}\n---\n"
        f" {path} | 1 +\n 1 file changed, 1 insertion(+)\n\n"
        f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+X = {number}\n--\n2.0\n\n"
    )


def name_of(feature: str) -> str:
    return f"{NUMBER[feature]}-{feature.replace('/', '-')}.patch"


def release(root: Path, version: str, carried: list[str], retired: dict[str, tuple[str, str]] | None = None) -> None:
    """Pin `version` with a series carrying `carried`, and `retired`: feature -> (since, Retired-Evidence)."""
    with (root / "patches" / "pins.toml").open("a") as pins:
        pins.write(f'\n[pins."{version}"]\nsource = "git"\nremote = "https://example.invalid/vllm.git"\n')
        pins.write(f'tag = "v{version}"\n')
    directory = root / "patches" / f"vllm-{version}"
    directory.mkdir(parents=True)
    for feature in carried:
        (directory / name_of(feature)).write_text(mail(feature))
    names = "\n".join(name_of(f) for f in carried)
    (directory / "series").write_text(f"# series for {version}\n{names}\n")
    for feature, (since, evidence) in (retired or {}).items():
        (directory / "retired").mkdir(exist_ok=True)
        text = mail(feature, f"Retired-Since: {since}", f"Retired-Evidence: {evidence}")
        (directory / "retired" / name_of(feature)).write_text(text)


def contract(root: Path, version: str, kind: str, fail: dict[str, str] | None = None) -> str:
    """A contract result for `version` against 1.0 on `kind`; `fail`: feature -> the item that is not provided."""
    plugins = (PLUGIN,) if kind == "stock+plugin" else ()
    new = BuildSpec(version, kind, ("p.whl",) if plugins else (), plugins)  # type: ignore[arg-type]
    items = [
        ItemResult(f, i, Status.NOT_PROVIDED if (fail or {}).get(f) == i else Status.PASS, "")
        for f, names in ITEMS.items()
        for i in names
    ]
    run = ConfigRun("new-bind-builtin", "new", new, None, items)
    ok = all(i.status == Status.PASS for i in items)
    results = ContractResults("vllm", new, BuildSpec("1.0", "dynamo-base"), sorted(ITEMS), "kv-watch", [run], ok=ok)
    name = f"vllm-{version}{'+plugin' if plugins else ''}-against-1.0.json"
    (root / "patches" / "conformance").mkdir(exist_ok=True)
    (root / "patches" / "conformance" / name).write_text(encode_contract(results))
    return name


def new_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "patches").mkdir(parents=True)
    (root / "patches" / "pins.toml").write_text(PINS)
    return root


ALL = ["kv-routing", "pd-disagg/a", "pd-disagg/b"]
PLUGIN_TEXT = "conform {v} --against 1.0: load-figures not provided by stock; delivered by the dynamo-base plugin"


def retired_all(version: str, since: str) -> dict[str, tuple[str, str]]:
    return {
        "kv-routing": (since, PLUGIN_TEXT.format(v=since) + f" (vllm-{since}+plugin-against-1.0.json)"),
        "pd-disagg/a": (
            since,
            f"conform {since} --against 1.0: every item passes on stock (vllm-{since}-against-1.0.json)",
        ),
        "pd-disagg/b": (since, "out of tree: dynamo_base_plugin.shared_storage of the plugin carries it"),
    }


def story_of(root: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["--root", str(root), "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["story"]


def cells(story: dict, version: str) -> dict[str, dict]:
    found = next(r for r in story["releases"] if r["version"] == version)
    return {c["capability"]: c for c in found["cells"]}


def test_no_switch_names_what_still_needs_dynamo_base(tmp_path, capsys):
    root = new_project(tmp_path)
    release(root, "1.0", ALL)
    release(root, "2.0", ["pd-disagg/a"], {"kv-routing": ("2.0", "forced: upstream has it")})
    story = story_of(root, capsys)
    assert story["switch"]["release"] is None and story["switch"]["needs"] == ["pd-disagg/a"]
    assert "at the newest pin, 2.0, pd-disagg (a) still needs dynamo-base (patches 0002)" in story["switch"]["sentence"]
    assert [r["engine"] for r in story["releases"]] == ["dynamo-base", "dynamo-base"]
    at2 = cells(story, "2.0")
    assert at2["pd-disagg/a"]["status"] == "carried" and at2["pd-disagg/a"]["patches"] == [name_of("pd-disagg/a")]
    assert at2["kv-routing"]["status"] == "retired" and at2["kv-routing"]["since"] == "2.0"
    assert at2["kv-routing"]["note"] == "forced: upstream has it"
    assert at2["pd-disagg/b"]["status"] == "not-applicable"
    assert at2["pd-disagg"]["status"] == "carried"
    assert cells(story, "1.0")["pd-disagg/b"]["status"] == "carried"
    caps = {c["name"]: c for c in story["capabilities"]}
    assert caps["pd-disagg/a"]["prs"] == ["vllm-project/vllm#111"] and not caps["pd-disagg/a"].get("lead")
    assert caps["pd-disagg/b"]["prs"] == ["#222"] and caps["pd-disagg/b"]["lead"] is True
    assert main(["--root", str(root), "status"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "recommended default 1.0: dynamo-base needed 2.0: dynamo-base needed no switch: dynamo-base stays" in shown


def test_switch_at_a_stock_plus_plugin_release_that_every_later_one_agrees_with(tmp_path, capsys):
    root = new_project(tmp_path)
    release(root, "1.0", ALL)
    release(root, "2.0", [], retired_all("2.0", "2.0"))
    release(root, "3.0", [], retired_all("3.0", "2.0"))
    for version in ("2.0", "3.0"):
        contract(root, version, "stock", {"kv-routing": "load-figures", "pd-disagg": "no-leaks"})
        contract(root, version, "stock+plugin")
    story = story_of(root, capsys)
    assert [r["engine"] for r in story["releases"]] == ["dynamo-base", "stock+plugin", "stock+plugin"]
    switch = story["switch"]
    assert (switch["release"], switch["engine"]) == ("2.0", "stock+plugin")
    assert switch["sentence"].startswith(
        "stock vLLM + the dynamo-base plugin (dynamo-base-plugin 2.0+plugin.abc) is the recommended default from "
        "2.0 on, because vLLM 2.0's series is empty, stock vLLM does pd-disagg/a (since 2.0), dynamo-base-plugin "
        "2.0+plugin.abc delivers dynamo_base_plugin.load_metrics: kv-routing; dynamo_base_plugin.shared_storage: "
        "pd-disagg/b, on the contract evidence vllm-2.0+plugin-against-1.0.json;"
    )
    assert switch["sentence"].endswith("; every later pinned release (3.0) agrees.")
    at2 = cells(story, "2.0")
    assert at2["kv-routing"]["status"] == "plugin" and at2["kv-routing"]["items"] == ["adds load-figures"]
    assert at2["pd-disagg/b"]["module"] == "dynamo_base_plugin.shared_storage"
    assert at2["pd-disagg/a"]["status"] == "retired" and at2["pd-disagg/a"]["since"] == "2.0"
    assert at2["pd-disagg/a"]["evidence"] == ["vllm-2.0+plugin-against-1.0.json", "vllm-2.0-against-1.0.json"]
    assert cells(story, "3.0")["pd-disagg/a"]["since"] == "2.0"  # retired in 2.0, still retired in 3.0
    assert main(["--root", str(root), "status", "3.0"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "recommended default 3.0: stock + plugin (dynamo-base-plugin 2.0+plugin.abc) switch at 2.0:" in shown
    assert "1.0: dynamo-base needed" not in shown  # only the selected release, but the switch is over all pins


def test_switch_at_a_stock_release(tmp_path, capsys):
    root = new_project(tmp_path)
    release(root, "1.0", ALL)
    release(root, "2.0", ["pd-disagg/b"], {"kv-routing": ("2.0", "stock has it"), "pd-disagg/a": ("2.0", "x")})
    retired = {f: ("3.0" if f == "pd-disagg/b" else "2.0", "stock has it (vllm-3.0-against-1.0.json)") for f in ALL}
    release(root, "3.0", [], retired)
    contract(root, "3.0", "stock")
    story = story_of(root, capsys)
    assert [r["engine"] for r in story["releases"]] == ["dynamo-base", "dynamo-base", "stock"]
    switch = story["switch"]
    assert (switch["release"], switch["engine"]) == ("3.0", "stock")
    assert switch["sentence"] == (
        "stock vLLM is the recommended default from 3.0 on, because vLLM 3.0's series is empty, stock vLLM does "
        "kv-routing (since 2.0), pd-disagg/a (since 2.0), pd-disagg/b (since 3.0), on the contract evidence "
        "vllm-3.0-against-1.0.json; it is the newest pin."
    )
    assert {c["status"] for c in cells(story, "3.0").values()} == {"retired"}


def test_a_later_release_needing_patches_again_moves_the_switch(tmp_path, capsys):
    root = new_project(tmp_path)
    release(root, "1.0", ALL)
    release(root, "2.0", [], retired_all("2.0", "2.0"))
    contract(root, "2.0", "stock+plugin")
    release(root, "3.0", ["pd-disagg/a"], {"pd-disagg/b": retired_all("3.0", "2.0")["pd-disagg/b"]})
    story = story_of(root, capsys)
    assert [r["engine"] for r in story["releases"]] == ["dynamo-base", "stock+plugin", "dynamo-base"]
    switch = story["switch"]
    assert switch["release"] is None and switch["needs"] == ["pd-disagg/a"]
    assert switch["sentence"].endswith("; 2.0 was stock + plugin, but 3.0 needs dynamo-base again.")
    assert cells(story, "3.0")["pd-disagg/a"]["status"] == "carried"

    # a 4.0 that is stock again: the switch is 4.0, not 2.0 (3.0 in between disagrees)
    release(root, "4.0", [], {f: ("4.0", "stock has it (vllm-4.0-against-1.0.json)") for f in ALL})
    contract(root, "4.0", "stock")
    story = story_of(root, capsys)
    assert (story["switch"]["release"], story["switch"]["engine"]) == ("4.0", "stock")

    # the report shows the same story: the table, the sentence, story.json through its schema
    inp, out = tmp_path / "out", tmp_path / "report"
    inp.mkdir()
    summary = {"schema": 2, "project": "vllm", "started": "2026-12-02T00:00:00Z", "ok": True, "versions": []}
    (inp / "ci-summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["--root", str(root), "report", "-i", str(inp), "-o", str(out), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["default_switch"]["release"] == "4.0"
    assert decode_story((out / STORY_FILE).read_bytes()) == decode_story(json.dumps(story))
    page = (out / "index.html").read_text()
    assert story["switch"]["sentence"].replace("'", "&#x27;") in page
    assert '<span class="s-warn">carried 0002</span>' in page and "plugin since 2.0" in page
    summary_md = (out / "summary.md").read_text()
    assert "| **default** | | dynamo-base needed | stock + plugin | dynamo-base needed | stock |" in summary_md
    parts = ("| ↳ pd-disagg/a", "vllm-project/vllm#111 (2.0)", "carried 0002", "retired since 2.0", "carried 0002")
    row = " | ".join((*parts, "retired since 4.0 |"))
    assert row in summary_md  # retired again in 4.0 after 3.0 carried it: since 4.0, not 2.0
    kv = cells(story, "3.0")["kv-routing"]  # 3.0 has no contract of its own: 2.0's verdict judges it
    assert (kv["status"], kv["judged_at"], kv["module"]) == ("plugin", "2.0", "dynamo_base_plugin.load_metrics")


def test_the_real_tree(tmp_path):
    """What the committed pins, series and evidence say today, derived from them: each release's default is
    its verdict, the switch is the first release from which every verdict is stock (+ plugin), and with none,
    what the newest pin still carries is what needs dynamo-base."""
    project = Project.load(load_options({"root": str(REPO_ROOT)}))
    story = compute_story(project)
    series = {str(p.version): project.series(p) if project.has_series(p) else None for p in project.pins.pins}
    engines = [decide(project, p, series[str(p.version)]).engine for p in project.pins.pins]
    assert [r.engine for r in story.releases] == engines
    tail = len(engines)
    while tail and engines[tail - 1] in ("stock", "stock+plugin"):
        tail -= 1
    expected = str(project.pins.pins[tail].version) if tail < len(engines) else None
    assert story.switch.release == expected
    for release in story.releases:
        names = {p.name for p in series[release.version].patches} if series[release.version] else set()
        for cell in release.cells:
            assert len(cell.patches) == len(set(cell.patches)), (release.version, cell)  # each patch once
            if cell.status == "carried":
                assert set(cell.patches) <= names, (release.version, cell)
    newest = series[story.releases[-1].version]
    if expected is None and newest is not None:
        parts = {p.feature for p in newest.patches}
        leaves = {c.name for c in story.capabilities if not c.has_parts}
        assert set(story.switch.needs) == {c.name for c in story.capabilities if c.name in leaves} & (
            parts | {c.name for c in story.capabilities if c.parent in parts}
        )
    # every capability a release's series names is carried there; one its retired/ holds (and the series
    # does not) is plugin or retired there, since the Retired-Since its patch records
    for pin in project.pins.pins:
        here, release = series[str(pin.version)], story.release(str(pin.version))
        if here is None or release is None:
            continue
        named = {p.feature for p in here.patches}
        for path in sorted((here.directory / "retired").glob("*.patch")):
            patch = parse_patch(path)
            if patch.feature in named:
                continue
            cell = release.cell(patch.feature)
            assert cell is not None and cell.status in ("plugin", "retired"), (pin.version, cell)
            assert cell.since == patch.header("Retired-Since")
        for feature in named:
            carried = release.cell(feature)
            assert carried is not None and carried.status == "carried", (pin.version, carried)
    # 0.9.0's kv-routing: its verdict picks the build, the cell follows it
    verdict = decide(project, project.pins.get("0.9.0"), series["0.9.0"])
    kv_verdict = next(f for f in verdict.feature_verdicts if f.feature == "kv-routing")
    kv = story.release("0.9.0").cell("kv-routing")  # type: ignore[union-attr]
    assert kv is not None and kv.status == ("plugin" if kv_verdict.engine == "stock+plugin" else "retired")
    assert set(kv_verdict.evidence) <= set(kv.evidence)
    # what the build does not meet is one item of the cell, each item of the contract once, not "not met:" twice
    unmet = [i for i in kv.items if i.startswith("not met")]
    assert unmet == ([f"not met: {'; '.join(kv_verdict.unmet)}"] if kv_verdict.unmet else []), kv.items
    assert all(u in unmet[0] for u in kv_verdict.unmet) and sum(i.count("not met") for i in kv.items) <= 1
    # 0.32.0, reached by a jump (an empty series, no retired/): each pd-disagg capability is plugin where the
    # plugin's delivery table has a module for it there, else retired since its pins.toml native-since, on
    # 0.32.0's own contract files; one whose patch an earlier release retired (`vpatch retire`: pd-disagg/nixl
    # since 0.13.0) is retired since then, on that retirement's evidence as well
    table, jumped = default_table(), story.release("0.32.0")
    assert jumped is not None and jumped.engine == "stock+plugin"
    derived: dict[str, set[str]] = {"plugin": set(), "retired": set()}
    by_patch = {}
    for path in sorted(project.options.patches_dir.glob("vllm-*/retired/*.patch")):
        patch = parse_patch(path)
        by_patch[patch.feature] = (patch.header("Retired-Since"), path.name)
    for cap in story.capabilities:
        cell = jumped.cell(cap.name)
        if cap.parent != "pd-disagg" or cell is None:
            continue
        modules = table.at(cap.name, "0.32.0")
        status = "plugin" if modules else "retired"
        derived[status].add(cap.name.split("/", 1)[1])
        assert cell.status == status, (cap.name, cell)
        if cap.name in by_patch and not modules:
            since, name = by_patch[cap.name]
            assert cell.since == since and name in cell.patches, cell
            assert f"vllm-{since}-against-{since}.json" in cell.evidence, cell
            assert Version(since) <= Version("0.32.0")
            continue
        assert cell.evidence and all(f.startswith("vllm-0.32.0") for f in cell.evidence), cell
        assert cell.items and not cell.patches and cell.judged_at is None, cell
        if modules:
            assert cell.module == modules[0].module and cell.since == str(modules[0].since)
        else:
            assert cap.native_since is not None and cell.since == cap.native_since
            assert Version(cap.native_since) <= Version("0.32.0")
    assert derived == {
        "plugin": {"shared-storage", "load-timeout", "hold-timeout", "transfer-protocol"},
        "retired": {"abort-while-loading", "failed-loads", "stepping-while-held", "partial-block", "nixl", "block-dim"},
    }
    whole = jumped.cell("pd-disagg")
    assert whole is not None and (whole.status, whole.module) == ("plugin", "dynamo_base_plugin.shared_storage")


def test_pins_that_do_not_load_are_shown_in_the_report_not_fatal(tmp_path, capsys):
    root = new_project(tmp_path)
    (root / "patches" / "pins.toml").write_text(PINS + '\n[pins."1.0"]\nsource = "git"\n')
    inp = tmp_path / "out"
    inp.mkdir()
    summary = {"schema": 2, "project": "vllm", "started": "2026-12-02T00:00:00Z", "ok": True, "versions": []}
    (inp / "ci-summary.json").write_text(json.dumps(summary))
    assert main(["--root", str(root), "report", "-i", str(inp), "-o", str(tmp_path / "report")]) == 0
    warned = capsys.readouterr().err
    assert "story: " in warned and "pins.toml:" in warned and "remote or tag is missing" in warned
    assert not (tmp_path / "report" / STORY_FILE).exists()
    assert "Not computed: story: " in (tmp_path / "report" / "index.html").read_text()


def test_a_story_of_another_format_is_refused_by_its_path():
    from toolkit.records.codec import RecordError

    with pytest.raises(RecordError, match=r"^\$\.format: unsupported format 2 \(expected 1\)$"):
        decode_story(json.dumps({"format": 2}))
    with pytest.raises(RecordError, match=r"\$\.releases\[0\]\.cells\[0\]\.status"):
        decode_story(
            json.dumps(
                {
                    "format": 1,
                    "project": "vllm",
                    "capabilities": [],
                    "switch": {"release": None, "engine": None, "sentence": ""},
                    "releases": [
                        {"version": "1.0", "engine": None, "summary": "", "cells": [{"capability": "a", "status": "x"}]}
                    ],
                }
            )
        )


def test_a_retirement_only_evidence_json_records_and_a_contract_no_build_meets(tmp_path, capsys):
    from toolkit.records import evidence as record

    root = new_project(tmp_path)
    release(root, "1.0", ALL)
    release(root, "2.0", ["pd-disagg/a", "pd-disagg/b"])  # kv-routing dropped by the rebase onto 2.0
    kv = name_of("kv-routing")
    signals = record.Signals(conformance=record.ConformanceRef("vllm-2.0-against-1.0.json", "stock 2.0", "1.0"))
    evidence = record.Evidence(
        project="vllm",
        old=record.Side(version="1.0"),
        new=record.Side(version="2.0"),
        patches={kv: record.PatchEntry(outcome=Outcome.RETIRED, upstream_signals=["conformance"], evidence=signals)},
        dropped=[record.Dropped(name=kv, reason=Outcome.RETIRED, feature="kv-routing")],
    )
    (root / "patches" / "vllm-2.0" / "evidence.json").write_text(record.encode_evidence(evidence))
    release(root, "3.0", [], {f: ("3.0" if f != "kv-routing" else "2.0", "stock has it") for f in ALL})
    contract(root, "3.0", "stock", {"kv-routing": "load-figures"})
    story = story_of(root, capsys)
    cell = cells(story, "2.0")["kv-routing"]
    assert (cell["status"], cell["since"], cell["patches"]) == ("retired", "2.0", [kv])
    assert cell["evidence"] == ["vllm-2.0-against-1.0.json"]
    assert cell["note"] == "vllm-2.0-against-1.0.json (stock 2.0 against 1.0); upstream signals: conformance"
    # 3.0: kv-routing retired, but no build meets its contract there: no verdict, and the cell says why
    assert story["releases"][-1]["engine"] is None
    cell = cells(story, "3.0")["kv-routing"]
    assert cell["status"] == "retired" and cell["note"].startswith("at 3.0: no build meets its contract: stock vLLM")
    assert "vllm-3.0-against-1.0.json" in cell["evidence"]
    switch = story["switch"]
    assert switch["release"] is None and "needs" not in switch
    assert "the newest pin, 3.0, has no verdict (empty series, but kv-routing retired without" in switch["sentence"]


def test_a_retired_patch_kept_in_later_retired_directories_is_listed_once(tmp_path, capsys):
    """`vpatch retire` marks the patch in the release before (Retired-Since in its own series), copies it to
    the retiring release's retired/, and a later rebase keeps the copy in its own retired/: three directories
    record one retirement, and the cell names the patch once at every release."""
    root = new_project(tmp_path)
    release(root, "1.0", ALL)
    kv = name_of("kv-routing")
    marked = mail("kv-routing", "Retired-Since: 2.0", "Retired-Evidence: stock has it (vllm-2.0-against-1.0.json)")
    (root / "patches" / "vllm-1.0" / kv).write_text(marked)
    retired = {"kv-routing": ("2.0", "stock has it (vllm-2.0-against-1.0.json)")}
    release(root, "2.0", ["pd-disagg/a", "pd-disagg/b"], retired)
    release(root, "3.0", ["pd-disagg/a", "pd-disagg/b"], retired)
    story = story_of(root, capsys)
    for version in ("2.0", "3.0"):
        cell = cells(story, version)["kv-routing"]
        assert (cell["status"], cell["since"], cell["patches"]) == ("retired", "2.0", [kv]), (version, cell)
    assert cells(story, "1.0")["kv-routing"]["status"] == "carried"
