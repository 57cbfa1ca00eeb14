"""The patched-files cache entry: what is stored reads back the same; a damaged or older entry reads as a miss."""

from __future__ import annotations

import json

from toolkit.patched import PatchedFiles


def sample() -> PatchedFiles:
    return PatchedFiles(
        "a" * 40,
        (("M", "vllm/core/scheduler.py"), ("A", "vllm/naïve/ünïcode.py"), ("D", "vllm/old.py"), ("A", "vllm/empty.py")),
        {
            "vllm/core/scheduler.py": b"x = 1\n",
            "vllm/naïve/ünïcode.py": "s = 'ü'\n".encode() + bytes(range(256)),  # any bytes, newlines included
            "vllm/empty.py": b"",
        },
        {"vllm/core/scheduler.py": "b" * 40, "vllm/old.py": "c" * 40},
        ("vllm/naïve/ünïcode.py",),
    )


def test_an_entry_reads_back_as_written():
    entry = sample().to_bytes()
    assert PatchedFiles.from_bytes(entry) == sample()
    assert entry == sample().to_bytes()  # the same files, the same bytes


def test_a_damaged_entry_reads_as_a_miss():
    entry = sample().to_bytes()
    at = entry.index(b"x = 1")
    assert PatchedFiles.from_bytes(entry[:at] + b"y" + entry[at + 1 :]) is None  # a content byte changed
    assert PatchedFiles.from_bytes(entry[:-1]) is None  # cut short
    assert PatchedFiles.from_bytes(entry + b"\n") is None
    assert PatchedFiles.from_bytes(b"") is None
    head, _, body = entry.partition(b"\n")
    assert PatchedFiles.from_bytes(head.replace(b" 3 ", b" 4 ") + b"\n" + body) is None  # another format


def test_an_entry_of_the_json_format_before_reads_as_a_miss():
    old = {"sha256": "0" * 64, "payload": {"format": 2, "base_commit": "a" * 40, "changes": [], "contents": {}}}
    assert PatchedFiles.from_bytes(json.dumps(old).encode()) is None
