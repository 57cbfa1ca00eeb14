"""A rebase's evidence.json as one record (toolkit/records/evidence.py): the bytes of the old writer, old files
without the fields format 1 gained later, and a field of the wrong shape named by its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import msgspec
import pytest

from tests.harness.paths import REPO_ROOT
from tests.unit.lifecycle.rebase.test_rebase import P1, P2, make_series, publish, rebase
from toolkit.records.codec import RecordError
from toolkit.records.evidence import (
    EVIDENCE_FILE,
    ConformanceRef,
    Dropped,
    Evidence,
    Header,
    HunkInNew,
    PatchEntry,
    PostImage,
    Side,
    Signals,
    UpstreamCommit,
    decode_evidence,
    encode_evidence,
)
from toolkit.records.outcome import Outcome
from toolkit.report.evidence import load_evidence

REPO = REPO_ROOT
COMMITTED = sorted((REPO / "patches").glob("vllm-*/evidence.json"))
KEPT = "0001-a.patch"
SKIPPED = "0002-b.patch"


def legacy(data: dict) -> str:
    """How the writers dumped the hand-built dict before the record."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def full_dict() -> dict:
    """A document with every field, optional ones included, as upstream.py built it by hand."""
    signals = {
        "became_empty": False,
        "patch_id_match": [{"commit": "c" * 40, "subject": "upstream did it"}],
        "reverse_applies": True,
        "header": {"applied_upstream": None, "says_upstream": False, "upstream_status": "Pending"},
        "conformance": {"file": "vllm-1.1-against-1.0.json", "build": "stock 1.1", "against": "dynamo-base 1.0"},
        "native_since": "1.1",
        "post_image_in_new": {
            "hunks": [{"file": "vllm/a.py", "hunk": 1, "line": 12, "how": "exact"}, {"file": "vllm/a.py", "hunk": 2}],
            "found": 1,
            "total": 2,
        },
    }
    return {
        "format": 1,
        "project": "vllm",
        "old": {"version": "1.0", "source": "sdist", "base_commit": "a" * 40},
        "new": {"version": "1.1", "source": "git", "base_commit": "b" * 40},
        "patches": {
            KEPT: {
                "position": 1,
                "subject": "[Core] a",
                "feature": "kv-routing",
                "outcome": "merged",
                "details": ["applied with a three-way merge"],
                "kept": True,
                "content_changed": True,
                "patch_id": "1" * 40,
                "new_patch_id": "2" * 40,
                "evidence": signals,
                "upstream_signals": ["patch_id_match", "reverse_applies", "conformance", "native_since"],
                "skip_reason": None,
                "past_native_since": "1.1",
            },
            SKIPPED: {
                "position": 2,
                "subject": "[Core] b",
                "feature": None,
                "outcome": "skipped",
                "details": [],
                "kept": False,
                "content_changed": None,
                "patch_id": "3" * 40,
                "evidence": {**copy.deepcopy(signals), "patch_id_match": "not available: sdist bases have no history"},
                "upstream_signals": [],
                "skip_reason": "upstream rewrote it",
                "past_native_since": None,
            },
        },
        "dropped": [{"name": SKIPPED, "feature": None, "reason": "skipped", "skip_reason": "upstream rewrote it"}],
        "earlier": [{"name": "0009-z.patch", "feature": "pd-disagg", "reason": "retired", "dropped_in": "0.9"}],
        "kept": [KEPT],
        "warnings": ["kv-routing: 1 patch(es) carried onto vllm 1.1, past the feature's native-since 1.1"],
    }


