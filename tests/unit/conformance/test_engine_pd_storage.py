"""engine_pd_storage.py without engines: the engines' configs for the plugin and the series, the judge of a run's
record (a record that shows each fault fails the check for it), whether a venv's vLLM registers the connector,
and pd_drive.py's connector config and stats switch."""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_pd import pd_prompts
from toolkit.conformance.engine_pd_plugin import plugin_pd_items
from toolkit.conformance.engine_pd_storage import (
    FACTORY,
    HOLD_TIMEOUT,
    LOAD_TIMEOUT,
    PLUGIN,
    SERIES,
    engine_configs,
    in_tree,
    storage_checks,
)

PD_DRIVE = REPO_ROOT / "toolkit" / "serving" / "engine" / "pd_drive.py"


def _venv(tmp_path: Path, files: dict[str, str]) -> EngineEnv:
    for name, text in files.items():
        path = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return EngineEnv(tmp_path / "venv", "w.whl", (), 0.0, 0)


def _record(tmp_path: Path) -> dict[str, Any]:
    """A run's record as run_storage_pd writes it when everything behaves."""
    prompts = pd_prompts()
    agg = {n: [7, n.__len__(), 9] for n in prompts}
    logs = {}
    for role, text in {
        "aggregated": "",
        "prefill": "",
        "decode": "Request 3: remote KV load failed: no KV after 3 s (cancelled); computing its prompt here\n"
        "no transfer after load_timeout_s=3\n",
    }.items():
        logs[role] = str(tmp_path / f"{role}.log")
        Path(logs[role]).write_text(text, encoding="utf-8")
    free = {"aggregated": 2040, "prefill": 2040, "decode": 2040}
    return {
        "prompts": prompts,
        "aggregated": agg,
        "decode": copy.deepcopy(agg),
        "prefill_first": {n: t[:1] for n, t in agg.items()},
        "loaded": {n: len(p) - 1 for n, p in prompts.items()},
        "corruption": {"before": 60, "after": 71},
        "sabotage": {"tokens": [0, 0, 0], "loaded": 63, "external_hits": None},
        "missing": {"outputs": agg["len64"], "cached_tokens": 0, "finish_reasons": "length", "seconds": 3.4},
        "truncated": {"outputs": agg["shared-b"], "cached_tokens": 0, "finish_reasons": "length", "seconds": 0.05},
        "orphan_key": "orphan",
        "orphan_left": False,
        "orphan_removed_after_s": HOLD_TIMEOUT + 0.3,
        "free": {"before": free, "after": dict(free)},
        "left_after_decode": [],
        "storage_at_end": [],
        "logs": logs,
    }


def _statuses(record: dict[str, Any], transport=SERIES) -> dict[str, str]:
    return {c.name: c.status for c in storage_checks(record, transport)}


def test_the_series_engines_name_the_connector_alone_and_have_no_load_failure_policy_field(tmp_path: Path) -> None:
    series = engine_configs(SERIES, tmp_path / "m", tmp_path / "s")
    assert "connector" not in series["aggregated"]  # the reference runs no connector at all
    for role in ("prefill", "decode"):
        assert series[role]["connector"] == "SharedStorageConnectorV1"
        assert "connector_module_path" not in series[role] and "kv_load_failure_policy" not in series[role]
    assert series["decode"]["extra_config"] == {"load_timeout_s": LOAD_TIMEOUT, "on_load_failure": "recompute"}
    assert series["prefill"]["extra_config"] == {"hold_timeout_s": HOLD_TIMEOUT, "engine_id": "prefill-0"}
    plugin = engine_configs(PLUGIN, tmp_path / "m", tmp_path / "s")
    assert plugin["decode"]["connector_module_path"] == "dynamo_base_plugin.shared_storage"
    assert (plugin["prefill"]["kv_load_failure_policy"], plugin["decode"]["kv_load_failure_policy"]) == (
        "fail",
        "recompute",
    )


def test_a_run_that_behaves_passes_every_check(tmp_path: Path) -> None:
    statuses = _statuses(_record(tmp_path))
    assert set(statuses.values()) == {"pass"} and len(statuses) == 7
    assert all(name.startswith("shared-storage-") for name in statuses)


