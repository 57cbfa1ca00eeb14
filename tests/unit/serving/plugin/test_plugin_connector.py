"""The plugin's SharedStorageConnectorV1, the parts that need no engine (dynamo_base_plugin/transfer.py: options,
transfer keys, the load plan, the manifest checks, the load and hold deadlines), and what the wheel ships of it.
The connector on real engines: tests/integration/test_plugin_pd_engine.py."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.options import load_options
from toolkit.plugin.build import build_plugin
from toolkit.project import Project
from toolkit.serving.plugin.dynamo_base_plugin import transfer
from toolkit.serving.plugin.dynamo_base_plugin.transfer import (
    FORMAT_VERSION,
    Deadlines,
    HoldSweeper,
    LoadError,
    LoadPlan,
    check_manifest,
    is_transfer_key,
    plan_load,
    read_options,
    remote_tokens,
    remove_transfer,
    transfer_key,
)

LAYOUT = [{"name": "model.layers.0.self_attn.attn", "dtype": "float32", "block_shape": [2, 1, 32, 4]}]


def test_options_default_to_0012s_and_carry_over_from_a_dynamo_base_config() -> None:
    options = read_options(None, "recompute")
    assert options["load_timeout_s"] == 60.0 and options["hold_timeout_s"] == 120.0
    assert options["storage_path"] is None and options["engine_id"] is None
    given = {"storage_path": "/mnt/kv", "engine_id": "p0", "load_timeout_s": 5, "hold_timeout_s": 7.5}
    assert read_options({**given, "on_load_failure": "recompute"}, "recompute") == {
        **given,
        "load_timeout_s": 5.0,
        "on_load_failure": "recompute",
    }


@pytest.mark.parametrize(
    ("extra", "policy", "message"),
    [
        ({"shared_storage_path": "/x"}, "fail", "unknown key(s) ['shared_storage_path']"),
        ({"load_timeout_s": 0}, "fail", "load_timeout_s must be a positive number"),
        ({"hold_timeout_s": "5"}, "fail", "hold_timeout_s must be a positive number"),
        ({"load_timeout_s": True}, "fail", "load_timeout_s must be a positive number"),
        ({"storage_path": ""}, "fail", "storage_path must be a non-empty string"),
        ({"on_load_failure": "retry"}, "fail", "on_load_failure must be one of ['recompute', 'fail']"),
        ({"on_load_failure": "recompute"}, "fail", "set KVTransferConfig.kv_load_failure_policy='recompute'"),
    ],
)
def test_bad_options_are_refused_in_one_line_naming_the_key(extra: dict, policy: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        read_options(extra, policy)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_transfer_keys_are_per_engine_and_request_and_validated_before_use_as_paths(tmp_path: Path) -> None:
    key = transfer_key("prefill-0", "7-abc")
    assert is_transfer_key(key) and key != transfer_key("prefill-1", "7-abc")
    for bad in ("../etc", "A" * 64, key[:-1], None, 64):
        assert not is_transfer_key(bad)
    victim = tmp_path / "keep"
    victim.mkdir()
    assert remove_transfer(str(tmp_path), "../keep") is False and victim.is_dir()


def test_the_last_prompt_token_is_always_computed_by_the_decode_engine() -> None:
    params = {"do_remote_prefill": True, "num_remote_tokens": 40}
    assert remote_tokens(params, 41) == 40
    assert remote_tokens(params, 40) == 39  # capped: the one-token step samples the first output token
    assert remote_tokens({"num_remote_tokens": 40}, 41) == 0  # not a remote prefill
    assert remote_tokens({"do_remote_prefill": True, "num_remote_tokens": "x"}, 41) == 0


def test_a_load_after_a_local_prefix_hit_fills_only_the_rest() -> None:
    blocks = [11, 12, 13, 14]
    assert plan_load(blocks, 87, 87, 32) == LoadPlan(0, [11, 12, 13], 87)
    assert plan_load(blocks, 87, 23, 32) == LoadPlan(2, [13], 87)  # 64 tokens were local hits
    with pytest.raises(ValueError, match="not block-aligned"):
        plan_load(blocks, 87, 30, 32)
    with pytest.raises(ValueError, match="need 3 blocks"):
        plan_load(blocks[:2], 87, 87, 32)


def _manifest(**changes: object) -> dict:
    manifest = {"format": FORMAT_VERSION, "num_tokens": 63, "token_ids": list(range(63)), "num_blocks": 2}
    return {**manifest, "layers": LAYOUT, **changes}


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"format": 2}, "format 2, expected 1"),
        ({"layers": [{**LAYOUT[0], "dtype": "bfloat16"}]}, "KV-cache layout"),
        ({"num_tokens": 40}, "holds 40 tokens, 63 needed"),
        ({"token_ids": [*range(62), 999]}, "computed for a different prompt"),
        ({"num_blocks": 1}, "holds 1 blocks"),
    ],
)
def test_a_transfer_for_another_prompt_or_layout_is_a_failed_load(changes: dict, why: str) -> None:
    plan = LoadPlan(0, [5, 6], 63)
    check_manifest("/kv/x", _manifest(), LAYOUT, list(range(63)), plan)  # the right one passes
    with pytest.raises(LoadError, match=r"^/kv/x: ") as caught:
        check_manifest("/kv/x", _manifest(**changes), LAYOUT, list(range(63)), plan)
    assert why in str(caught.value)


def test_deadlines_expire_once_each() -> None:
    now = [100.0]
    deadlines = Deadlines(clock=lambda: now[0])
    deadlines.add("a", 3)
    deadlines.add("b", 5)
    assert deadlines.expired() == [] and deadlines.next_due() == 103.0
    now[0] = 103.0
    assert deadlines.expired() == ["a"] and deadlines.expired() == [] and len(deadlines) == 1
    deadlines.discard("b")
    now[0] = 200.0
    assert deadlines.expired() == [] and deadlines.next_due() is None


def test_an_unread_transfer_is_removed_after_the_hold_timeout_without_a_caller(tmp_path: Path) -> None:
    warned: list[tuple[str, str]] = []
    sweeper = HoldSweeper(str(tmp_path), 0.3, lambda key, why: warned.append((key, why)))
    read, unread = transfer_key("p", "read"), transfer_key("p", "unread")
    for key in (read, unread):
        (tmp_path / key).mkdir()
        (tmp_path / key / transfer.DATA).write_bytes(b"kv")
        sweeper.hold(key)
    remove_transfer(str(tmp_path), read)  # a decode engine consumed this one
    assert (tmp_path / unread).is_dir()
    deadline = time.monotonic() + 10
    # the sweeper removes the transfer, then warns: wait for both (a loaded machine runs them far apart)
    while ((tmp_path / unread).exists() or not warned) and time.monotonic() < deadline:
        time.sleep(0.05)
    sweeper.close()
    assert list(tmp_path.iterdir()) == []
    assert warned == [(unread, "not read within hold_timeout_s=0.3; removed")]  # the consumed one: no warning


def test_the_wheel_ships_the_connector_and_its_provenance_names_it(tmp_path: Path) -> None:
    repo = REPO_ROOT
    project = Project.load(load_options({"root": str(repo), "cache_dir": str(tmp_path / "cache")}))
    built = build_plugin(project, None, tmp_path / "dist")
    with zipfile.ZipFile(built.path) as wheel:
        names = wheel.namelist()
        info = json.loads(wheel.read(next(n for n in names if n.endswith("/dynamo_base_plugin.json"))))
        connector = wheel.read("dynamo_base_plugin/shared_storage.py").decode()
    assert {"dynamo_base_plugin/shared_storage.py", "dynamo_base_plugin/transfer.py"} <= set(names)
    assert "class SharedStorageConnectorV1(KVConnectorBase_V1)" in connector
    entry = info["kv_connectors"]["SharedStorageConnectorV1"]
    assert entry["kv_connector_module_path"] == "dynamo_base_plugin.shared_storage"
    assert info["sources"][entry["module"]] and "pd-disagg" in info["delivers"]
    assert "SharedStorageConnectorV1" not in json.dumps(info["entry_points"])  # loaded only when configured
