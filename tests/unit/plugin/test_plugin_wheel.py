"""`vpatch plugin build`: the dynamo-base plugin wheel (toolkit/plugin/build.py) from the repository's own pins
and series and the plugin package; nothing is downloaded. Installs go into fresh venvs with uv and pip."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.harness import env_var, run_vpatch
from tests.harness.paths import REPO_ROOT
from toolkit import faults
from toolkit.envs import create_venv, install, venv_python
from toolkit.errors import VpatchError
from toolkit.options import load_options
from toolkit.plugin.build import ENTRY_POINTS, build_plugin, plugin_wheel
from toolkit.project import Project
from toolkit.serving.plugin import SOURCE
from toolkit.wheel.record import record_hash

REPO = REPO_ROOT


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    cache = tmp_path_factory.mktemp("cache")
    return Project.load(load_options({"root": str(REPO), "cache_dir": str(cache)}))


def members(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_same_inputs_give_the_same_bytes_and_a_changed_source_a_new_version(project, tmp_path) -> None:
    first = build_plugin(project, "0.9.0", tmp_path / "a")
    again = build_plugin(project, "0.9.0", tmp_path / "b")
    assert first.path.name == again.path.name
    assert first.path.read_bytes() == again.path.read_bytes()
    assert first.path.name == f"dynamo_base_plugin-{first.version}-py3-none-any.whl"
    assert str(first.version).startswith("0.9.0+plugin.")

    source = tmp_path / "src"
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "figures.py").write_text((source / "figures.py").read_text() + "\n# changed\n")
    changed = build_plugin(project, "0.9.0", tmp_path / "c", source=source)
    assert changed.version != first.version
    with env_var("SOURCE_DATE_EPOCH", "1700000000"):
        dated = build_plugin(project, "0.9.0", tmp_path / "d")
    assert dated.version == first.version and dated.path.read_bytes() != first.path.read_bytes()
    assert {i.date_time for i in zipfile.ZipFile(dated.path).infolist()} == {(2023, 11, 14, 22, 13, 20)}


def test_metadata_provenance_and_record(project, tmp_path) -> None:
    built = build_plugin(project, "0.9.0", tmp_path)
    files = members(built.path)
    dist_info = f"dynamo_base_plugin-{built.version}.dist-info"
    metadata = files[f"{dist_info}/METADATA"].decode()
    assert f"Name: dynamo-base-plugin\nVersion: {built.version}\n" in metadata
    assert "Requires-Python: >=3.9" in metadata and "Requires-Dist: vllm" not in metadata
    assert "Root-Is-Purelib: true" in files[f"{dist_info}/WHEEL"].decode()

    info = json.loads(files[f"{dist_info}/dynamo_base_plugin.json"])
    series = project.series(project.pins.get("0.9.0"))
    assert info["series"] == {"fingerprint": series.fingerprint(), "patches": [p.name for p in series.patches]}
    assert info["vllm"]["supports"] == ">=0.9.0" and info["vllm"]["series_version"] == "0.9.0"
    assert info["vllm"]["sdist_sha256"] == project.pins.get("0.9.0").sdist.sha256
    shipped = {name: data for name, data in files.items() if name.startswith("dynamo_base_plugin/")}
    assert info["sources"] == {name: hashlib.sha256(data).hexdigest() for name, data in shipped.items()}
    assert shipped == {f"dynamo_base_plugin/{p.name}": p.read_bytes() for p in sorted(SOURCE.glob("*.py"))}
    assert info["toolkit"]["name"] == "vpatch"

    rows = list(csv.reader(io.StringIO(files[f"{dist_info}/RECORD"].decode())))
    assert {row[0] for row in rows} == set(files)
    for name, digest, size in rows:
        if name.endswith("/RECORD"):
            assert (digest, size) == ("", "")
        else:
            assert (digest, size) == (record_hash(files[name]), str(len(files[name]))), name
    check = Path(sys.executable).with_name("check-wheel-contents")
    proc = subprocess.run([str(check), str(built.path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_installed_with_uv_it_declares_its_entry_points_and_stays_inert_unconfigured(project, tmp_path) -> None:
    wheel = plugin_wheel(project, "0.9.0", tmp_path / "dist")
    venv = create_venv(tmp_path / "venv")
    install(venv, [str(wheel)], installer="uv", no_deps=True)
    probe = """
