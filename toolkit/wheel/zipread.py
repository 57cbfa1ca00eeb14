"""Reading a zip's central directory as stored, so that unchanged members keep their records byte for byte.

`zipfile.ZipFile` builds a ZipInfo per member when it opens an archive (vLLM's wheel has ~1000: 10-20 ms
on this machine); the overlay build needs each member's name, offsets and stored central record, and the
contents of a few dozen members. `StoredZip` gives exactly that, with the ZipInfo attribute names the
writer already uses (`filename`, `header_offset`, `compress_size`, ...). Zip64 archives are refused, as
the writer refuses them.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from toolkit.wheel.zipraw import CENTRAL_HEADER, CENTRAL_SIG, END_RECORD, END_SIG, LIMIT, LOCAL_HEADER, ZipFormatError

END_SEARCH = 0xFFFF + END_RECORD.size  # the end record sits within the last 64 KiB (its comment) + 22 bytes


class StoredMember(NamedTuple):  # a tuple: made ~1000 times per build, at a third of a frozen dataclass's cost
    filename: str
    header_offset: int
    compress_type: int
    compress_size: int
    file_size: int
    CRC: int  # ZipInfo's name
    flag_bits: int
    date_time: tuple[int, int, int, int, int, int]
    external_attr: int
    central: bytes  # the whole central directory record: header, name, extra field, comment


def _date_time(date: int, time: int) -> tuple[int, int, int, int, int, int]:
    return ((date >> 9) + 1980, (date >> 5) & 0xF, date & 0x1F, time >> 11, (time >> 5) & 0x3F, (time & 0x1F) * 2)


class StoredZip:
    """A zip archive opened for reading its members' records and contents."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("rb")
        try:
            self._members = self._read_central_directory()
        except BaseException:
            self._handle.close()
            raise
        self._by_name = {m.filename: m for m in self._members}

    def _read_central_directory(self) -> list[StoredMember]:
        handle = self._handle
        size = handle.seek(0, 2)
        tail_start = max(0, size - END_SEARCH)
        handle.seek(tail_start)
        tail = handle.read()
        at = tail.rfind(END_SIG)
        if at < 0 or len(tail) - at < END_RECORD.size:
            raise ZipFormatError("no end of central directory record: not a zip file")
        _, _, _, _, count, cd_size, cd_offset, _ = END_RECORD.unpack_from(tail, at)
        if count == 0xFFFF or cd_offset == LIMIT or cd_size == LIMIT:
            raise ZipFormatError("the archive uses zip64, which the overlay writer does not support")
        if cd_offset + cd_size > tail_start + at:
            raise ZipFormatError("central directory beyond the end of the file")
        handle.seek(cd_offset)
        directory = handle.read(cd_size)
        self.start_dir = cd_offset
        members = []
        pos = 0
        for _ in range(count):
            if directory[pos : pos + 4] != CENTRAL_SIG or pos + CENTRAL_HEADER.size > len(directory):
                raise ZipFormatError(f"bad central directory record at offset {cd_offset + pos}")
            fields = CENTRAL_HEADER.unpack_from(directory, pos)
            flags, method, time, date, crc, csize, usize = fields[3:10]
            name_len, extra_len, comment_len = fields[10:13]
            external_attr, offset = fields[15], fields[16]
            end = pos + CENTRAL_HEADER.size + name_len + extra_len + comment_len
            raw_name = directory[pos + CENTRAL_HEADER.size : pos + CENTRAL_HEADER.size + name_len]
            if LIMIT in (csize, usize, offset) or end > len(directory):
                raise ZipFormatError(f"member {raw_name!r} needs zip64, which the overlay writer does not support")
            # ASCII reads the same either way, and utf-8's decoder is C (cp437's is a Python codec: ~3 ms a wheel)
            name = raw_name.decode("utf-8" if flags & 0x800 or raw_name.isascii() else "cp437")
            members.append(
                StoredMember(
                    name, offset, method, csize, usize, crc, flags, _date_time(date, time), external_attr,
                    directory[pos:end],
                )
            )  # fmt: skip
            pos = end
        return members

    def infolist(self) -> list[StoredMember]:
        return list(self._members)

    def namelist(self) -> list[str]:
        return [m.filename for m in self._members]

    def read(self, name: str) -> bytes:
        """A member's contents, inflated and checked against its CRC and size."""
        member = self._by_name.get(name)
        if member is None:
            raise KeyError(f"there is no member named {name!r}")
        self._handle.seek(member.header_offset)
        header = self._handle.read(LOCAL_HEADER.size)
        if len(header) < LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise ZipFormatError(f"bad local header for {name}")
        fields = LOCAL_HEADER.unpack(header)
        self._handle.seek(fields[9] + fields[10], 1)  # the name and extra field
        stored = self._handle.read(member.compress_size)
        if member.compress_type == 0:
            data = stored
        elif member.compress_type == 8:
            try:
                data = zlib.decompress(stored, -15)
            except zlib.error as exc:
                raise ZipFormatError(f"{name}: {exc}") from None
        else:
            raise ZipFormatError(f"{name}: compression method {member.compress_type} is not supported")
        if len(data) != member.file_size or zlib.crc32(data) & 0xFFFFFFFF != member.CRC:
            raise ZipFormatError(f"{name}: bad CRC or size (the archive is damaged)")
        return data

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> StoredZip:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
