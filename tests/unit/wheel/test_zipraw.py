"""RawZipWriter: raw members copied by its thread, new ones written after them; errors reach the caller."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from toolkit.wheel.zipraw import RawZipWriter, ZipFormatError, member_spans
from toolkit.wheel.zipread import StoredZip

DATE = (2025, 4, 13, 1, 2, 58)


def source_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pkg/a.py", b"a = 1\n" * 1000, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("pkg/b.so", os.urandom(300_000), compress_type=zipfile.ZIP_STORED)
        archive.writestr("pkg/c.py", b"c = 3\n", compress_type=zipfile.ZIP_DEFLATED)
    return path


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_copied_and_written_members_read_back(tmp_path):
    source = source_zip(tmp_path / "in.zip")
    with StoredZip(source) as stored, source.open("rb") as handle, (tmp_path / "out.zip").open("w+b") as out:
        spans = member_spans(stored, source.stat().st_size)
        with RawZipWriter(out) as writer:
            for info in stored.infolist():
                if info.filename == "pkg/b.so":  # a written member between two copied runs
                    writer.write("pkg/new.py", b"new = 2\n", date_time=DATE)
                writer.copy_raw(handle, info, spans[info.filename])
            writer.write("pkg/last.py", b"last = 4\n", date_time=DATE)
            writer.close()
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(tmp_path / "out.zip") as result:
        assert result.testzip() is None
        assert result.namelist() == ["pkg/a.py", "pkg/new.py", "pkg/b.so", "pkg/c.py", "pkg/last.py"]
        for name in original.namelist():
            assert result.read(name) == original.read(name)
        assert result.read("pkg/new.py") == b"new = 2\n" and result.read("pkg/last.py") == b"last = 4\n"


def test_a_copy_that_fails_in_the_thread_is_raised_by_close(tmp_path):
    source = source_zip(tmp_path / "in.zip")
    size = source.stat().st_size
    before = open_fds()
    with StoredZip(source) as stored, source.open("rb") as handle, (tmp_path / "out.zip").open("w+b") as out:
        (first, *_) = stored.infolist()
        with RawZipWriter(out) as writer, pytest.raises(ZipFormatError, match="unexpected end"):
            writer.copy_raw(handle, first, (size - 10, size + 1000))  # runs past the source's end
            writer.close()
    assert open_fds() == before  # the thread's duplicated descriptors are closed


def test_an_error_of_the_caller_stops_the_copy_and_closes_its_descriptors(tmp_path):
    source = source_zip(tmp_path / "in.zip")
    before = open_fds()
    with StoredZip(source) as stored, source.open("rb") as handle, (tmp_path / "out.zip").open("w+b") as out:
        spans = member_spans(stored, source.stat().st_size)
        with pytest.raises(RuntimeError, match="the caller's"), RawZipWriter(out) as writer:
            for info in stored.infolist():
                writer.copy_raw(handle, info, spans[info.filename])
            writer.flush_raw()
            raise RuntimeError("the caller's own error")
    assert open_fds() == before
