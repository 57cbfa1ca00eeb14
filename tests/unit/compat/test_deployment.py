"""`vpatch config migrate FILE --to VERSION` (a deployment's file), the table's plugin rules, the generated
docs/migration.md block, and the plugin's run-time connector names agreeing with the table (fast: no vLLM needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.version import Version

from tests.harness.paths import REPO_ROOT
from toolkit.cli import main
from toolkit.compat import doc
from toolkit.compat.deployment import migrate_deployment
from toolkit.compat.migrate import migrate
from toolkit.compat.table import TABLE_FILE, Kind, Surface, default_table, load_table, rule_at
from toolkit.errors import VpatchError
from toolkit.plugin.build import ENTRY_POINTS
from toolkit.serving.plugin.dynamo_base_plugin import connector_names

REPO = REPO_ROOT
NIXL_PREFILL = {
    "model": "/models/llama",
    "kv_transfer_config": {
        "kv_connector": "NixlConnectorV1",
        "kv_role": "kv_producer",
        "kv_connector_extra_config": {"engine_id": "prefill-0", "hold_timeout_s": 300},
    },
    "kv-events-config": {
        "enable_kv_cache_events": True,
        "endpoint": "tcp://10.0.0.5:5557",
        "enable_load_metrics": True,
    },
}
SERVE = """# prefill engine
vllm serve /models/llama --port 8100 \\
  --kv-transfer-config '{"kv_connector": "SharedStorageConnectorV1", "kv_role": "kv_producer",
                         "kv_connector_extra_config": {"storage_path": "/mnt/kv", "hold_timeout_s": 30}}' \\
  --kv-events-config='{"enable_kv_cache_events": false}'
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ the table's plugin rules


def test_plugin_rules_replace_stock_ones_from_their_release_only():
    table = default_table()
    entry = table.find(Surface.CONNECTOR, "SharedStorageConnectorV1")
    assert entry is not None
    at = {v: rule_at(table, entry, Version(v), with_plugin=True) for v in ("0.22.0", "0.32.0")}
    assert at["0.22.0"].rule.to == "connector:ExampleConnector"  # type: ignore[union-attr]
    assert at["0.32.0"].rule.kind is Kind.SAME and at["0.32.0"].rule.plugin  # type: ignore[union-attr]
    stock = rule_at(table, entry, Version("0.32.0"))
    assert stock.rule.to == "connector:ExampleConnector"  # type: ignore[union-attr]


def test_a_plugin_rule_off_the_verified_releases_is_refused_naming_the_table(tmp_path):
    text = TABLE_FILE.read_text(encoding="utf-8").replace(
        'since = "0.32.0"\nplugin = true', 'since = "0.31.0"\nplugin = true', 1
    )
    with pytest.raises(VpatchError, match="plugin rules must ascend and start at verified releases") as err:
        load_table(write(tmp_path, "mapping.toml", text))
    assert "mapping.toml" in str(err.value)


def test_the_plugins_shared_storage_keeps_dynamo_bases_options_and_policy():
    result = migrate(
        "0.32.0",
        kv_transfer_config={
            "kv_connector": "SharedStorageConnectorV1",
            "kv_role": "kv_consumer",
            "kv_connector_extra_config": {"load_timeout_s": 5, "on_load_failure": "fail"},
        },
        kv_transfer_params={"do_remote_prefill": True, "transfer_key": "k", "num_remote_tokens": 63},
        with_plugin=True,
    )
    assert result.ok, result.errors
    assert result.kv_transfer_config == {
        "kv_connector": "SharedStorageConnectorV1",
        "kv_role": "kv_consumer",
        "kv_load_failure_policy": "fail",
        "kv_connector_extra_config": {"load_timeout_s": 5, "storage_path": "/dev/shm/vllm-kv-transfer"},
    }
    assert result.kv_transfer_params == {"do_remote_prefill": True, "transfer_key": "k", "num_remote_tokens": 63}


# ------------------------------------------------------------------ the command


