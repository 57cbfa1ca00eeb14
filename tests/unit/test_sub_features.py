"""Sub-features (`Feature: PARENT/SUB`, toolkit/features.py): declared in pins.toml beside their parent,
checked by `vpatch check`, added and listed by `vpatch feature`, grouped under the parent by status, the
verdict and the report, retired on their own patch's evidence while the parent's contract still judges the
parent, accepted by `vpatch import --feature`. Synthetic vllm 1.0/1.1 projects, real git."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.harness import DIFF_AUTHORSHIP, commit_in, module_text
from tests.unit.importer.test_import import base_and_fork, diff_ruN, parsed, run
from tests.unit.report.test_report import make_input, run_report, tables
from toolkit.features import describe, grouped, name_problem, parent_of, sub_of, undeclared
from toolkit.records.contract import BuildSpec, ConfigRun, ContractResults, ItemResult, encode_contract
from toolkit.records.status import Status

SUBS = ("failed-loads", "nixl")
PD_STORAGE_ITEMS = ("decode-equals-aggregated", "no-leaks", "failure-semantics")


def declare(ws, capsys, *subs: str) -> None:
    for sub in subs:
        assert run(ws, capsys, "feature", "add", f"pd-disagg/{sub}", "--description", f"the {sub} part")[0] == 0


def pd_series(ws, capsys, *subs: str, version: str = "1.0") -> list[str]:
    """`version`'s series: one patch per sub-feature of pd-disagg (Feature: pd-disagg/SUB), exported."""
    ws.write_series(version, {})
    assert ws.run("apply", version) == 0
    for number, sub in enumerate(subs):
        commit_in(
            ws.checkout(version),
            {f"vllm/core/part_{number}.py": module_text(f"part_{number}")},
            subject=f"[V1][P/D] the {sub} part",
            headers=f"Upstream-Status: Pending\nFeature: pd-disagg/{sub}",
        )
    assert ws.run("export", version) == 0
    capsys.readouterr()
    return [n for n in (ws.series_dir(version) / "series").read_text().split() if n.endswith(".patch")]


def test_names_parents_and_grouping():
    assert (parent_of("pd-disagg/nixl"), sub_of("pd-disagg/nixl")) == ("pd-disagg", "nixl")
    assert (parent_of("kv-routing"), sub_of("kv-routing")) == ("kv-routing", None)
    assert name_problem("pd-disagg/failed-loads") is None
    assert "one level of sub-feature only" in (name_problem("a/b/c") or "")
    assert "lowercase" in (name_problem("PD/x") or "") and "lowercase" in (name_problem("pd/") or "")
    names = ["pd-disagg/nixl", "kv-routing", "pd-disagg/failed-loads", "pd-disagg/nixl"]
    assert grouped(names) == {"kv-routing": [], "pd-disagg": ["failed-loads", "nixl"]}
    assert describe(names) == ["kv-routing", "pd-disagg (failed-loads, nixl)"]
    declared = ["kv-routing", "pd-disagg", "pd-disagg/nixl"]
    assert undeclared("pd-disagg/nixl", declared) is None
    assert undeclared("pd-disagg/failed", declared) == (
        "unknown sub-feature 'pd-disagg/failed' of pd-disagg (declared: nixl; "
        "declare it with `vpatch feature add pd-disagg/failed`)"
    )
    assert (
        undeclared("warp/x", declared)
        == "unknown feature 'warp/x' (declared in pins.toml [features]: kv-routing, pd-disagg)"
    )


