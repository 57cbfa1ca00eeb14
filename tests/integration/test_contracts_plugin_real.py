"""The kv-routing contract on stock vLLM 0.9.0 + the dynamo-base plugin, end to end (what `vpatch conform 0.9.0
--against 0.8.4 --new-kind stock+plugin` runs, on one workload and configuration): the engine in its own
process with the plugin wheel installed beside stock vLLM, `vpatch kv-watch --record --metrics` in another
following the plugin's own endpoint, judged per step against the scheduler's figures. A plugin whose figures
are off fails, with the steps in the diff."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import stock_env_of
from toolkit.contracts.run import run_kv_config
from toolkit.contracts.sides import Side, parse_configs
from toolkit.envs import create_venv, install, layer_on, runtime_env
from toolkit.plugin.build import build_plugin
from toolkit.plugin.ref import plugin_ref
from toolkit.records.conformance import WheelRef
from toolkit.records.contract import BuildSpec
from toolkit.records.status import Status
from toolkit.serving.plugin import SOURCE

pytestmark = pytest.mark.real


def plugin_side(repo_project, tmp_path, name: str, source=SOURCE) -> Side:
    """Stock 0.9.0 (the suite's cached venv, layered) with the plugin built from `source` pip-installed beside it."""
    wheel = build_plugin(repo_project, "0.9.0", tmp_path / f"dist-{name}", source=source).path
    venv = create_venv(tmp_path / f"venv-{name}")
    layer_on(venv, stock_env_of(repo_project, "0.9.0"), runtime_env(repo_project.options.cache_dir))
    install(venv, [str(wheel)], installer="pip")
    build = BuildSpec("0.9.0", "stock+plugin", (wheel.name,), (plugin_ref(wheel),))
    return Side("new", build, venv, WheelRef("stock 0.9.0", ""))


def test_the_plugins_figures_meet_the_contract_and_figures_that_are_off_fail(repo_project, tmp_path) -> None:
    off_source = tmp_path / "off-source"
    shutil.copytree(SOURCE, off_source, ignore=shutil.ignore_patterns("__pycache__"))
    figures = off_source / "figures.py"
    text = figures.read_text()
    wrong = text.replace('"num_waiting": waiting,', '"num_waiting": waiting + 1,')
    assert wrong != text
    figures.write_text(wrong)
    good = plugin_side(repo_project, tmp_path, "good")
    off = plugin_side(repo_project, tmp_path, "off", off_source)
    (config,) = parse_configs("loopback-builtin")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(
            pool.map(
                lambda side: run_kv_config(side, config, tmp_path / side.build.plugins[0].version, ["shared-prefix"]),
                [good, off],
            )
        )
    good_run, off_run = runs
    items = {i.item: i for i in good_run.items}
    assert {k: v.status for k, v in items.items()} == {
        "cached-prefixes": Status.PASS,
        "overlap": Status.PASS,
        "load-figures": Status.PASS,
    }, good_run
    assert good_run.transport is not None and good_run.transport.metrics_endpoint is not None
    # a message for every step that changed the figures: at least one, at most one per step
    assert good_run.seen is not None and 0 < good_run.seen.load_received <= good_run.engine_steps
    assert f"in {good_run.seen.load_received} LoadMetrics messages" in items["load-figures"].detail
    assert good_run.build.plugins[0].name == "dynamo-base-plugin"

    load = next(i for i in off_run.items if i.item == "load-figures")
    assert load.status == Status.FAIL, off_run
    assert f"{off_run.engine_steps} of {off_run.engine_steps} steps" in load.detail  # every step is off by one
    first = load.diff.splitlines()[0]
    assert first.startswith("shared-prefix step 0: num_waiting ") and "!=" in first
    assert next(i for i in off_run.items if i.item == "cached-prefixes").status == Status.PASS  # events untouched