import json, os
from importlib.metadata import entry_points, version
from types import SimpleNamespace as NS
import dynamo_base_plugin
from dynamo_base_plugin.figures import LoadTotals
os.environ.pop("DYNAMO_LOAD_METRICS_ENDPOINT", None)
dynamo_base_plugin.register()  # unconfigured: returns before it imports vLLM (not installed here)
totals = LoadTotals()
step = lambda q, h, **kw: totals.figures(NS(num_running_reqs=2, num_waiting_reqs=1,
    prefix_cache_stats=NS(queries=q, hits=h, **kw), **{"gpu_cache_usage": 0.25}))
step(64, 32)
later = totals.figures(NS(num_running_reqs=1, num_waiting_reqs=0, num_skipped_waiting_reqs=3, kv_cache_usage=0.5,
    prefix_cache_stats=NS(queries=10, hits=0, preempted_queries=6, preempted_hits=6)))
names = ("vllm.general_plugins", "vllm.stat_logger_plugins")
groups = {g: {e.name: e.value for e in entry_points(group=g)} for g in names}
print(json.dumps({"groups": groups, "version": version("dynamo-base-plugin"), "later": later}))
"""
    proc = subprocess.run([str(venv_python(venv)), "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["groups"] == ENTRY_POINTS
    assert wheel.name == f"dynamo_base_plugin-{seen['version']}-py3-none-any.whl"
    # cumulative over steps; deferred waiting and preempted lookups counted as dynamo-base counted them
    assert seen["later"] == {
        "num_running": 1,
        "num_waiting": 3,
        "kv_cache_usage": 0.5,
        "prefix_cache_queries": 80,
        "prefix_cache_hits": 38,
        "prefix_cache_hit_rate": 38 / 80,
        "prefix_cache_unit": "tokens",
    }


def test_a_killed_build_leaves_the_previous_wheel_and_the_next_build_sweeps(project, tmp_path) -> None:
    out = tmp_path / "dist"
    good = build_plugin(project, "0.9.0", out)
    before = good.path.read_bytes()
    env = {**os.environ, faults.ENV: "wheel.write"}
    vpatch = Path(sys.executable).with_name("vpatch")
    argv = [str(vpatch), "--root", str(REPO), "--cache-dir", str(project.options.cache_dir)]
    proc = subprocess.run(
        [*argv, "plugin", "build", "0.9.0", "-o", str(out)], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == faults.KILLED
    assert good.path.read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".vpatch-")]  # the killed build's temp file
    faults.reset()
    with env_var(faults.ENV, "wheel.write:1:enospc"), pytest.raises(VpatchError, match="cannot write the wheel"):
        build_plugin(project, "0.9.0", out)
    faults.reset()
    assert good.path.read_bytes() == before
    build_plugin(project, "0.9.0", out)
    assert sorted(p.name for p in out.iterdir()) == [good.path.name]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0.8.4"], "pins.toml: vLLM 0.8.4 has no plugin hooks"),
        (["0.7.1"], "pins.toml: no pin for vllm 0.7.1"),
        (["0.9.0", "-o", "/proc/vpatch-plugin"], "/proc/vpatch-plugin: "),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args, message) -> None:
    proc = run_vpatch(REPO, "plugin", "build", *args, expect=1)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_bad_sources_and_epoch_are_named(project, tmp_path) -> None:
    source = tmp_path / "src"
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "hooks.py").write_text("def broken(:\n")
    with pytest.raises(VpatchError, match=r"hooks\.py:1: the plugin source does not compile"):
        build_plugin(project, "0.9.0", tmp_path / "out", source=source)
    (source / "hooks.py").unlink()
    (source / "__init__.py").unlink()
    with pytest.raises(VpatchError, match=r"has no __init__\.py"):
        build_plugin(project, "0.9.0", tmp_path / "out", source=source)
    with env_var("SOURCE_DATE_EPOCH", "soon"), pytest.raises(VpatchError, match=r"SOURCE_DATE_EPOCH='soon'"):
        build_plugin(project, "0.9.0", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_version_follows_the_series_and_vpatch_and_the_wheel_says_what_it_is(project, tmp_path) -> None:
    from toolkit.plugin.build import fingerprint, plugin_sources, release_claims
    from toolkit.plugin.ref import plugin_ref

    built = build_plugin(project, "0.9.0", tmp_path)
    series = project.series(project.pins.get("0.9.0"))
    sources = plugin_sources()
    claims = release_claims(project.pins.get("0.9.0").version)
    assert built.version.local == f"plugin.{fingerprint(series, sources, claims=claims)}"
    assert fingerprint(series, sources, "0.1.0") != fingerprint(series, sources, "0.2.0")  # vpatch changes it
    assert fingerprint(None, sources) != fingerprint(series, sources)  # and the series does
    # and what the wheel says it delivers on its release: an edited delivers.toml row is another version
    claims = {"delivers": {"kv-routing": "load metrics"}, "kv_connectors": {}}
    edited = {"delivers": {"kv-routing": "load metrics over ZMQ"}, "kv_connectors": {}}
    assert fingerprint(series, sources, claims=claims) != fingerprint(series, sources, claims=edited)
    assert built.provenance["version"]["fingerprint_of"].startswith("sha256 over the series fingerprint, the vpatch")
    ref = plugin_ref(built.path)
    assert (ref.name, ref.version, ref.file, ref.sha256) == (
        "dynamo-base-plugin",
        str(built.version),
        built.path.name,
        built.sha256,
    )
    assert ref.series_fingerprint == series.fingerprint() and "kv-routing" in ref.delivers
    not_a_wheel = tmp_path / "x.whl"
    not_a_wheel.write_bytes(b"no zip")
    with pytest.raises(VpatchError, match="cannot read the wheel"):
        plugin_ref(not_a_wheel)


def provenance_of(wheel: Path) -> dict:
    """The dist-info's dynamo_base_plugin.json of the wheel file, as installed."""
    files = members(wheel)
    return json.loads(next(data for name, data in files.items() if name.endswith(".dist-info/dynamo_base_plugin.json")))


