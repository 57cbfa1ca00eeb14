"""The conformance pieces that need no vLLM: API surface rules, trace comparison, invariant, leaks, crash handling."""

from __future__ import annotations

import json

import pytest

from toolkit.conformance.api_surface import compare, compatible, module_symbols
from toolkit.conformance.checks import FAIL, PASS, CheckList, compare_traces, kv_index_invariant, no_block_leaks

SOURCE = """
class Scheduler:
    def __init__(self, config, cache, log_stats=False):
        pass
    def schedule(self):
        pass
    def _private(self):
        pass
    budget: int

def helper(a, b=1, *, c=2):
    pass

def _hidden():
    pass

LIMIT = 3
"""


def test_module_symbols_lists_public_names_with_parameters():
    symbols = module_symbols("pkg.sched", SOURCE)
    assert set(symbols) == {
        "pkg.sched.Scheduler",
        "pkg.sched.Scheduler.__init__",
        "pkg.sched.Scheduler.schedule",
        "pkg.sched.Scheduler.budget",
        "pkg.sched.helper",
        "pkg.sched.LIMIT",
    }
    assert symbols["pkg.sched.helper"].params == (
        ("a", "positional", False),
        ("b", "positional", True),
        ("c", "keyword-only", True),
    )


@pytest.mark.parametrize(
    ("new_signature", "ok"),
    [
        ("def f(a, b=1, c=None): pass", True),  # appended with a default
        ("def f(a, b=1, *, c=None): pass", True),  # keyword-only with a default
        ("def f(a, b=1, **kwargs): pass", True),
        ("def f(a, b=1, c): pass".replace(", c)", ", c=0)"), True),
        ("def f(a, c, b=1): pass", False),  # a new parameter without default, inserted
        ("def f(a, b): pass", False),  # a default was taken away
        ("def f(a): pass", False),  # a parameter disappeared
        ("def f(b=1, a=0): pass", False),  # reordered
        ("def f(a, *, b=1): pass", False),  # became keyword-only
    ],
)
def test_signature_compatibility(new_signature, ok):
    old = module_symbols("m", "def f(a, b=1): pass")["m.f"].params
    new = module_symbols("m", new_signature)["m.f"].params
    assert compatible(old, new) is ok


def test_compare_reports_additions_removals_and_changes():
    stock = module_symbols("m", "def f(a): pass\ndef g(): pass\nclass C:\n    def run(self): pass\n")
    patched = module_symbols("m", "def f(a, b=2): pass\ndef h(): pass\nclass C:\n    def run(self, x): pass\n")
    diff = compare(stock, patched)
    assert diff.added == ("m.h",)
    assert diff.removed == ("m.g",)
    assert diff.changed_compatibly == ("m.f",)
    assert diff.changed_incompatibly == ("m.C.run",)


def row(step: int, **fields) -> dict:
    return {"workload": "w", "step": step, "scheduled": {"a": 16}, "cached_hashes": [], "events": [], **fields}


def test_compare_traces_names_the_first_difference():
    same = [row(0), row(1)]
    assert compare_traces("parity", same, same, label_a="stock", label_b="patched").status == PASS
    different = [row(0), row(1, scheduled={"a": 8})]
    result = compare_traces("parity", same, different, label_a="stock", label_b="patched")
    assert result.status == FAIL
    assert "w step 1" in result.diff and '-  "a": 16' in result.diff and '+  "a": 8' in result.diff
    ignored = compare_traces(
        "x", [row(0, events=[1])], [row(0, events=[2])], label_a="a", label_b="b", ignore=("events",)
    )
    assert ignored.status == PASS


def test_kv_index_invariant_catches_a_missing_removal():
    stored = {
        "type": "BlockStored",
        "block_hashes": [1, 2],
        "parent_block_hash": None,
        "token_ids": [],
        "block_size": 16,
        "lora_id": None,
    }
    good = [
        row(0, events=[stored], cached_hashes=[1, 2]),
        row(1, events=[{"type": "BlockRemoved", "block_hashes": [2]}], cached_hashes=[1]),
        row(2, events=[{"type": "AllBlocksCleared"}], cached_hashes=[]),
    ]
    assert kv_index_invariant(good).status == PASS
    bad = [row(0, events=[stored], cached_hashes=[1, 2]), row(1, events=[], cached_hashes=[1])]
    result = kv_index_invariant(bad)
    assert result.status == FAIL and "step 1" in result.detail and "[2]" in result.diff
    assert kv_index_invariant([row(0)]).status == FAIL  # no events at all is not a pass


