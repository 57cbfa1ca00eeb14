"""`StoredZip` reads what `zipfile` reads, keeps each central record as stored, and refuses damage."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from toolkit.wheel.zipraw import ZipFormatError
from toolkit.wheel.zipread import StoredZip

MEMBERS = {
    "pkg/__init__.py": (b"X = 1\n" * 300, zipfile.ZIP_DEFLATED),
    "pkg/_C.abi3.so": (bytes(range(256)) * 40, zipfile.ZIP_STORED),
    "pkg/données.txt": ("é".encode() * 10, zipfile.ZIP_DEFLATED),
}


def make_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, method) in MEMBERS.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 5, 6, 7, 8, 10))
            info.external_attr = 0o100755 << 16
            archive.writestr(info, data, compress_type=method)
        archive.comment = b"a comment"
    return path


def test_stored_zip_agrees_with_zipfile(tmp_path: Path):
    path = make_zip(tmp_path / "a.zip")
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as reference, StoredZip(path) as ours:
        assert ours.namelist() == reference.namelist() == list(MEMBERS)
        assert ours.start_dir == reference.start_dir
        for mine, theirs in zip(ours.infolist(), reference.infolist(), strict=True):
            assert (mine.filename, mine.header_offset, mine.compress_type, mine.CRC, mine.date_time) == (
                theirs.filename,
                theirs.header_offset,
                theirs.compress_type,
                theirs.CRC,
                theirs.date_time,
            )
            assert (mine.compress_size, mine.file_size, mine.external_attr) == (
                theirs.compress_size,
                theirs.file_size,
                theirs.external_attr,
            )
            assert mine.central in raw[reference.start_dir :]  # the record exactly as stored
            assert ours.read(mine.filename) == reference.read(theirs.filename) == MEMBERS[mine.filename][0]


def test_stored_zip_refuses_damage(tmp_path: Path):
    path = make_zip(tmp_path / "a.zip")
    with StoredZip(path) as archive:
        so = next(m for m in archive.infolist() if m.filename.endswith(".so"))
    raw = bytearray(path.read_bytes())
    raw[so.header_offset + 30 + len(so.filename) + 5] ^= 0xFF  # a byte of the stored data
    (tmp_path / "flipped.zip").write_bytes(raw)
    with StoredZip(tmp_path / "flipped.zip") as archive, pytest.raises(ZipFormatError, match="bad CRC"):
        archive.read(so.filename)
    (tmp_path / "cut.zip").write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ZipFormatError):
        StoredZip(tmp_path / "cut.zip")
    (tmp_path / "text.zip").write_bytes(b"not a zip at all\n" * 10)
    with pytest.raises(ZipFormatError, match="not a zip"):
        StoredZip(tmp_path / "text.zip")
