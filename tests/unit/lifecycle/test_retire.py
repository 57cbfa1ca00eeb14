"""`vpatch retire`: evidence required, the patch leaves the later series, the record stays."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import DIFF_AUTHORSHIP, commit_in, module_text
from toolkit.model import parse_patch
from toolkit.records.contract import BuildSpec, ConfigRun, ContractResults, ItemResult, encode_contract
from toolkit.records.status import Status


def two_releases(ws, capsys):
    """1.0 with a two-patch series; 1.1 pinned with the same series, as a clean rebase would leave it."""
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(
        ws.checkout("1.0"),
        {"vllm/core/scheduler.py": module_text("scheduler") + "EVENTS = 1\n"},
        subject="[V1] kv events",
        headers="Upstream-Status: Pending\nFeature: kv-routing",
    )
    commit_in(
        ws.checkout("1.0"),
        {"vllm/core/block_pool.py": module_text("block_pool") + "PD = 1\n"},
        subject="[V1] pd",
        headers="Upstream-Status: Pending\nFeature: pd-disagg",
    )
    assert ws.run("export", "1.0") == 0
    ws.pin_carrying("1.1")
    (ws.root / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n### Added\n- things\n")
    capsys.readouterr()
    names = [n for n in (ws.series_dir("1.0") / "series").read_text().split() if n.endswith(".patch")]
    return names


def test_retire_refuses_without_evidence_and_changes_nothing(pinned, capsys):
    ws = pinned
    names = two_releases(ws, capsys)
    before = ws.snapshot()
    changelog = (ws.root / "CHANGELOG.md").read_text()
    assert ws.run("retire", names[0], "--since", "1.1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to retire" in err[0] and "no kv-routing contract results" in err[0]
    assert "--force --reason" in err[0]
    assert ws.snapshot() == before and (ws.root / "CHANGELOG.md").read_text() == changelog
    assert ws.run("retire", names[0], "--since", "1.1", "--force") == 1  # --force alone is not enough


def contract_file(ws, load: Status) -> Path:
    """A `vpatch conform 1.1 --against 1.0` result: kv-routing passes but for `load-figures`."""
    new, old = BuildSpec("1.1", "stock"), BuildSpec("1.0", "dynamo-base")
    items = [ItemResult("kv-routing", i, Status.PASS) for i in ("cached-prefixes", "overlap")]
    items.append(ItemResult("kv-routing", "load-figures", load, "stock 1.1 publishes no load metrics"))
    runs = [ConfigRun("new-bind-builtin", "new", new, None, items)]
    results = ContractResults("vllm", new, old, ["kv-routing"], "kv-watch", runs, ok=load == Status.PASS)
    path = ws.patches / "conformance" / "vllm-1.1-against-1.0.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(encode_contract(results))
    return path


def test_retire_is_gated_by_the_feature_contract(pinned, capsys):
    ws = pinned
    names = two_releases(ws, capsys)
    evidence = {
        "format": 1,
        "patches": {
            names[0]: {"outcome": "clean", "upstream_signals": ["reverse_applies", "patch_id_match"], "kept": True}
        },
    }
    (ws.series_dir("1.1") / "evidence.json").write_text(json.dumps(evidence))
    # rebase signals alone are supporting evidence, not enough for a feature with a contract
    assert ws.run("retire", names[0], "--since", "1.1") == 1
    assert "no kv-routing contract results for vLLM 1.1" in capsys.readouterr().err
    contract_file(ws, Status.NOT_PROVIDED)
    before = ws.snapshot()
    assert ws.run("retire", names[0], "--since", "1.1") == 1
    err = capsys.readouterr().err.strip()
    assert "does not meet the kv-routing contract: load-figures (not provided in new-bind-builtin)" in err
    assert ws.snapshot() == before
    assert ws.run("status", "1.1", "--json") == 0
    verdict = json.loads(capsys.readouterr().out)["versions"][0]["verdict"]
    # the headline says the verdict; what stock lacks is the feature's line and `lacks`, in a deployment's terms
    assert verdict["summary"] == "dynamo-base needed (2 active patches: kv-routing, pd-disagg)"
    kv = next(f for f in verdict["feature_verdicts"] if f["feature"] == "kv-routing")
    assert kv["summary"] == "patches 0001 (stock vLLM 1.1 lacks load-figures)"
    assert verdict["lacks"] == {"kv-routing": ["load-figures (not provided)"]}
    contract_file(ws, Status.PASS)
    assert ws.run("retire", names[0], "--since", "1.1", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["evidence"] == [
        "contracts: every kv-routing item passes on vLLM 1.1 (vllm-1.1-against-1.0.json)",
        "rebase onto 1.1: reverse_applies, patch_id_match",
    ]
    assert result["forced"] is False
    # gone from 1.1's series, kept (with the record) in retired/
    assert (ws.series_dir("1.1") / "series").read_text().split()[-1] == names[1]
    assert not (ws.series_dir("1.1") / names[0]).exists()
    retired = parse_patch(ws.series_dir("1.1") / "retired" / names[0])
    assert retired.header("Retired-Since") == "1.1"
    # the last series that carries it says so too, and still checks clean (the headers re-export identically)
    old = parse_patch(ws.series_dir("1.0") / names[0])
    assert old.header("Retired-Since") == "1.1" and "patch_id_match" in old.header("Retired-Evidence")
    assert old.header("Patch-File") == names[0]
    assert ws.run("check", "1.0", "--no-wheels") == 0
    assert ws.run("check", "1.1", "--no-wheels") == 0
    changelog = (ws.root / "CHANGELOG.md").read_text()
    assert f"### Retired\n- `{names[0]}` (kv-routing) retired since vLLM 1.1" in changelog
    assert changelog.index("### Retired") > changelog.index("## [Unreleased]")
    # retire the other one by hand (forced): 1.1's series is empty and the verdict switches to stock
    capsys.readouterr()
    assert ws.run("retire", names[1], "--since", "1.1", "--force", "--reason", "upstream NIXL connector") == 0
    capsys.readouterr()
    assert ws.run("status", "1.1", "--json") == 0
    verdict = json.loads(capsys.readouterr().out)["versions"][0]["verdict"]
    assert verdict["engine"] == "stock" and "recommended default" in verdict["summary"]
    changelog = (ws.root / "CHANGELOG.md").read_text()
    assert "forced: upstream NIXL connector; no pd-disagg contract results for vLLM 1.1" in changelog


def test_retire_with_a_changelog_that_is_not_utf8_changes_nothing(pinned, capsys):
    ws = pinned
    names = two_releases(ws, capsys)
    changelog = ws.root / "CHANGELOG.md"
    changelog.write_bytes(b"# Changelog\n\n## [Unreleased]\n- caf\xe9\n")
    before = ws.snapshot()
    assert ws.run("retire", names[0], "--since", "1.1", "--force", "--reason", "upstream has it") == 1
    assert capsys.readouterr().err.strip().splitlines() == ["vpatch: error: project/CHANGELOG.md:4: not valid UTF-8"]
    assert ws.snapshot() == before and changelog.read_bytes() == b"# Changelog\n\n## [Unreleased]\n- caf\xe9\n"


def test_retire_and_imports_at_once_lose_nothing(pinned, capsys, tmp_path):
    """A retire and two imports change 1.1's series together, each in its own process: all three land."""
    import subprocess
    import sys
    from pathlib import Path

    ws = pinned
    names = two_releases(ws, capsys)
    vpatch = [str(Path(sys.executable).with_name("vpatch")), "--root", str(ws.root), "--cache-dir", str(ws.cache)]
    vpatch += ["--index-url", ws.index.url]
    commands = [[*vpatch, "retire", names[0], "--since", "1.1", "--force", "--reason", "upstream has it"]]
    for number in range(2):
        diff = tmp_path / f"extra-{number}.diff"
        diff.write_text(f"--- /dev/null\n+++ b/vllm/extra_{number}.py\n@@ -0,0 +1,1 @@\n+VALUE = {number}\n")
        commands.append([*vpatch, "import", str(diff), "--version", "1.1", *DIFF_AUTHORSHIP, "--feature", "pd-disagg"])
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    series = [n for n in (ws.series_dir("1.1") / "series").read_text().split() if n.endswith(".patch")]
    assert names[0] not in series and names[1] in series, series
    imported = sorted(n.split("-", 1)[1] for n in series if "extra" in n)
    assert imported == ["pd-disagg-vllm-extra-0.patch", "pd-disagg-vllm-extra-1.patch"], series
    assert (ws.series_dir("1.1") / "retired" / names[0]).is_file()
    assert sorted(p.name for p in ws.series_dir("1.1").glob("*.patch")) == sorted(series)
    assert (ws.root / "CHANGELOG.md").read_text().count(f"`{names[0]}`") == 1