def test_feature_add_and_list_sub_features(pinned, capsys):
    ws = pinned
    pins = ws.patches / "pins.toml"
    before = pins.read_bytes()
    # the parent must be declared; bad names and versions are refused; pins.toml stays as it was
    code, _, err = run(ws, capsys, "feature", "add", "warp/drive")
    assert code == 1 and err == [
        "vpatch: error: project/patches/pins.toml: sub-feature 'warp/drive': declare its parent first "
        "(`vpatch feature add warp`)"
    ]
    code, _, err = run(ws, capsys, "feature", "add", "pd-disagg/a/b")
    assert code == 1 and len(err) == 1 and "one level of sub-feature only" in err[0]
    assert run(ws, capsys, "feature", "add", "pd-disagg/x", "--native-since", "soon")[0] == 1
    assert pins.read_bytes() == before
    code, data, _ = run(
        ws,
        capsys,
        "feature",
        "add",
        "pd-disagg/failed-loads",
        "--description",
        "a failed load fails one request",
        "--native-since",
        "1.1",
        "--upstream",
        "vllm-project/vllm#19330",
        "--json",
    )
    assert code == 0 and data["parent"] == "pd-disagg"
    declare(ws, capsys, "nixl")
    table = tomllib.loads(pins.read_text())["features"]
    assert table["pd-disagg/failed-loads"] == {
        "description": "a failed load fails one request",
        "native-since": "1.1",
        "upstream": "vllm-project/vllm#19330",
    }
    assert table["pd-disagg/nixl"] == "the nixl part"
    assert '"pd-disagg/failed-loads" = ' in pins.read_text()  # a quoted key of [features]
    code, data, _ = run(ws, capsys, "feature", "list", "--json")
    assert code == 0 and [f["feature"] for f in data] == ["kv-routing", "pd-disagg"]
    subs = data[1]["sub_features"]
    assert [s["feature"] for s in subs] == ["pd-disagg/failed-loads", "pd-disagg/nixl"]
    assert subs[0]["native_since"] == "1.1" and subs[0]["parent"] == "pd-disagg"
    assert data[0]["sub_features"] == []
    capsys.readouterr()
    assert ws.run("feature", "list") == 0
    out = capsys.readouterr().out
    assert "2 feature(s), 2 sub-feature(s)" in out
    assert out.index("pd-disagg ") < out.index("/failed-loads") < out.index("/nixl")


@pytest.mark.parametrize(
    "entry,message",
    [
        ('"warp/drive" = "x"', ":{line}: sub-feature 'warp/drive': its parent feature 'warp' is not declared"),
        ('"pd-disagg/a/b" = "x"', ":{line}: feature name 'pd-disagg/a/b': one level of sub-feature only"),
        ('"pd-disagg/x" = { upstream = 5 }', ": [features] must map feature names to a description"),
    ],
)
def test_pins_refuse_bad_sub_features(pinned, capsys, entry, message):
    ws = pinned
    pins = ws.patches / "pins.toml"
    text = pins.read_text()
    lines = text.split("\n")
    at = lines.index("[features]") + 3  # after the two default features
    pins.write_text("\n".join([*lines[:at], entry, *lines[at:]]))
    message = message.format(line=at + 1)  # the line the entry is on
    code, _, err = run(ws, capsys, "feature", "list")
    assert code == 1 and len(err) == 1
    assert err[0].startswith("vpatch: error: project/patches/pins.toml") and message in err[0], err[0]


def test_check_names_the_patch_of_an_undeclared_sub_feature(pinned, capsys):
    ws = pinned
    names = pd_series(ws, capsys, "failed-loads")
    capsys.readouterr()
    assert ws.run("check", "1.0", "--no-wheels") == 1
    printed = capsys.readouterr()
    lines = [e for e in (printed.out + printed.err).splitlines() if "unknown sub-feature" in e]
    assert len(lines) == 1, printed
    line = lines[0]
    assert re.fullmatch(
        rf"project/patches/vllm-1\.0/{re.escape(names[0])}:\d+: unknown sub-feature 'pd-disagg/failed-loads' of "
        r"pd-disagg \(declared: none; declare it with `vpatch feature add pd-disagg/failed-loads`\)",
        line,
    ), line
    declare(ws, capsys, "failed-loads")
    assert ws.run("check", "1.0", "--no-wheels") == 0