def test_a_json_deployment_gives_one_line_per_changed_key(tmp_path):
    path = write(tmp_path, "deploy.json", json.dumps(NIXL_PREFILL, indent=1))
    done = migrate_deployment(path, "0.32.0", with_plugin=True)
    assert done.ok and done.errors == []
    assert done.changes == [
        'kv_transfer_config.kv_connector: "NixlConnectorV1" -> "NixlConnector"',
        'kv_events_config.endpoint: "tcp://10.0.0.5:5557" -> "tcp://*:5557"',
        "kv_transfer_config.kv_connector_extra_config.engine_id -> kv_transfer_config.engine_id",
        "kv_transfer_config.kv_connector_extra_config.hold_timeout_s -> "
        "kv_transfer_config.kv_connector_extra_config.kv_lease_duration",
        "kv_events_config.enable_load_metrics: removed (dynamo-base-plugin publishes the load metrics: set "
        "DYNAMO_LOAD_METRICS_ENDPOINT, docs/plugin.md)",
        'kv_transfer_config.kv_buffer_device: added "cuda"',
        'kv_transfer_config.kv_load_failure_policy: added "recompute"',
        'kv_events_config.publisher: added "zmq"',
        "env VLLM_NIXL_SIDE_CHANNEL_HOST=127.0.0.1",
        "env VLLM_NIXL_SIDE_CHANNEL_PORT=14579",
    ]
    assert done.migrated["model"] == "/models/llama"  # other engine arguments untouched
    assert done.migrated["kv_transfer_config"]["kv_connector_extra_config"] == {"kv_lease_duration": 300}
    # dynamo-base's default 60 s load timeout has no equivalent; its connector's device is not in the file (host
    # memory needs kv_buffer_device "cpu" on stock): both said as warnings
    assert [w.split(":")[1].strip() for w in done.warnings] == [
        "kv_transfer_config.kv_buffer_device",
        "kv_transfer_config.kv_connector_extra_config.load_timeout_s",
    ]


def test_a_command_line_with_continuations_comments_and_inline_values(tmp_path):
    path = write(tmp_path, "serve.sh", SERVE)
    done = migrate_deployment(path, "0.13.0", with_plugin=True)
    assert done.changes == [
        'kv_transfer_config.kv_connector: "SharedStorageConnectorV1" -> "ExampleConnector"',
        "kv_transfer_config.kv_connector_extra_config.storage_path -> "
        "kv_transfer_config.kv_connector_extra_config.shared_storage_path",
        "kv_transfer_config.kv_connector_extra_config.hold_timeout_s: removed",
        "kv_events_config: leave it out (events are off, and stock builds a publisher from any value)",
    ]
    assert done.migrated[:5] == ["vllm", "serve", "/models/llama", "--port", "8100"]
    assert done.migrated[5] == "--kv-transfer-config" and len(done.migrated) == 7  # events flag left out
    assert json.loads(done.migrated[6])["kv_connector_extra_config"] == {"shared_storage_path": "/mnt/kv"}
    plugged = migrate_deployment(
        path, "0.32.0", with_plugin=True
    )  # the plugin carries dynamo-base's transport from 0.32.0
    assert plugged.changes[0] == 'kv_transfer_config.kv_load_failure_policy: added "recompute"'
    assert migrate_deployment(path, "0.32.0", with_plugin=False).changes[0].endswith('-> "ExampleConnector"')


