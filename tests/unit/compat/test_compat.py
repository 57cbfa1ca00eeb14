"""The dynamo-base -> stock configuration table and `vpatch config migrate` (fast: no vLLM needed)."""

from __future__ import annotations

import json
import re

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.cli import main
from toolkit.compat.deployment import migrate_deployment
from toolkit.compat.migrate import migrate
from toolkit.compat.table import TABLE_FILE, Surface, default_table, load_table
from toolkit.errors import VpatchError

REPO = REPO_ROOT
NIXL = {"kv_connector": "NixlConnectorV1", "kv_role": "kv_producer"}
SHARED = {"kv_connector": "SharedStorageConnectorV1", "kv_role": "kv_consumer"}


def with_extra(base: dict, **extra: object) -> dict:
    return {**base, "kv_connector_extra_config": extra}


# ------------------------------------------------------------------ the table covers what the patches read


def patch_text(name: str) -> str:
    return next((REPO / "patches").glob(name)).read_text(encoding="utf-8")


def test_every_kv_events_key_dynamo_base_defines_is_mapped():
    text = patch_text("vllm-0.8.5/0001-*.patch")
    body = text[text.index("+class KVEventsConfig") : text.index("+    _PUBLISHERS")]
    fields = set(re.findall(r"^\+    (\w+): ", body, re.M))
    assert fields >= {"enable_kv_cache_events", "endpoint", "enable_load_metrics"}
    assert set(default_table().keys(Surface.KV_EVENTS)) == fields


@pytest.mark.parametrize(
    ("connector", "patches"),
    # the protocol both transports share (its COMMON_EXTRA_CONFIG), then each connector's own patch
    [("SharedStorageConnectorV1", ["0012-*", "0014-*"]), ("NixlConnectorV1", ["0012-*", "0015-*"])],
)
def test_every_extra_config_key_a_dynamo_base_connector_reads_is_mapped(connector, patches):
    keys: set[str] = set()
    for name in patches:
        text = patch_text(f"vllm-0.9.0/{name}.patch")
        for block in re.findall(r"EXTRA_CONFIG(?:: [^=]+)? = \{\n(.*?)\n\+\}", text, re.S):
            keys |= set(re.findall(r'^\+\s+"(\w+)":', block, re.M))
    assert {"on_load_failure", "load_timeout_s", "hold_timeout_s"} <= keys
    assert set(default_table().keys(Surface.EXTRA, connector)) == keys


def test_every_dynamo_base_connector_name_is_mapped():
    registered = set()
    for name in ("0014-*", "0015-*"):
        registered |= set(re.findall(r'register_connector\(\n\+\s+"(\w+)"', patch_text(f"vllm-0.9.0/{name}.patch")))
    assert registered == {"SharedStorageConnectorV1", "NixlConnectorV1"}
    assert registered <= set(default_table().keys(Surface.CONNECTOR))


# ------------------------------------------------------------------ --kv-events-config


def test_events_on_become_an_explicit_zmq_publisher_and_lost_load_metrics_are_a_warning():
    result = migrate("0.9.0", kv_events_config={"enable_kv_cache_events": True}, with_plugin=False)
    assert result.ok
    assert result.kv_events_config == {"enable_kv_cache_events": True, "publisher": "zmq"}
    assert result.flags == ["--kv-events-config", '{"enable_kv_cache_events":true,"publisher":"zmq"}']
    assert [w.split(":")[1].strip() for w in result.warnings] == ["enable_load_metrics"]
    assert migrate("0.9.0", kv_events_config={"enable_kv_cache_events": True}, strict=True, with_plugin=False).errors


def test_load_metrics_set_are_refused_unless_the_plugin_provides_them():
    config = {"enable_kv_cache_events": True, "enable_load_metrics": True}
    assert migrate("0.13.0", kv_events_config=config, with_plugin=False).errors == [
        "--kv-events-config: enable_load_metrics: stock vLLM 0.13.0 has no load metrics; "
        "install dynamo-base-plugin (vpatch plugin build) or keep dynamo-base"
    ]
    plugged = migrate("0.13.0", kv_events_config=config, with_plugin=True)
    assert plugged.ok and plugged.plugin == ["--kv-events-config: enable_load_metrics"]
    assert "enable_load_metrics" not in (plugged.kv_events_config or {})