def full_record() -> Evidence:
    """The same document built as the writers build it now."""
    hunks = [HunkInNew("vllm/a.py", 1, 12, "exact"), HunkInNew("vllm/a.py", 2)]

    def signals(match: list[UpstreamCommit] | str) -> Signals:
        return Signals(
            became_empty=False,
            patch_id_match=match,
            reverse_applies=True,
            header=Header(applied_upstream=None, upstream_status="Pending", says_upstream=False),
            conformance=ConformanceRef("vllm-1.1-against-1.0.json", "stock 1.1", "dynamo-base 1.0"),
            native_since="1.1",
            post_image_in_new=PostImage(hunks=hunks, found=1, total=2),
        )

    return Evidence(
        format=1,
        project="vllm",
        old=Side(version="1.0", source="sdist", base_commit="a" * 40),
        new=Side(version="1.1", source="git", base_commit="b" * 40),
        patches={
            KEPT: PatchEntry(
                position=1,
                subject="[Core] a",
                feature="kv-routing",
                outcome=Outcome.MERGED,
                details=["applied with a three-way merge"],
                kept=True,
                content_changed=True,
                patch_id="1" * 40,
                new_patch_id="2" * 40,
                evidence=signals([UpstreamCommit("c" * 40, "upstream did it")]),
                upstream_signals=["patch_id_match", "reverse_applies", "conformance", "native_since"],
                skip_reason=None,
                past_native_since="1.1",
            ),
            SKIPPED: PatchEntry(
                position=2,
                subject="[Core] b",
                feature=None,
                outcome=Outcome.SKIPPED,
                kept=False,
                patch_id="3" * 40,
                evidence=signals("not available: sdist bases have no history"),
                skip_reason="upstream rewrote it",
                past_native_since=None,
            ),
        },
        dropped=[Dropped(name=SKIPPED, feature=None, reason=Outcome.SKIPPED, skip_reason="upstream rewrote it")],
        earlier=[Dropped(name="0009-z.patch", feature="pd-disagg", reason=Outcome.RETIRED, dropped_in="0.9")],
        kept=[KEPT],
        warnings=["kv-routing: 1 patch(es) carried onto vllm 1.1, past the feature's native-since 1.1"],
    )


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_evidence_reads_and_reencodes_to_the_same_bytes(path: Path):
    text = path.read_text(encoding="utf-8")
    evidence = decode_evidence(text)
    assert encode_evidence(evidence) == text
    assert (
        evidence.format == 1
        and evidence.patches
        and all(isinstance(e.outcome, Outcome) for e in evidence.patches.values())
    )


def test_committed_files_were_found():
    assert {p.parent.name for p in COMMITTED} >= {"vllm-0.8.5", "vllm-0.9.0", "vllm-0.9.1", "vllm-0.10.2"}


def test_the_record_writes_the_bytes_the_hand_built_dict_gave():
    assert encode_evidence(full_record()) == legacy(full_dict())
    assert decode_evidence(legacy(full_dict())) == full_record()


def test_an_old_file_without_the_fields_added_later_reads_and_keeps_its_bytes(tmp_path: Path):
    old = full_dict()
    del old["warnings"], old["dropped"][0]["skip_reason"], old["earlier"][0]["dropped_in"]
    for entry in old["patches"].values():
        entry.pop("new_patch_id", None)
        del entry["skip_reason"], entry["past_native_since"]
        del entry["evidence"]["native_since"], entry["evidence"]["post_image_in_new"]
    evidence = decode_evidence(legacy(old))
    kept = evidence.patches[KEPT]
    assert kept.skip_reason is msgspec.UNSET and kept.past_native_since is msgspec.UNSET
    assert kept.new_patch_id is msgspec.UNSET and evidence.warnings is msgspec.UNSET
    assert kept.evidence is not None and kept.evidence.post_image_in_new is msgspec.UNSET
    assert encode_evidence(evidence) == legacy(old)  # absent stays absent: no nulls appear
    # the report reads it as before: no hunks found, no flags, no warnings
    (tmp_path / EVIDENCE_FILE).write_text(legacy(old))
    loaded = load_evidence(tmp_path, EVIDENCE_FILE)
    assert loaded.error is None and [p.name for p in loaded.patches] == [KEPT, SKIPPED]
    assert loaded.patches[0].hunks_in_new == (0, 0) and loaded.patches[0].past_native_since is None
    assert loaded.patches[1].skip_reason is None and loaded.warnings == ()
    assert loaded.dropped[0].skip_reason is None and loaded.earlier[0].dropped_in is None
    # and with them, what it shows follows the fields
    (tmp_path / EVIDENCE_FILE).write_text(legacy(full_dict()))
    loaded = load_evidence(tmp_path, EVIDENCE_FILE)
    assert loaded.patches[0].hunks_in_new == (1, 2) and loaded.patches[0].past_native_since == "1.1"
    assert loaded.patches[1].skip_reason == "upstream rewrote it" and len(loaded.warnings) == 1
    assert loaded.earlier[0].dropped_in == "0.9" and loaded.dropped[0].skip_reason == "upstream rewrote it"