@pytest.mark.parametrize(
    "fault,check",
    [
        (lambda r: r["decode"]["len33"].append(1), "shared-storage-decode-equals-aggregated"),
        (lambda r: r["loaded"].update(len33=0), "shared-storage-loaded-transfer"),
        (lambda r: r["loaded"].update(len65=32), "shared-storage-loaded-transfer"),
        (lambda r: r["sabotage"].update(tokens=r["aggregated"]["len64"]), "shared-storage-sabotage-corrupted-kv"),
        (lambda r: r["missing"].update(seconds=0.1), "shared-storage-missing-transfer"),
        (lambda r: r["missing"].update(cached_tokens=63), "shared-storage-missing-transfer"),
        (lambda r: r["truncated"].update(seconds=LOAD_TIMEOUT + 1), "shared-storage-truncated-transfer"),
        (lambda r: r.update(orphan_left=True, storage_at_end=["orphan"]), "shared-storage-unread-transfer"),
        (lambda r: r["free"]["after"].update(decode=2037), "shared-storage-no-leaks"),
        (lambda r: r.update(storage_at_end=[".abc-staging"]), "shared-storage-no-leaks"),
    ],
)
def test_each_fault_fails_its_own_check_only(tmp_path: Path, fault, check: str) -> None:
    record = _record(tmp_path)
    fault(record)
    failed = {name for name, status in _statuses(record).items() if status == "fail"}
    assert failed == {check}


def test_the_timeout_line_is_each_transports_own(tmp_path: Path) -> None:
    record = _record(tmp_path)
    Path(record["logs"]["decode"]).write_text("no transfer after load_timeout_s=3\n", encoding="utf-8")
    assert _statuses(record, SERIES)["shared-storage-missing-transfer"] == "fail"
    assert _statuses(record, PLUGIN)["shared-storage-missing-transfer"] == "pass"
    check = next(c for c in storage_checks(record, SERIES) if c.name == "shared-storage-missing-transfer")
    assert "'no KV after 3 s'" in check.details["why"] and "(series: in tree, by name)" in check.details["why"]


def test_the_plugin_items_group_the_checks(tmp_path: Path) -> None:
    record = _record(tmp_path)
    assert [(i.item, i.status.value) for i in plugin_pd_items(record)] == [
        ("decode-equals-aggregated", "pass"),
        ("no-leaks", "pass"),
        ("failure-semantics", "pass"),
    ]
    record["loaded"]["len31"] = 0
    item = plugin_pd_items(record)[0]
    assert item.status.value == "fail" and item.detail == "len31: loaded 0 tokens, not 30"


def test_in_tree_reads_the_venvs_connector_factory(tmp_path: Path) -> None:
    registered = 'KVConnectorFactory.register_connector(\n    "SharedStorageConnectorV1",\n    "m",\n    "C",\n)\n'
    assert in_tree(_venv(tmp_path / "a", {FACTORY: registered}))
    other = registered.replace("SharedStorageConnectorV1", "SharedStorageConnector")
    assert not in_tree(_venv(tmp_path / "b", {FACTORY: other}))
    assert not in_tree(_venv(tmp_path / "c", {}))


@pytest.fixture
def pd_drive(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The driver module, imported with its environment defaults kept out of this process's environment."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    spec = importlib.util.spec_from_file_location("pd_drive_under_test", PD_DRIVE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_driver_gives_the_module_path_and_policy_only_when_asked(tmp_path: Path, pd_drive: ModuleType) -> None:
    # the config as the driver writes it (kv_transfer_config then drops a field the venv's vLLM lacks)
    series = engine_configs(SERIES, tmp_path / "m", tmp_path / "s")
    assert pd_drive._kv_transfer_config(series["aggregated"]) is None
    assert pd_drive._kv_transfer_config(series["decode"]) == {
        "kv_connector": "SharedStorageConnectorV1",
        "kv_role": "kv_consumer",
        "kv_connector_extra_config": {
            "storage_path": str(tmp_path / "s"),
            "load_timeout_s": LOAD_TIMEOUT,
            "on_load_failure": "recompute",
        },
    }
    plugin = pd_drive._kv_transfer_config(engine_configs(PLUGIN, tmp_path / "m", tmp_path / "s")["prefill"])
    assert plugin["kv_connector_module_path"] == "dynamo_base_plugin.shared_storage"
    assert plugin["kv_load_failure_policy"] == "fail" and plugin["kv_role"] == "kv_producer"
    assert pd_drive.stats_args(None) == {}  # no connector: stats stay on (vllm is not even imported)


def test_the_tier_shows_each_checks_own_line_and_keeps_the_details(tmp_path: Path) -> None:
    from toolkit.conformance.engine_tier_pd import tier_check

    record = _record(tmp_path)
    record.update(orphan_left=True, storage_at_end=["orphan"])
    results = {r.name: r for r in (tier_check("engine-pd", c, {}) for c in storage_checks(record, SERIES))}
    unread = results["engine-pd-shared-storage-unread-transfer"]
    assert unread.status == "fail" and unread.detail.startswith("SharedStorageConnectorV1 (series: in tree, by name)")
    assert "still in the storage directory" in unread.detail and '"all"' in unread.diff
    loaded = results["engine-pd-shared-storage-loaded-transfer"]
    assert loaded.status == "pass" and "every prompt loaded n-1 tokens" in loaded.detail
    assert '"shared-b": 87' in loaded.diff