def test_the_library_default_is_the_commands_default_the_plugin_beside_stock(tmp_path):
    """`migrate()` and `migrate_deployment()` without `with_plugin` do what `vpatch config migrate` without
    `--no-plugin` does: the plugin's load metrics carry over, where stock alone refuses them."""
    config = {"enable_kv_cache_events": True, "enable_load_metrics": True}
    default = migrate("0.13.0", kv_events_config=config)
    assert default.ok and default.plugin == ["--kv-events-config: enable_load_metrics"]
    assert default == migrate("0.13.0", kv_events_config=config, with_plugin=True)
    assert not migrate("0.13.0", kv_events_config=config, with_plugin=False).ok
    deployment = tmp_path / "deploy.json"
    deployment.write_text(json.dumps({"kv_events_config": config}))
    assert migrate_deployment(deployment, "0.13.0").migration == default


@pytest.mark.parametrize(
    "config",
    [{"enable_kv_cache_events": False, "hwm": 5}, {"enable_kv_cache_events": True, "publisher": "null"}, {}],
)
def test_events_off_leave_the_flag_out(config):
    # stock builds a publisher from any kv_events_config, on or off
    result = migrate("0.9.0", kv_events_config=config, with_plugin=False)
    assert result.ok and result.kv_events_config is None and result.flags == []


@pytest.mark.parametrize(
    ("endpoint", "becomes"),
    [
        ("tcp://10.0.0.5:5557", "tcp://*:5557"),
        ("tcp://*:6000", "tcp://*:6000"),
        ("ipc:///tmp/kv", "ipc:///tmp/kv"),
    ],
)
def test_endpoints_stock_would_connect_to_become_wildcard_binds(endpoint, becomes):
    config = {"enable_kv_cache_events": True, "endpoint": endpoint, "enable_load_metrics": False}
    result = migrate("0.32.0", kv_events_config=config, with_plugin=False)
    assert result.kv_events_config is not None and result.kv_events_config["endpoint"] == becomes


# ------------------------------------------------------------------ --kv-transfer-config


@pytest.mark.parametrize(("version", "name"), [("0.9.0", "SharedStorageConnector"), ("0.13.0", "ExampleConnector")])
def test_shared_storage_gets_stocks_name_and_key(version, name):
    result = migrate(
        version, kv_transfer_config=with_extra(SHARED, storage_path="/data/kv", load_timeout_s=5), with_plugin=False
    )
    assert result.ok, result.errors
    assert result.kv_transfer_config == {
        "kv_connector": name,
        "kv_role": "kv_consumer",
        "kv_connector_extra_config": {"shared_storage_path": "/data/kv"},
    }
    assert any("load_timeout_s: left out" in note for note in result.notes)


def test_shared_storage_default_directory_is_written_because_stocks_is_tmp():
    result = migrate("0.9.0", kv_transfer_config=SHARED, with_plugin=False)
    assert result.kv_transfer_config is not None
    assert result.kv_transfer_config["kv_connector_extra_config"] == {
        "shared_storage_path": "/dev/shm/vllm-kv-transfer"
    }