PD_ITEMS = ("decode-equals-aggregated", "no-leaks", "failure-semantics", "nixl-transport")


def pd_file(ws, name: str, runs: dict[str, dict[str, Status]], old: str = "1.0") -> None:
    """A stock 1.1 pd-disagg result (`runs`: run name -> item -> status), as `vpatch conform --save` writes it."""
    new = BuildSpec("1.1", "stock")
    config_runs = [
        ConfigRun(run, "new", new, None, [ItemResult("pd-disagg", i, s, f"{i} {s} in {run}") for i, s in items.items()])
        for run, items in runs.items()
    ]
    ok = all(s == Status.PASS for items in runs.values() for s in items.values())
    results = ContractResults("vllm", new, BuildSpec(old, "dynamo-base"), ["pd-disagg"], "-", config_runs, ok=ok)
    path = ws.patches / "conformance" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(encode_contract(results))


def test_what_stock_lacks_drops_an_item_another_stock_result_passes(pinned, capsys):
    """The cpu tier's result has no CPU P/D transport (every item not provided); the engine tier's, at the same
    release, passes nixl-transport. Stock lacks the three shared-storage items, not nixl-transport; the
    retirement still needs one result passing every item."""
    from toolkit.lifecycle.upstream import contract_findings

    ws = pinned
    names = two_releases(ws, capsys)
    cpu = "vllm-1.1-against-1.0.json"
    pd_file(ws, cpu, {"new-pd": dict.fromkeys(PD_ITEMS, Status.NOT_PROVIDED)})
    storage = dict.fromkeys(PD_ITEMS[:3], Status.NOT_PROVIDED)
    engine = "vllm-1.1-against-1.1.json"
    runs = {"new-engine-pd-shared-storage": storage, "new-engine-pd-nixl": {"nixl-transport": Status.PASS}}
    pd_file(ws, engine, runs, old="1.1")
    paths = sorted((ws.patches / "conformance").glob("*.json"))
    lacking = [f"{i} (not provided in new-pd)" for i in PD_ITEMS[:3]]
    assert contract_findings(paths, "1.1")["pd-disagg"] == (False, lacking, cpu)

    assert ws.run("status", "1.1", "--json") == 0
    verdict = json.loads(capsys.readouterr().out)["versions"][0]["verdict"]
    assert verdict["lacks"] == {"pd-disagg": [f"{i} (not provided)" for i in PD_ITEMS[:3]]}
    pd = next(f for f in verdict["feature_verdicts"] if f["feature"] == "pd-disagg")
    assert pd["summary"].endswith("(stock vLLM 1.1 lacks decode-equals-aggregated, no-leaks, failure-semantics)")
    assert pd["evidence"] == [cpu, engine]
    assert ws.run("retire", names[1], "--since", "1.1") == 1
    assert "does not meet the pd-disagg contract: decode-equals-aggregated (not provided in new-pd)" in (
        capsys.readouterr().err
    )

    # every item passes in some stock result, but no one result passes them all: nothing lacks, no retirement
    pd_file(ws, cpu, {"new-pd": {**dict.fromkeys(PD_ITEMS, Status.NOT_PROVIDED), "nixl-transport": Status.PASS}})
    storage = dict.fromkeys(PD_ITEMS[:3], Status.PASS)
    pd_file(
        ws,
        engine,
        {**runs, "new-engine-pd-shared-storage": storage, "new-engine-pd-nixl": {"nixl-transport": Status.FAIL}},
        old="1.1",
    )
    assert contract_findings(paths, "1.1")["pd-disagg"] == (False, [], cpu)
    assert ws.run("retire", names[1], "--since", "1.1") == 1
    assert f"does not meet the pd-disagg contract: no one result passes every item ({cpu})" in capsys.readouterr().err