def test_what_the_wheel_says_it_delivers_is_what_it_delivers_on_its_own_release(project, tmp_path) -> None:
    from toolkit.plugin.delivers import default_table
    from toolkit.plugin.ref import plugin_ref

    # shared_storage delivers pd-disagg's parts from its `since` on (0.32.0); below it the plugin refuses its
    # SharedStorageConnectorV1 (connector_names.py), so a wheel built for 0.13.0 must not claim pd-disagg
    connector = next(d for d in default_table().deliveries if d.obj == "SharedStorageConnectorV1")
    older = build_plugin(project, "0.13.0", tmp_path / "older")
    newer = build_plugin(project, str(connector.since), tmp_path / "newer")
    assert older.provenance == provenance_of(older.path) and newer.provenance == provenance_of(newer.path)
    before, since = provenance_of(older.path), provenance_of(newer.path)
    assert before["vllm"]["series_version"] == "0.13.0" and since["vllm"]["series_version"] == str(connector.since)

    assert sorted(before["delivers"]) == ["kv-routing"]
    assert "SharedStorageConnectorV1" not in before["delivers"]["kv-routing"]
    assert before["kv_connectors"] == {}
    assert plugin_ref(older.path).delivers == before["delivers"]  # the evidence's PluginRef, hence the verdict

    assert sorted(since["delivers"]) == ["kv-routing", "pd-disagg"]
    assert since["delivers"]["pd-disagg"] == connector.what
    assert since["kv_connectors"]["SharedStorageConnectorV1"]["kv_connector_module_path"] == connector.module
    assert since["delivers"]["kv-routing"] == before["delivers"]["kv-routing"]
    assert plugin_ref(newer.path).delivers == since["delivers"]