@pytest.mark.parametrize(
    ("version", "env", "extra"),
    [
        ("0.10.0", {"VLLM_NIXL_ABORT_REQUEST_TIMEOUT": "31"}, None),
        ("0.16.0", {"VLLM_NIXL_ABORT_REQUEST_TIMEOUT": "31"}, None),
        ("0.22.0", {}, {"kv_lease_duration": 31}),
    ],
)
def test_nixl_hold_timeout_follows_upstreams_knob(version, env, extra):
    result = migrate(version, kv_transfer_config=with_extra(NIXL, hold_timeout_s=30.5), with_plugin=False)
    assert result.ok, result.errors
    side = {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": "14579"}
    assert result.env == {**env, **side}
    assert result.kv_transfer_config is not None
    assert result.kv_transfer_config.get("kv_connector_extra_config") == extra
    assert result.command_line().startswith("VLLM_NIXL_")


def test_nixl_options_stock_090_lacks_are_refused_one_line_each():
    config = with_extra(NIXL, hold_timeout_s=30, load_timeout_s=10, on_load_failure="fail", backends=["UCX", "GDS"])
    errors = migrate("0.9.0", kv_transfer_config=config, with_plugin=False).errors
    assert [e.split(": ")[1] for e in errors] == [
        "kv_connector_extra_config.backends",
        "kv_connector_extra_config.hold_timeout_s",
        "kv_connector_extra_config.load_timeout_s",
        "kv_connector_extra_config.on_load_failure",
    ]
    assert all(e.startswith("--kv-transfer-config: ") and "\n" not in e for e in errors)


@pytest.mark.parametrize(("version", "ok"), [("0.11.1", False), ("0.13.0", True)])
def test_fail_mode_needs_kv_load_failure_policy(version, ok):
    result = migrate(version, kv_transfer_config=with_extra(NIXL, on_load_failure="fail"), with_plugin=False)
    assert result.ok is ok
    if ok:
        assert result.kv_transfer_config is not None
        assert result.kv_transfer_config["kv_load_failure_policy"] == "fail"


def test_a_release_between_verified_ones_where_the_rule_changes_is_not_guessed():
    result = migrate("0.12.0", kv_transfer_config=with_extra(NIXL, on_load_failure="fail"), with_plugin=False)
    assert result.errors == [
        "--kv-transfer-config: kv_connector_extra_config.on_load_failure: changes between the verified "
        "releases 0.11.1 and 0.13.0; 0.12.0 was not read"
    ]
    assert migrate(
        "0.12.0", kv_events_config={"enable_kv_cache_events": True, "enable_load_metrics": False}, with_plugin=False
    ).ok


def test_keys_0320_removed_are_dropped_and_stock_connectors_keep_their_options():
    config = {"kv_connector": "SharedStorageConnector", "kv_role": "kv_both", "kv_ip": "10.0.0.1", "kv_rank": 0}
    config["kv_connector_extra_config"] = {"shared_storage_path": "/x"}
    result = migrate("0.32.0", kv_transfer_config=config, with_plugin=False)
    assert result.kv_transfer_config == {
        "kv_connector": "ExampleConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"shared_storage_path": "/x"},
    }
    assert migrate("0.16.0", kv_transfer_config=config, with_plugin=False).kv_transfer_config == {
        **config,
        "kv_connector": "ExampleConnector",
    }


def test_kv_transfer_params_drop_what_only_dynamo_base_reads():
    params = {"do_remote_prefill": True, "remote_block_ids": [1, 2], "transfer_key": "ab" * 32, "num_remote_tokens": 9}
    result = migrate("0.9.0", kv_transfer_params=params, with_plugin=False)
    assert result.kv_transfer_params == {"do_remote_prefill": True, "remote_block_ids": [1, 2]}


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"kv_events_config": {"enable_kv_cache_event": True}}, "did you mean 'enable_kv_cache_events'?"),
        ({"kv_events_config": {"hwm": 0}}, "hwm: must be a positive integer, not 0"),
        ({"kv_events_config": {"enable_kv_cache_events": "yes"}}, "must be true or false"),
        ({"kv_events_config": {"endpoint": "http://x:1"}}, "must be a ZMQ endpoint"),
        ({"kv_events_config": [1]}, "--kv-events-config: must be a JSON object, not [1]"),
        ({"kv_transfer_config": {"kv_role": "kv_producer"}}, "kv_connector: must name a connector, not None"),
        ({"kv_transfer_config": {"kv_connector": "NixlConector"}}, "did you mean 'NixlConnector'?"),
        ({"kv_transfer_config": with_extra(NIXL, load_timeout_s=-1)}, "load_timeout_s: must be a positive number"),
        ({"kv_transfer_config": with_extra(SHARED, on_load_failure="retry")}, "must be one of recompute, fail"),
        ({"kv_transfer_params": {"remote_block_ids": ["1"]}}, "must be a list of integers"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(kwargs, error):
    errors = migrate("0.13.0", **kwargs, with_plugin=False).errors
    assert len(errors) == 1 and error in errors[0], errors


def test_releases_before_stock_had_the_features_and_bad_versions():
    assert "keep dynamo-base" in migrate("0.8.5", kv_events_config={}, with_plugin=False).errors[0]
    with pytest.raises(VpatchError, match="not a release version"):
        migrate("latest", kv_events_config={}, with_plugin=False)


def test_out_of_tree_connectors_pass_through():
    config = {
        "kv_connector": "MyConnector",
        "kv_connector_module_path": "my.mod",
        "kv_connector_extra_config": {"a": 1},
    }
    assert migrate("0.9.0", kv_transfer_config=config, with_plugin=False).kv_transfer_config == config


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('kind = "same"', 'kind = "similar"', 1), "bad compatibility table"),
        (lambda t: t.replace('translator = "publisher"', 'translator = "nope"', 1), "no translator named 'nope'"),
        (lambda t: t.replace('since = "0.9.0"', 'since = "0.10.0"', 1), "rules must start at 0.9.0"),
        (lambda t: t + "\n[[entry]]\nsurface = 'kv_connector'\nkey = 'X'\nsource = 's'\nrule = []\nfoo = 1\n", "foo"),
    ],
)
def test_a_damaged_table_is_refused_naming_its_file(tmp_path, edit, message):
    bad = tmp_path / "mapping.toml"
    bad.write_text(edit(TABLE_FILE.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(VpatchError, match=re.escape(message)) as caught:
        load_table(bad)
    assert "mapping.toml" in caught.value.render()


# ------------------------------------------------------------------ the command


def test_cli_prints_flags_and_refuses_with_exit_1(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    events = ["config", "migrate", "--to", "0.9.0", "--kv-events-config"]
    assert main([*events, '{"enable_kv_cache_events": true}', "--no-plugin"]) == 0
    out, err = capsys.readouterr()
    assert '--kv-events-config \'{"enable_kv_cache_events":true,"publisher":"zmq"}\'' in out
    assert "dynamo-base-plugin provides" not in out
    assert err.startswith("vpatch: warning: --kv-events-config: enable_load_metrics:")
    metrics = '{"enable_load_metrics": true, "enable_kv_cache_events": true}'
    assert main([*events, metrics, "--no-plugin"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "vpatch: error: --kv-events-config: enable_load_metrics" in err
    assert main(["config", "migrate", "--to", "0.9.0", "--check", "--kv-events-config", "{}"]) == 0
    assert capsys.readouterr().out == "ok: carries over to stock vLLM 0.9.0\n"


@pytest.mark.parametrize("plugin", [[], ["--with-plugin"]])
def test_cli_plugin_is_the_default_and_with_plugin_still_accepted(capsys, tmp_path, monkeypatch, plugin):
    monkeypatch.chdir(tmp_path)
    metrics = '{"enable_load_metrics": true, "enable_kv_cache_events": true}'
    assert main(["config", "migrate", "--to", "0.9.0", "--kv-events-config", metrics, *plugin]) == 0
    out, err = capsys.readouterr()
    assert "dynamo-base-plugin provides: --kv-events-config: enable_load_metrics\n" in out and err == ""
    with pytest.raises(SystemExit) as exited:  # argparse: the two switches exclude each other
        main(["config", "migrate", "--to", "0.9.0", "--kv-events-config", "{}", "--with-plugin", "--no-plugin"])
    assert exited.value.code == 2


def test_cli_file_and_json(capsys, tmp_path, monkeypatch):
    # the old `--file` input (a JSON object of the three keys) is the smallest deployment file
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "deploy.json"
    config.write_text(json.dumps({"kv_transfer_config": SHARED, "kv-events-config": {}}, indent=1))
    assert main(["config", "migrate", "--to", "0.13.0", "--file", str(config), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] and record["kv_transfer_config"]["kv_connector"] == "ExampleConnector"
    assert record["kv_events_config"] is None
    assert record["changes"][0] == 'kv_transfer_config.kv_connector: "SharedStorageConnectorV1" -> "ExampleConnector"'
    assert "kv-events-config" not in record["config"]  # events off: the section is left out of the file
    config.write_text('{\n "kv_transfer_config": {},\n "kv_event_config": {}\n}')
    assert main(["config", "migrate", "--to", "0.13.0", "--file", str(config)]) == 1
    assert capsys.readouterr().err == (
        "vpatch: error: deploy.json:3: unknown key 'kv_event_config' (did you mean 'kv_events_config'?)\n"
    )
    config.write_text("{\n oops")
    assert main(["config", "migrate", "--to", "0.13.0", "--file", str(config)]) == 1
    assert capsys.readouterr().err.startswith("vpatch: error: deploy.json:2: not JSON")
    assert main(["config", "migrate", "--to", "0.13.0"]) == 1
    assert "nothing to migrate" in capsys.readouterr().err


def test_docs_name_every_key_the_table_maps():
    text = (REPO / "docs" / "migration.md").read_text(encoding="utf-8")
    missing = sorted({e.key for e in default_table().entry if f"`{e.key}`" not in text})
    assert missing == []
