"""The cpu tier's stock side is kept by its inputs: reused while they are the same, run again when any changes
(real venvs and real installs of a small wheel; the kept runs under a tmp cache)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.harness import make_wheel
from toolkit.conformance.stock_runs import StockRuns, stock_run_key
from toolkit.envs import create_venv, install, layer_on

WHEEL_SHA = "a" * 64


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A real, empty venv."""
    return create_venv(tmp_path_factory.mktemp("venvs") / "stock")


def counted(text: str):
    """A run that writes `text` to its output, and the list that records each time it ran."""
    calls: list[Path] = []

    def run(out: Path) -> None:
        calls.append(out)
        out.write_text(text, encoding="utf-8")

    return run, calls


def test_a_second_run_of_the_same_key_is_reused_and_says_so(tmp_path, venv):
    runs = StockRuns(tmp_path / "cache")
    key = stock_run_key("runner", venv, WHEEL_SHA, [None, "sha256"])
    run, calls = counted('{"step": 1}\n')
    assert runs.produce(key, tmp_path / "first" / "stock.jsonl", run) is None
    kept = runs.produce(key, tmp_path / "second" / "stock.jsonl", run)
    assert len(calls) == 1 and kept is not None and kept.key == key
    assert (tmp_path / "second" / "stock.jsonl").read_text(encoding="utf-8") == '{"step": 1}\n'
    assert f"stock side reused (key {key[:12]}" in kept.note() and "--no-reuse" in kept.note()
    # --no-reuse: run again, and what it made is kept from then on
    again, again_calls = counted('{"step": 2}\n')
    assert StockRuns(tmp_path / "cache", reuse=False).produce(key, tmp_path / "third" / "s.jsonl", again) is None
    assert len(again_calls) == 1
    assert runs.produce(key, tmp_path / "fourth" / "s.jsonl", run) is not None
    assert (tmp_path / "fourth" / "s.jsonl").read_text(encoding="utf-8") == '{"step": 2}\n'


def test_every_input_is_in_the_key(tmp_path, venv, monkeypatch):
    base = stock_run_key("runner", venv, WHEEL_SHA, [None, "sha256"])
    assert stock_run_key("runner", venv, WHEEL_SHA, [None, "sha256"]) == base  # the same inputs: the same key
    changed = {
        "what ran": stock_run_key("pd-scenarios", venv, WHEEL_SHA, [None, "sha256"]),
        "its arguments": stock_run_key("runner", venv, WHEEL_SHA, [None, "builtin"]),
        "the stock wheel": stock_run_key("runner", venv, "b" * 64, [None, "sha256"]),
    }
    # each variable set to a value it does not have now (CI may set either), and restored afterwards
    for label, name in (("a VLLM_ variable", "VLLM_ENABLE_V1_MULTIPROCESSING"), ("PYTHONHASHSEED", "PYTHONHASHSEED")):
        with monkeypatch.context() as env:
            env.setenv(name, os.environ.get(name, "") + "7")
            changed[label] = stock_run_key("runner", venv, WHEEL_SHA, [None, "sha256"])
    assert stock_run_key("runner", venv, WHEEL_SHA, [None, "sha256"]) == base
    assert len(set(changed.values()) | {base}) == len(changed) + 1, changed


def test_this_checkout_on_pythonpath_keys_the_same_from_any_folder(venv, monkeypatch):
    from tests.harness.paths import REPO_ROOT

    keys = set()
    for entries in ([str(REPO_ROOT), "/opt/extra"], [str(REPO_ROOT) + "/", "/opt/extra"]):
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(entries))
        keys.add(stock_run_key("runner", venv, WHEEL_SHA, [None, "sha256"]))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere/clone", "/opt/extra"]))
    other = stock_run_key("runner", venv, WHEEL_SHA, [None, "sha256"])
    assert len(keys) == 1 and other not in keys  # only this checkout's own root is named by a token


def test_a_package_installed_in_the_venv_or_a_layer_is_a_new_key(tmp_path):
    venv, layer = create_venv(tmp_path / "stock"), create_venv(tmp_path / "layer")
    keys = [stock_run_key("runner", venv, WHEEL_SHA, [])]
    install(venv, [str(make_wheel(tmp_path / "w1", "1.0", project="tinydep"))], installer="pip", no_deps=True)
    keys.append(stock_run_key("runner", venv, WHEEL_SHA, []))
    layer_on(venv, layer)
    keys.append(stock_run_key("runner", venv, WHEEL_SHA, []))  # a layer put on the path, nothing in it yet
    install(layer, [str(make_wheel(tmp_path / "w2", "2.0", project="layerdep"))], installer="pip", no_deps=True)
    keys.append(stock_run_key("runner", venv, WHEEL_SHA, []))  # the layer's packages count
    assert len(set(keys)) == 4, keys


def test_a_damaged_or_failed_run_is_never_reused(tmp_path, venv):
    runs = StockRuns(tmp_path / "cache")
    key = stock_run_key("upstream-tests", venv, WHEEL_SHA, ["c0ffee"])

    def fails(out: Path) -> None:
        out.write_text("half", encoding="utf-8")
        raise RuntimeError("the runner died")

    with pytest.raises(RuntimeError, match="the runner died"):
        runs.produce(key, tmp_path / "a.json", fails)
    run, calls = counted('{"t": "passed"}\n')
    assert runs.produce(key, tmp_path / "b.json", run) is None and len(calls) == 1  # nothing was kept
    kept = next((tmp_path / "cache").rglob("output"))
    kept.write_text('{"t": "failed"}\n', encoding="utf-8")  # changed behind the entry's back
    assert runs.produce(key, tmp_path / "c.json", run) is None and len(calls) == 2
    assert (tmp_path / "c.json").read_text(encoding="utf-8") == '{"t": "passed"}\n'


def test_runs_of_one_key_at_once_run_it_once(tmp_path, venv):
    """Two conform runs side by side (`vpatch ci --jobs 2`, two test workers): the second waits, then reuses."""
    key = stock_run_key("pd-scenarios", venv, WHEEL_SHA, ["aggregated"])
    started, release = threading.Event(), threading.Event()
    calls: list[Path] = []

    def slow(out: Path) -> None:
        calls.append(out)
        started.set()
        release.wait(30)
        out.write_text("{}", encoding="utf-8")

    results: list[object] = []
    first = threading.Thread(
        target=lambda: results.append(StockRuns(tmp_path / "c").produce(key, tmp_path / "1", slow))
    )
    first.start()
    assert started.wait(30)
    second = threading.Thread(
        target=lambda: results.append(StockRuns(tmp_path / "c").produce(key, tmp_path / "2", slow))
    )
    second.start()
    release.set()
    first.join(30)
    second.join(30)
    assert len(calls) == 1 and results[0] is None and results[1] is not None
    assert (tmp_path / "2").read_text(encoding="utf-8") == "{}"