def test_a_next_rebase_carries_the_dropped_patches_forward():
    earlier = full_record().carried_forward()
    assert [(d.name, d.dropped_in) for d in earlier] == [("0009-z.patch", "0.9"), (SKIPPED, "1.1")]


def mutated(change) -> str:
    data = copy.deepcopy(full_dict())
    change(data)
    return legacy(data)


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (lambda d: d["patches"][KEPT].update(kept="yes"), f'$.patches["{KEPT}"].kept', "Expected `bool`, got `str`"),
        (
            lambda d: d["patches"][SKIPPED]["evidence"]["post_image_in_new"].update(found=-1),
            f'$.patches["{SKIPPED}"].evidence.post_image_in_new.found',
            "Expected `int` >= 0",
        ),
        (
            lambda d: d["patches"][SKIPPED]["evidence"]["post_image_in_new"]["hunks"][1].update(hunk="2"),
            f'$.patches["{SKIPPED}"].evidence.post_image_in_new.hunks[1].hunk',
            "Expected `int`, got `str`",
        ),
        (lambda d: d["patches"][KEPT].update(outcome="gone"), f'$.patches["{KEPT}"].outcome', "Invalid enum value"),
        (lambda d: d["patches"][KEPT].pop("outcome"), f'$.patches["{KEPT}"]', "missing required field `outcome`"),
        (lambda d: d["dropped"][0].update(reason=3), "$.dropped[0].reason", "Expected `str`, got `int`"),
        (lambda d: d["earlier"][0].update(dropped_in=9), "$.earlier[0].dropped_in", "Expected `str | null`"),
        (lambda d: d.update(warnings=[7]), "$.warnings[0]", "Expected `str`, got `int`"),
        (lambda d: d["new"].update(version=1.1), "$.new.version", "Expected `str`, got `float`"),
        (lambda d: d.update(format=2), "$.format", "unsupported format 2 (expected 1)"),
        (lambda d: d.update(patches=[]), "$.patches", "Expected `object`, got `array`"),
    ],
)
def test_a_malformed_field_is_named_by_its_path(tmp_path: Path, change, where: str, message: str):
    text = mutated(change)
    with pytest.raises(RecordError) as raised:
        decode_evidence(text)
    assert raised.value.where == where and message in raised.value.message, str(raised.value)
    # the report shows it as one line naming the file and the field
    (tmp_path / EVIDENCE_FILE).write_text(text)
    error = load_evidence(tmp_path, EVIDENCE_FILE).error
    assert error is not None and error.startswith(f"{EVIDENCE_FILE}: {where}: ") and "\n" not in error, error


def test_json_that_does_not_parse_names_its_line(tmp_path: Path):
    (tmp_path / EVIDENCE_FILE).write_text('{\n "format": 1,\n "patches": {,}\n}\n')
    error = load_evidence(tmp_path, EVIDENCE_FILE).error
    assert error is not None and error.startswith(f"{EVIDENCE_FILE}:3: invalid JSON: "), error


def test_review_and_retire_name_the_bad_field_of_a_rebase_evidence(pinned, capsys):
    """A fresh rebase's evidence.json re-encodes to itself; hand-broken, `review` and `retire` stop with one line
    naming the file and the field, and write nothing."""
    ws = pinned
    make_series(ws, "1.0")
    publish(ws, "1.1")
    code, _ = rebase(ws, capsys, "1.0", "--onto", "1.1")
    assert code == 0
    path = ws.series_dir("1.1") / EVIDENCE_FILE
    text = path.read_text(encoding="utf-8")
    written = decode_evidence(text)
    assert encode_evidence(written) == text == legacy(json.loads(text))
    entry = written.patches[P1]
    assert entry.evidence is not None and entry.evidence.post_image_in_new is not msgspec.UNSET
    assert entry.skip_reason is None and written.warnings == []
    broken = json.loads(text)
    broken["patches"][P2]["upstream_signals"] = "header"
    path.write_text(legacy(broken))
    before = ws.snapshot()
    for args in (("review", "1.1"), ("retire", P2, "--since", "1.1")):
        capsys.readouterr()
        assert ws.run(*args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f'vllm-1.1/evidence.json: $.patches["{P2}"].upstream_signals: Expected `array`, got `str`' in err, err
    assert ws.snapshot() == before
