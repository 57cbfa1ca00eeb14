"""The typed records (toolkit/records/): one schema writes and reads each file, in the bytes of the old writers.

The "old writer" here is the dict the job built by hand before the records existed, dumped the way it was
(`json.dumps(indent=1, sort_keys=True)`); each record built from the same values must encode to the same
bytes, and every committed results file must read and re-encode to itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.records.ci_summary import (
    Feature,
    Patch,
    Series,
    Step,
    Summary,
    VersionRun,
    Wheel,
    decode_summary,
    encode_summary,
)
from toolkit.records.codec import RecordError
from toolkit.records.conformance import Check, ConformanceResults, SeriesRef, WheelRef, encode_results
from toolkit.records.status import Status
from toolkit.records.verdict import Verdict

REPO = REPO_ROOT
COMMITTED = sorted((REPO / "patches" / "conformance").glob("*.json"))


def legacy(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_results_read_and_reencode_to_the_same_bytes(path: Path):
    from toolkit.records.contract import decode_contract, encode_contract

    text = path.read_text(encoding="utf-8")
    results = decode_contract(text)
    assert results.runs and all(isinstance(i.status, Status) for r in results.runs for i in r.items)
    assert encode_contract(results) == text


def test_conformance_results_encode_as_the_hand_built_dict_did():
    checks = [Check("wheels", Status.PASS, "ok", "", 0.5), Check("gpu", Status.NOT_APPLICABLE, "no GPU \u2192 n/a")]
    record = ConformanceResults(
        version="0.9.0",
        tier="static",
        checks=checks,
        ok=True,
        project="vllm",
        toolkit="0.1.0",
        python="3.11.7",
        series=SeriesRef("d2d082cee8db", ["0001-a.patch"]),
        stock=WheelRef("vllm-0.9.0.whl", "e3" * 32),
        patched=WheelRef("vllm-0.9.0+dynamo.whl", "70" * 32, "d2d082cee8db"),
        started="2026-11-25T04:31:00Z",
        seconds=41.04,
    )
    as_before = {
        "schema": 1,
        "project": "vllm",
        "version": "0.9.0",
        "tier": "static",
        "toolkit": "0.1.0",
        "python": "3.11.7",
        "series": {"fingerprint": "d2d082cee8db", "patches": ["0001-a.patch"]},
        "stock": {"wheel": "vllm-0.9.0.whl", "sha256": "e3" * 32},
        "patched": {"wheel": "vllm-0.9.0+dynamo.whl", "sha256": "70" * 32, "fingerprint": "d2d082cee8db"},
        "started": "2026-11-25T04:31:00Z",
        "seconds": 41.04,
        "checks": [
            {"name": "wheels", "status": "pass", "detail": "ok", "diff": "", "seconds": 0.5},
            {"name": "gpu", "status": "not-applicable", "detail": "no GPU \u2192 n/a", "diff": "", "seconds": 0.0},
        ],
        "ok": True,
    }
    assert encode_results(record) == legacy(as_before)
    without_series = ConformanceResults("1.0", "cpu", [], False, series=None, stock=None, patched=None)
    assert json.loads(encode_results(without_series))["series"] is None


def test_ci_summary_encodes_as_the_hand_built_dict_did_and_reads_back():
    patch = Patch("0001-a.patch", 3, 1, "[Core] a", "kv-routing", "Pending", ["vllm/a.py"], "clean", None, None)
    run = VersionRun(
        version="1.0",
        verdict=Verdict("dynamo-base", 1, ["kv-routing"], "dynamo-base needed (1 active patch: kv-routing)"),
        series=Series("abc", [patch]),
        steps=[Step("build", Status.PASS, 1.25, "built"), Step("verify", Status.SKIPPED, 0.0, "needs build")],
        wheel=Wheel("vllm-1.0+dynamo.abc.whl", "1.0+dynamo.abc", "70" * 32, 1024, 0.8),
        conformance={"static": "conform/vllm-1.0-static.json"},
        evidence=None,
    )
    summary = Summary(
        project="vllm",
        started="2026-11-25T04:30:00Z",
        ok=True,
        versions=[
            run,
            VersionRun("1.1", Verdict(None, 0, [], "no series yet (not rebased)"), None, [], None, {}, None),
        ],
        toolkit="0.1.0",
        seconds=2.5,
        features={
            "kv-routing": Feature("KV events", "0.9.0"),
            "kv-routing/load": Feature("", None, "#1", "kv-routing"),
        },
    )
    patch_before = {
        "name": "0001-a.patch",
        "subject": "[Core] a",
        "feature": "kv-routing",
        "upstream_status": "Pending",
        "files": ["vllm/a.py"],
        "added_lines": 3,
        "removed_lines": 1,
        "apply": "clean",
        "rebase": None,
        "retired_since": None,
    }
    as_before = {
        "schema": 2,
        "toolkit": "0.1.0",
        "project": "vllm",
        "started": "2026-11-25T04:30:00Z",
        "seconds": 2.5,
        "ok": True,
        "features": {
            "kv-routing": {"description": "KV events", "native_since": "0.9.0", "upstream": None, "parent": None},
            "kv-routing/load": {"description": "", "native_since": None, "upstream": "#1", "parent": "kv-routing"},
        },
        "versions": [
            {
                "version": "1.0",
                "verdict": {
                    "engine": "dynamo-base",
                    "active_patches": 1,
                    "features": ["kv-routing"],
                    "summary": "dynamo-base needed (1 active patch: kv-routing)",
                },
                "series": {"fingerprint": "abc", "patches": [patch_before]},
                "steps": [
                    {"name": "build", "status": "pass", "seconds": 1.25, "detail": "built"},
                    {"name": "verify", "status": "skipped", "seconds": 0.0, "detail": "needs build"},
                ],
                "wheel": {
                    "file": "vllm-1.0+dynamo.abc.whl",
                    "version": "1.0+dynamo.abc",
                    "sha256": "70" * 32,
                    "size": 1024,
                    "seconds": 0.8,
                },
                "conformance": {"static": "conform/vllm-1.0-static.json"},
                "evidence": None,
            },
            {
                "version": "1.1",
                "verdict": {
                    "engine": None,
                    "active_patches": 0,
                    "features": [],
                    "summary": "no series yet (not rebased)",
                },
                "series": None,
                "steps": [],
                "wheel": None,
                "conformance": {},
                "evidence": None,
            },
        ],
    }
    # Reuse came within schema 2 as optional fields: a summary written before them reads back as "not
    # reused, one job", and is written again with them.
    older = decode_summary(legacy(as_before))
    assert older.jobs == 1 and older.reused_steps == 0 and [s.key for s in older.versions[0].steps] == ["", ""]
    with_reuse = json.loads(json.dumps(as_before))
    with_reuse["jobs"] = 1
    for step in with_reuse["versions"][0]["steps"]:
        step.update(reused=False, key="")
    for version in with_reuse["versions"]:
        version["lint"] = None  # the check step's upstream lint, optional too
    text = legacy(with_reuse)
    assert encode_summary(summary) == text == encode_summary(older)
    assert encode_summary(decode_summary(text)) == text
    reused = text.replace('"reused": false', '"reused": true', 1)
    assert decode_summary(reused).reused_steps == 1


def step_summary(status: str) -> str:
    steps = [{"name": n, "status": "pass", "seconds": 1.0, "detail": ""} for n in ("a", "b", "c")]
    steps.append({"name": "d", "status": status, "seconds": 1.0, "detail": ""})
    return json.dumps(
        {"schema": 2, "project": "vllm", "started": "t", "ok": True, "versions": [{"version": "1.0", "steps": steps}]}
    )


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("done", "Invalid enum value 'done'"),
        ("not-applicable", "unknown status 'not-applicable' (expected pass, fail, skipped)"),
    ],
)
def test_a_bad_step_status_names_its_field_by_path(status: str, message: str):
    with pytest.raises(RecordError) as caught:
        decode_summary(step_summary(status))
    assert caught.value.where == "$.versions[0].steps[3].status"
    assert str(caught.value) == f"$.versions[0].steps[3].status: {message}"


def test_a_version_listed_twice_and_malformed_json_are_one_line_errors():
    data = json.loads(step_summary("pass"))
    data["versions"].append(data["versions"][0])
    with pytest.raises(RecordError, match=r"^\$\.versions\[1\]\.version: 1\.0 appears more than once$"):
        decode_summary(json.dumps(data))
    with pytest.raises(RecordError) as caught:
        decode_summary('{"schema": 1,\n "versions": [,]}')
    assert caught.value.line == 2 and str(caught.value).startswith("invalid JSON: ")


def test_unknown_fields_are_read_past_so_results_can_grow():
    assert COMMITTED, "patches/conformance/ holds the committed against results"
    text = COMMITTED[0].read_text(encoding="utf-8")
    data = json.loads(text)
    data["contracts_v3"] = [{"name": "kv-events", "status": "pass"}]
    from toolkit.records.contract import decode_contract

    assert decode_contract(json.dumps(data)).runs == decode_contract(text).runs


def test_a_verdict_lists_its_records_only_for_an_empty_series():
    needed = Verdict("dynamo-base", 2, ["kv-routing"], "dynamo-base needed")
    assert needed.as_dict() == {
        "engine": "dynamo-base",
        "active_patches": 2,
        "features": ["kv-routing"],
        "summary": "dynamo-base needed",
    }
    assert Verdict(None, 0, [], "empty series", []).as_dict()["records"] == []
