"""The shared-storage items when the plugin refuses its connector: not provided where its delivery table
(toolkit/plugin/delivers.toml) does not deliver the transport on that release, fail where it says it does; and
how the verdict's records read them."""

from __future__ import annotations

from toolkit.contracts.engine_stock import PD_ITEMS, SHARED_STORAGE, _refused
from toolkit.plugin.delivers import default_table
from toolkit.records.contract import BuildSpec, ConfigRun, ContractResults, ItemResult, PluginRef
from toolkit.records.status import Status
from toolkit.verdict_features import Evidence

REFUSAL = "kv_connector SharedStorageConnectorV1 (dynamo-base-plugin) needs the KV-connector API of vLLM 0.32.0 (x)"
PLUGIN = PluginRef("dynamo-base-plugin", "0.13.0+plugin.abc", "p.whl", "ab" * 32)


def build(version: str) -> BuildSpec:
    return BuildSpec(version, "stock+plugin", ("p.whl",), (PLUGIN,))


def test_a_release_before_the_tables_since_is_not_provided_with_the_refusal() -> None:
    since = default_table().at(SHARED_STORAGE, "0.32.0")[0].since
    items = _refused(build("0.13.0"), REFUSAL)
    assert [i.item for i in items] == list(PD_ITEMS)
    assert {i.status for i in items} == {Status.NOT_PROVIDED}
    detail = items[0].detail
    assert detail.startswith("dynamo-base-plugin 0.13.0+plugin.abc does not provide its shared-storage transport")
    assert f"dynamo_base_plugin.shared_storage:SharedStorageConnectorV1 from vLLM {since}" in detail
    assert detail.endswith(REFUSAL)


def test_a_refusal_where_the_table_delivers_fails() -> None:
    items = _refused(build("0.32.0"), REFUSAL)
    assert {i.status for i in items} == {Status.FAIL}
    assert "delivers.toml says dynamo_base_plugin.shared_storage:SharedStorageConnectorV1 delivers" in items[0].detail


def test_not_provided_items_are_lacking_by_that_word_and_a_passing_run_still_counts_somewhere() -> None:

    new = build("0.13.0")
    nixl = ConfigRun("new-engine-pd-nixl", "new", new, None, [ItemResult("pd-disagg", "nixl-transport", Status.PASS)])
    storage = ConfigRun("new-engine-pd-shared-storage", "new", new, None, _refused(new, REFUSAL))
    results = ContractResults("vllm", new, BuildSpec("0.13.0", "stock"), ["pd-disagg"], "c", [storage, nixl], ok=False)
    assert results.lacking("pd-disagg") == [
        f"{item} (not provided in new-engine-pd-shared-storage)" for item in PD_ITEMS
    ]
    evidence = Evidence("f.json", "stock+plugin", results, "pd-disagg")
    assert evidence.somewhere and not evidence.everywhere