def test_status_and_verdict_group_sub_features_under_the_parent(pinned, capsys):
    ws = pinned
    declare(ws, capsys, *SUBS)
    names = pd_series(ws, capsys, *SUBS)
    code, data, _ = run(ws, capsys, "status", "1.0", "--json")
    assert code == 0
    row = data["versions"][0]
    assert row["features"] == {"pd-disagg": ["failed-loads", "nixl"]}
    assert [(p["name"], p["feature"], p["parent_feature"]) for p in row["patches"]] == [
        (names[0], "pd-disagg/failed-loads", "pd-disagg"),
        (names[1], "pd-disagg/nixl", "pd-disagg"),
    ]
    assert row["verdict"]["summary"] == "dynamo-base needed (2 active patches: pd-disagg (failed-loads, nixl))"
    assert row["verdict"]["features"] == ["pd-disagg (failed-loads, nixl)"]


def next_release(ws) -> None:
    """Release 1.1 pinned, 1.0's series carried to it unchanged, and an empty CHANGELOG for retire to write to."""
    ws.pin_carrying("1.1")
    (ws.root / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n")


def test_a_sub_feature_retires_on_its_own_evidence_and_the_parent_contract_still_judges(pinned, capsys):
    ws = pinned
    declare(ws, capsys, *SUBS)
    names = pd_series(ws, capsys, *SUBS)
    next_release(ws)
    # no evidence at all: refused, as for any patch
    code, _, err = run(ws, capsys, "retire", names[0], "--since", "1.1")
    assert code == 1 and len(err) == 1 and "no evidence that vLLM 1.1 carries" in err[0]
    evidence = {
        "format": 1,
        "patches": {names[0]: {"outcome": "clean", "upstream_signals": ["reverse_applies"], "kept": True}},
    }
    (ws.series_dir("1.1") / "evidence.json").write_text(json.dumps(evidence))
    # a top-level pd-disagg patch would need the pd-disagg contract; its part goes on the rebase evidence
    code, data, _ = run(ws, capsys, "retire", names[0], "--since", "1.1", "--json")
    assert code == 0, data
    assert data["feature"] == "pd-disagg/failed-loads" and data["evidence"] == ["rebase onto 1.1: reverse_applies"]
    assert (ws.series_dir("1.1") / "series").read_text().split()[-1] == names[1]
    assert f"- `{names[0]}` (pd-disagg/failed-loads) retired since vLLM 1.1" in (ws.root / "CHANGELOG.md").read_text()
    code, data, _ = run(ws, capsys, "status", "1.1", "--json")
    assert data["versions"][0]["verdict"]["summary"] == "dynamo-base needed (1 active patch: pd-disagg (nixl))"
    # the last part retired by hand: the series is empty, but without a passing pd-disagg contract on stock
    # 1.1 the parent is not provided, so stock is not the default
    assert run(ws, capsys, "retire", names[1], "--since", "1.1", "--force", "--reason", "upstream NIXL")[0] == 0
    code, data, _ = run(ws, capsys, "status", "1.1", "--json")
    verdict = data["versions"][0]["verdict"]
    assert verdict["engine"] is None
    assert verdict["summary"].startswith("empty series, but pd-disagg retired without a passing contract")


def test_import_accepts_a_declared_sub_feature(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, {"vllm/core/block_pool.py": module_text("block_pool") + "PD = 1\n"})
    patch = str(diff_ruN(tmp_path))
    args = ["import", patch, "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "pd-disagg/failed-loads", "--json"]
    code, _, err = run(ws, capsys, *args)
    assert code == 1 and len(err) == 1 and "unknown feature 'pd-disagg/failed-loads'" in err[0]
    declare(ws, capsys, "failed-loads")
    code, data, _ = run(ws, capsys, *args)
    assert code == 0
    [made] = data["patches"]
    assert made["feature"] == "pd-disagg/failed-loads"
    assert parsed(ws, made["name"]).feature == "pd-disagg/failed-loads"
    assert "/" not in made["name"]  # the sub-feature's slash never reaches a file name
    assert ws.run("check", "1.0", "--no-wheels") == 0


def test_report_lists_sub_features_under_their_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root, inp = make_input(tmp_path)
    summary = json.loads((inp / "ci-summary.json").read_text())
    summary["features"]["pd-disagg/nixl"] = {
        "description": "NIXL on host memory",
        "native_since": None,
        "upstream": "vllm-project/vllm#24690",
        "parent": "pd-disagg",
    }
    summary["features"]["kv-routing/load-metrics"] = {"description": "load figures", "parent": "kv-routing"}
    (inp / "ci-summary.json").write_text(json.dumps(summary))
    out = tmp_path / "report"
    assert run_report(root, inp, out) == 0
    rows = tables((out / "index.html").read_text(encoding="utf-8"))["features"][0][1:]
    assert [r[0] for r in rows] == ["kv-routing", "↳ kv-routing/load-metrics", "pd-disagg", "↳ pd-disagg/nixl"]
    assert rows[3][1:] == ["NIXL on host memory (upstream: vllm-project/vllm#24690)", "not yet upstream"]
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "### Sub-features" in md
    assert "| pd-disagg | nixl: NIXL on host memory | not yet | vllm-project/vllm#24690 |" in md
    assert md.index("| kv-routing | load-metrics") < md.index("| pd-disagg | nixl")


def test_check_warns_about_a_patch_over_the_size_limit(pinned, capsys):
    ws = pinned
    declare(ws, capsys, "failed-loads")
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    for name, lines in (("small", 390), ("big", 420)):
        commit_in(
            ws.checkout("1.0"),
            {f"vllm/core/{name}.py": module_text(name, lines)},
            subject=f"[V1][P/D] the {name} part",
            headers="Upstream-Status: Pending\nFeature: pd-disagg/failed-loads",
        )
    assert ws.run("export", "1.0") == 0
    code, data, _ = run(ws, capsys, "check", "1.0", "--no-wheels", "--json")
    assert code == 0  # a warning, not a problem
    text = json.dumps(data)
    assert text.count("over 400): split it by capability") == 1
    assert re.search(r"0002-v1-p-d-the-big-part\.patch.*changes 4\d\d lines \(\+4\d\d -0, over 400\)", text)


def nixl_result(ws, kind: str, nixl: Status, detail: str = "seen") -> None:
    """A `vpatch conform 1.1 --tier engine --new-kind KIND` record: the shared-storage items not provided (stock has
    no dynamo-base transport), nixl-transport `nixl`."""
    wheels = ("dynamo_base_plugin-1.1-py3-none-any.whl",) if kind == "stock+plugin" else ()
    new = BuildSpec("1.1", kind, wheels)  # type: ignore[arg-type]
    items = [ItemResult("pd-disagg", i, Status.NOT_PROVIDED, "no shared storage") for i in PD_STORAGE_ITEMS]
    runs = [
        ConfigRun("new-engine-pd-shared-storage", "new", new, None, items),
        ConfigRun("new-engine-pd-nixl", "new", new, None, [ItemResult("pd-disagg", "nixl-transport", nixl, detail)]),
    ]
    results = ContractResults("vllm", new, BuildSpec("1.1", "stock"), ["pd-disagg"], "kv-watch", runs, ok=False)
    suffix = "+plugin" if kind == "stock+plugin" else ""
    path = ws.patches / "conformance" / f"vllm-1.1{suffix}-against-1.1.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(encode_contract(results))


def test_the_nixl_part_retires_on_nixl_transport_passing_on_stock_alone(pinned, capsys):
    """pd-disagg/nixl is judged by its own contract item (SUB_FEATURE_ITEMS): refused without a stock result that
    judges nixl-transport, or with one where it does not pass; a plugin's pass is not stock's; passing on stock,
    the patch retires although the parent's other items are not provided."""
    ws = pinned
    declare(ws, capsys, *SUBS)
    names = pd_series(ws, capsys, *SUBS)
    next_release(ws)
    before = ws.snapshot()
    code, _, err = run(ws, capsys, "retire", names[1], "--since", "1.1")
    assert code == 1 and len(err) == 1 and "no stock pd-disagg result judges nixl-transport for vLLM 1.1" in err[0]
    nixl_result(ws, "stock", Status.FAIL)
    nixl_result(ws, "stock+plugin", Status.PASS)
    code, _, err = run(ws, capsys, "retire", names[1], "--since", "1.1")
    assert code == 1 and "stock vLLM 1.1 does not meet pd-disagg/nixl-transport" in err[0], err
    assert "vllm-1.1-against-1.1.json" in err[0]
    nixl_result(ws, "stock", Status.PASS)
    code, data, _ = run(ws, capsys, "retire", names[1], "--since", "1.1", "--json")
    assert code == 0, data
    assert data["evidence"] == [
        "contracts: pd-disagg/nixl-transport passes on stock vLLM 1.1: seen (vllm-1.1-against-1.1.json)"
    ]
    assert names[1] not in (ws.series_dir("1.1") / "series").read_text()
    assert (ws.series_dir("1.1") / "retired" / names[1]).is_file() and ws.snapshot() != before


def told_line(steps: str) -> str:
    """The nixl-transport item's line as the engine tier writes it, telling its scheduler scenarios."""
    from toolkit.contracts.engine_stock import told
    from toolkit.records.contract import TOLD

    held = {"held_at_start": 13, "has_requests_at_start": True, "steps": 1, "left_after": 0 if steps == "pass" else 13}
    scenarios = [
        told("nixl-steps-while-held", steps, held),
        told("nixl-abort-while-loading", "fail", {"problems": ["x; y"]}),
    ]
    return f"upstream NixlConnector: nixl-sabotage-corrupted-kv failed ({TOLD}{'; '.join(scenarios)})"


def test_stepping_while_held_retires_on_the_scenario_the_stock_nixl_run_tells(pinned, capsys):
    """pd-disagg/stepping-while-held is judged by the NIXL run's nixl-steps-while-held (SUB_FEATURE_ITEMS), which
    the nixl-transport item's line tells without judging: it retires when stock tells it passing, even with
    nixl-transport itself failing and the parent contract not met; a failing one, or a plugin's, is refused."""
    ws = pinned
    subs = ("failed-loads", "stepping-while-held")
    declare(ws, capsys, *subs)
    names = pd_series(ws, capsys, *subs)
    next_release(ws)
    code, _, err = run(ws, capsys, "retire", names[1], "--since", "1.1")
    assert code == 1 and "no stock pd-disagg result judges nixl-steps-while-held for vLLM 1.1" in err[0], err
    nixl_result(ws, "stock", Status.FAIL, told_line("fail"))
    nixl_result(ws, "stock+plugin", Status.FAIL, told_line("pass"))
    code, _, err = run(ws, capsys, "retire", names[1], "--since", "1.1")
    assert code == 1 and "stock vLLM 1.1 does not meet pd-disagg/nixl-steps-while-held: " in err[0], err
    assert "13 left), told in the nixl-transport item's line (vllm-1.1-against-1.1.json)" in err[0]
    nixl_result(ws, "stock", Status.FAIL, told_line("pass"))
    code, data, _ = run(ws, capsys, "retire", names[1], "--since", "1.1", "--json")
    assert code == 0, data
    assert data["evidence"] == [
        "contracts: pd-disagg/nixl-steps-while-held passes on stock vLLM 1.1: nixl-steps-while-held: pass (13 "
        "blocks held after the reads, has_requests True, 1 steps, 0 left), told in the nixl-transport item's line "
        "(vllm-1.1-against-1.1.json)"
    ]
    assert not data["forced"]
    kept = (ws.series_dir("1.1") / "retired" / names[1]).read_text()
    assert "\nRetired-Evidence: contracts: pd-disagg/nixl-steps-while-held passes" in kept


def test_the_committed_022_stock_run_tells_stepping_while_held_passing():
    """The evidence 0011's retirement rests on, read as the gate reads it."""
    from tests.harness.paths import REPO_ROOT
    from toolkit.lifecycle.upstream import item_finding

    path = REPO_ROOT / "patches" / "conformance" / "vllm-0.22.1-against-0.22.1.json"
    passes, line, file = item_finding([path], "0.22.1", "pd-disagg", "nixl-steps-while-held") or (None, "", "")
    assert (passes, file) == (True, path.name)
    assert line.startswith("nixl-steps-while-held: pass (13 blocks held after the reads, has_requests True")
    assert item_finding([path], "0.22.1", "pd-disagg", "nixl-abort-while-loading") is not None
    assert item_finding([path], "0.22.1", "pd-disagg", "nixl-no-such-scenario") is None