def test_no_equivalent_is_one_line_naming_file_line_and_key_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "decode.yaml",
        "model: /models/llama\nkv-transfer-config:\n  kv_connector: NixlConnectorV1\n  kv_role: kv_consumer\n"
        "  kv_connector_extra_config:\n    load_timeout_s: 30\n    metadata_timeout_s: 5\n",
    )
    assert main(["config", "migrate", "decode.yaml", "--to", "0.32.0"]) == 1
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("vpatch: error: ")]
    assert out == ""
    assert errors == [
        "vpatch: error: decode.yaml:6: kv_transfer_config.kv_connector_extra_config.load_timeout_s: stock vLLM "
        "0.32.0's NixlConnector has no load timeout (a decode request waits for its KV until it arrives or fails); "
        "keep dynamo-base if decode engines must give up on a prefill engine",
        "vpatch: error: decode.yaml:7: kv_transfer_config.kv_connector_extra_config.metadata_timeout_s: stock vLLM "
        "0.32.0's NIXL handshake timeout is not configurable; leave the key out or keep dynamo-base",
    ]


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("d.json", '{\n "kv_transfer_config": {\n oops', "d.json:3: not JSON"),
        ("d.json", '{"kv_events_config": [1]}', "d.json: kv_events_config: must be a JSON object, not [1]"),
        ("d.json", '{"kv_events_config": "{nope"}', "d.json: kv_events_config: not JSON"),
        ("d.sh", "vllm serve M --kv-transfer-config.kv_connector X\n", "d.sh:1: --kv-transfer-config.kv_connector:"),
        ("d.sh", "vllm serve M --kv-events-config\n", "d.sh: --kv-events-config: no value"),
        ("d.sh", "vllm serve 'M\n", "d.sh: not a command line"),
        (
            "d.json",
            '{"kv_events_config": {"enable_kv_cache_event": true}}',
            "d.json:1: kv_events_config.enable_kv_cache_event: unknown key 'enable_kv_cache_event' (did you mean",
        ),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path, capsys, monkeypatch, name, text, error):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, name, text)
    assert main(["config", "migrate", name, "--to", "0.32.0"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"vpatch: error: {error}"), err


def test_a_release_before_stock_had_the_surfaces_is_refused_as_a_command_line_problem(tmp_path):
    done = migrate_deployment(write(tmp_path, "d.json", '{"kv_events_config": {}}'), "0.8.4", with_plugin=True)
    assert done.errors == [
        "--to 0.8.4: stock vLLM before 0.9.0 has neither KV-cache events nor an asynchronous V1 connector; "
        "keep dynamo-base"
    ]


def test_cli_json_record_and_no_change(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "d.json", json.dumps(NIXL_PREFILL))
    assert main(["config", "migrate", "d.json", "--to", "0.32.0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] and record["with_plugin"] and record["env"]["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "14579"
    assert record["config"]["kv-events-config"] == {
        "enable_kv_cache_events": True,
        "endpoint": "tcp://*:5557",
        "publisher": "zmq",
    }
    write(tmp_path, "plain.json", '{"model": "/models/llama"}')
    assert main(["config", "migrate", "plain.json", "--to", "0.32.0"]) == 0
    assert capsys.readouterr().out == "plain.json: no change for stock vLLM 0.32.0 + dynamo-base-plugin\n"


def test_file_as_argument_or_option_and_the_plugin_switches(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "serve.sh", SERVE)
    runs = {}
    for name, extra in {
        "positional": ["serve.sh"],
        "option": ["--file", "serve.sh"],
        "with-plugin": ["serve.sh", "--with-plugin"],
        "no-plugin": ["serve.sh", "--no-plugin"],
    }.items():
        assert main(["config", "migrate", "--to", "0.32.0", *extra]) == 0
        runs[name] = capsys.readouterr().out
    assert runs["positional"] == runs["option"] == runs["with-plugin"]
    assert runs["positional"].splitlines()[0] == 'kv_transfer_config.kv_load_failure_policy: added "recompute"'
    assert runs["no-plugin"].splitlines()[0].endswith('-> "ExampleConnector"')
    assert main(["config", "migrate", "--to", "0.32.0", "serve.sh", "--notes"]) == 0
    assert any(line.startswith("note: --kv-transfer-config: ") for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["d.json", "--file", "d.json"], "FILE is given twice (as an argument and as --file)"),
        (
            ["d.json", "--kv-events-config", "{}"],
            "--kv-events-config: give the configuration in FILE or as flags, not both",
        ),
        (["missing.json"], "missing.json: No such file or directory"),
    ],
)
def test_file_and_what_it_cannot_go_with(tmp_path, capsys, monkeypatch, argv, error):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "d.json", json.dumps(NIXL_PREFILL))
    assert main(["config", "migrate", "--to", "0.32.0", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"vpatch: error: {error}\n"


def test_check_and_strict_on_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "d.json", json.dumps(NIXL_PREFILL, indent=1))
    assert main(["config", "migrate", "d.json", "--to", "0.32.0", "--check"]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: carries over to stock vLLM 0.32.0\n" and "load_timeout_s" in err  # the default: a warning
    assert main(["config", "migrate", "d.json", "--to", "0.32.0", "--check", "--strict"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("vpatch: error: d.json:")
    assert "kv_transfer_config.kv_connector_extra_config.load_timeout_s: " in err


def test_a_misspelt_section_is_refused_and_other_engine_arguments_pass(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # ec_transfer_config is a real engine argument (vLLM 0.32.0), the closest one to a section name
    write(tmp_path, "d.yaml", "model: /m\nec_transfer_config: {}\nkv-transfer-conf:\n  kv_connector: X\n")
    assert main(["config", "migrate", "d.yaml", "--to", "0.32.0"]) == 1
    assert capsys.readouterr().err == (
        "vpatch: error: d.yaml:3: unknown key 'kv-transfer-conf' (did you mean 'kv_transfer_config'?)\n"
    )
    write(tmp_path, "d.yaml", "model: /m\nec_transfer_config: {}\n")
    assert main(["config", "migrate", "d.yaml", "--to", "0.32.0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["changes"] == [] and record["config"] == {"model": "/m", "ec_transfer_config": {}}


def test_migrate_config_is_gone_into_config_migrate(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["migrate-config", "d.json", "--to", "0.32.0"])
    assert exited.value.code == 2 and "invalid choice: 'migrate-config'" in capsys.readouterr().err


# ------------------------------------------------------------------ docs/migration.md is the table


def test_the_docs_per_release_mapping_is_generated_from_the_table():
    text = (REPO / "docs" / "migration.md").read_text(encoding="utf-8")
    assert doc.generated_block(text) == doc.render(default_table()), "run: python -m toolkit.compat.doc"
    for release in default_table().verified:
        assert f"### Stock vLLM {release}" in text
    assert "### Stock vLLM 0.32.0 + dynamo-base-plugin" in text


def test_a_table_change_shows_in_the_docs_check(tmp_path):
    changed = load_table(
        write(tmp_path, "m.toml", TABLE_FILE.read_text(encoding="utf-8").replace("stock's default is /tmp", "CHANGED"))
    )
    assert "CHANGED" in doc.render(changed) and doc.render(changed) != doc.render(default_table())
    page = write(tmp_path, "migration.md", f"intro\n\n{doc.BEGIN}\nstale\n{doc.END}\n\nafter\n")
    assert doc.update(page, changed) is True and doc.update(page, changed) is False
    assert page.read_text(encoding="utf-8") == f"intro\n\n{doc.render(changed)}\n\nafter\n"


# ------------------------------------------------------------------ the plugin's run-time names agree with the table


def test_the_plugin_registers_its_names_through_the_general_plugin_group():
    assert ENTRY_POINTS["vllm.general_plugins"]["dynamo_base_connector_names"] == (
        "dynamo_base_plugin.connector_names:register"
    )
    assert set(connector_names.NAMES) == {"SharedStorageConnectorV1", "SharedStorageConnector", "NixlConnectorV1"}


@pytest.mark.parametrize("name", sorted(connector_names.REFUSED))
def test_each_refused_name_is_one_line_naming_the_tables_upstream_connector(name):
    newest = default_table().verified[-1]
    upstream = migrate(newest, kv_transfer_config={"kv_connector": name, "kv_role": "kv_both"}, with_plugin=True)
    stock_name = upstream.kv_transfer_config["kv_connector"]  # type: ignore[index]
    assert stock_name != name
    with pytest.raises(connector_names.ConnectorNameError) as err:
        getattr(connector_names, name)
    line = str(err.value)
    assert "\n" not in line and f"use kv_connector {stock_name} " in line and "vpatch config migrate FILE" in line
    assert not isinstance(err.value, ValueError)  # pydantic would wrap a ValueError in a multi-line error


def test_the_names_the_plugin_runs_are_what_the_table_keeps_or_renames_to():
    table, newest = default_table(), Version(default_table().verified[-1])
    v1 = rule_at(table, table.find(Surface.CONNECTOR, "SharedStorageConnectorV1"), newest, with_plugin=True)  # type: ignore[arg-type]
    assert v1.rule.kind is Kind.SAME  # type: ignore[union-attr]
    old = rule_at(table, table.find(Surface.CONNECTOR, "SharedStorageConnector"), newest, with_plugin=True)  # type: ignore[arg-type]
    assert old.rule.to == "connector:ExampleConnector"  # type: ignore[union-attr]
    assert "import ExampleConnector" in Path(connector_names.__file__).read_text(encoding="utf-8")
    with pytest.raises(AttributeError):
        connector_names.NotAConnector  # noqa: B018
