"""toolkit.trailer: one reading of the DEP-3 trailer paragraph for the parser, the importer and the writers."""

from __future__ import annotations

from pathlib import Path

from toolkit.importer.messages import split_trailer
from toolkit.patch_mail import parse_patch
from toolkit.trailer import add_trailers, read_trailer, set_trailer

DIFF = b"---\n a.txt | 1 +\n\ndiff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1 +1,2 @@\n a\n+b\n"


def _mail(message: bytes) -> bytes:
    head = b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: t <t@t>\n"
    return head + b"Date: Tue, 14 Nov 2023 22:13:20 +0000\nSubject: [PATCH] add b\n\n" + message + b"\n" + DIFF


FOLDED = b"Why it is needed.\n\nUpstream-Status: Submitted\n [https://example.invalid/pr/1]\nFeature: kv-events"


def test_a_folded_value_is_read_alike_by_the_parser_and_the_importer(tmp_path: Path) -> None:
    patch = parse_patch(tmp_path / "0001.patch", _mail(FOLDED))
    headers = [(key, value) for key, value, _ in patch.headers]
    assert headers == [("Upstream-Status", "Submitted [https://example.invalid/pr/1]"), ("Feature", "kv-events")]
    assert [line for _, _, line in patch.headers] == [8, 10]  # line numbers in the mail
    prose, imported = split_trailer(FOLDED.decode())
    assert (prose, imported) == ("Why it is needed.", headers)
    assert read_trailer(["Just prose.", "Feature: x"]) is None
    assert read_trailer([" continued first"]) is None


def test_set_trailer_replaces_a_folded_value_and_keeps_patch_file_last(tmp_path: Path) -> None:
    data = set_trailer(_mail(FOLDED + b"\nPatch-File: 0001-add-b.patch"), "Upstream-Status", "Pending")
    patch = parse_patch(tmp_path / "0001.patch", data)
    assert [(k, v) for k, v, _ in patch.headers] == [
        ("Upstream-Status", "Pending"),
        ("Feature", "kv-events"),
        ("Patch-File", "0001-add-b.patch"),
    ]
    data = set_trailer(data, "Last-Update", "2026-12-02")
    assert [k for k, _, _ in parse_patch(tmp_path / "0001.patch", data).headers][-2:] == ["Last-Update", "Patch-File"]
    assert data.endswith(DIFF)


def test_add_trailers_keeps_a_key_already_there_and_a_prose_end_gets_a_paragraph(tmp_path: Path) -> None:
    data = add_trailers(_mail(FOLDED), [("Feature", "again"), ("Retired-Since", "0.9.0")])
    keys = [k for k, _, _ in parse_patch(tmp_path / "0001.patch", data).headers]
    assert keys == ["Upstream-Status", "Feature", "Feature", "Retired-Since"]
    prose = set_trailer(_mail(b"Only prose here."), "Patch-File", "0001-add-b.patch")
    assert b"Only prose here.\n\nPatch-File: 0001-add-b.patch\n---\n" in prose