def test_no_block_leaks():
    ok = {"workload": "w", "summary": True, "num_free_blocks": 9, "num_blocks": 10}
    leak = {"workload": "w", "summary": True, "num_free_blocks": 7, "num_blocks": 10}
    assert no_block_leaks({"stock": [ok]}).status == PASS
    result = no_block_leaks({"stock": [ok], "patched": [leak]})
    assert result.status == FAIL and "patched w: 2 block(s) not returned" in result.detail


def test_a_crashing_check_is_a_failure_and_the_others_still_run():
    checks = CheckList()
    checks.run("boom", lambda: 1 / 0)
    checks.run("fine", lambda: compare_traces("fine", [], [], label_a="a", label_b="b"))
    assert [(r.name, r.status) for r in checks.results] == [("boom", FAIL), ("fine", PASS)]
    assert "ZeroDivisionError" in checks.results[0].detail and not checks.ok


def test_static_tier_on_a_synthetic_release(pinned, capsys, tmp_path):
    from tests.harness import commit_in, module_text

    ws = pinned
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(
        ws.checkout("1.0"),
        {"vllm/core/scheduler.py": module_text("scheduler") + "def extra(x=1):\n    pass\n"},
        subject="[Core] add extra",
    )
    assert ws.run("export", "1.0") == 0
    capsys.readouterr()
    assert ws.run("conform", "1.0", "--tier", "static", "-o", str(tmp_path / "out"), "--json") == 0
    data = json.loads(capsys.readouterr().out)["results"][0]
    assert {c["name"]: c["status"] for c in data["checks"]} == {
        "series-applies": "pass",
        "wheels": "pass",
        "api-surface": "pass",
    }
    assert (tmp_path / "out" / "vllm-1.0-static.json").exists()
    # a patch that removes a public name fails the API check unless it declares the change
    without = (
        module_text("scheduler").replace("VALUE_40 = 40  # scheduler line 40\n", "") + "def extra(x=1):\n    pass\n"
    )
    assert ws.run("apply", "1.0", "--force") == 0
    commit_in(ws.checkout("1.0"), {"vllm/core/scheduler.py": without}, subject="[Core] drop VALUE_40")
    assert ws.run("export", "1.0") == 0
    capsys.readouterr()
    assert ws.run("conform", "1.0", "--tier", "static", "-o", str(tmp_path / "out"), "--json") == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["results"][0]["checks"]}
    assert checks["api-surface"]["status"] == "fail"
    assert checks["api-surface"]["diff"] == "- vllm.core.scheduler.VALUE_40 (removed)"
    assert ws.run("apply", "1.0", "--force") == 0
    repo = ws.checkout("1.0")
    from toolkit.git import Git

    message = (
        Git(repo)
        .out("log", "-1", "--format=%B")
        .replace("Feature: kv-routing", "Feature: kv-routing\nAPI-Change: vllm.core.scheduler.VALUE_40 no longer used")
    )
    Git(repo).run("commit", "-q", "--amend", "-F", "-", input=message.encode())
    assert ws.run("export", "1.0") == 0
    capsys.readouterr()
    assert ws.run("conform", "1.0", "--tier", "static", "-o", str(tmp_path / "out"), "--json") == 0


def test_a_missing_wheel_is_a_failed_check_with_its_cause_and_the_rest_still_runs(pinned, capsys, tmp_path):
    ws = pinned
    ws.write_series("1.0", {})
    for wheel in ws.index.files_dir.glob("*.whl"):
        wheel.unlink()  # the index no longer serves it ...
    for cached in (ws.cache / "downloads").rglob("*.whl"):
        cached.unlink()  # ... and the cache lost it
    capsys.readouterr()
    assert ws.run("conform", "1.0", "--tier", "static", "-o", str(tmp_path / "out"), "--json") == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["results"][0]["checks"]}
    assert checks["series-applies"]["status"] == "pass"
    assert checks["wheels"]["status"] == "fail" and "download failed" in checks["wheels"]["detail"]
    assert checks["api-surface"]["status"] == "fail" and "no wheels" in checks["api-surface"]["detail"]
    written = json.loads((tmp_path / "out" / "vllm-1.0-static.json").read_text())
    assert written["ok"] is False
