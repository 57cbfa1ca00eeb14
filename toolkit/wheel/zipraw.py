"""Writing zip archives member by member, copying unchanged members' compressed bytes verbatim.

The stock vLLM wheel is ~300 MB, almost all of it compiled `.so` that no patch
touches. Recompressing it would take a minute; copying the local records as raw
byte ranges (with `copy_file_range` where the kernel offers it) takes as long as
`cp`. Only new or changed members are deflated.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from toolkit.wheel.copier import Copier, ZipFormatError, pwrite_all

if TYPE_CHECKING:
    import zipfile  # the types only: not loaded by an overlay build

    from toolkit.wheel.speculate import Job, Speculation
    from toolkit.wheel.zipread import StoredMember, StoredZip

LOCAL_HEADER = struct.Struct("<4s5H3L2H")
CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")
END_RECORD = struct.Struct("<4s4H2LH")
LOCAL_SIG, CENTRAL_SIG, END_SIG = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
LIMIT = 0xFFFFFFFF
ZIP_DEFLATED = 8  # ZIP_DEFLATED


@dataclass(frozen=True)
class Entry:
    """A member as it goes into the central directory."""

    name: str
    crc: int
    compress_size: int
    file_size: int
    method: int
    flags: int
    date_time: tuple[int, int, int, int, int, int]
    external_attr: int
    create_system: int
    create_version: int
    extract_version: int
    offset: int


@dataclass(frozen=True)
class CopiedEntry:
    """A member whose central record is copied as stored, with its new local header offset."""

    name: str
    central: bytes
    offset: int


class StoredRecord(Protocol):
    @property
    def filename(self) -> str: ...

    @property
    def central(self) -> bytes: ...


def dos_datetime(date_time: tuple[int, ...]) -> tuple[int, int]:
    year, month, day, hour, minute, second = date_time
    year = max(1980, year)
    return (year - 1980) << 9 | month << 5 | day, hour << 11 | minute << 5 | second // 2


def member_spans(archive: zipfile.ZipFile | StoredZip, size: int) -> dict[str, tuple[int, int]]:
    """Each member's local record (header, data, descriptor) as a (start, end) byte range."""
    listed: list[zipfile.ZipInfo | StoredMember] = [*archive.infolist()]
    infos = sorted(listed, key=lambda i: i.header_offset)
    central_start = archive.start_dir
    spans = {}
    for index, info in enumerate(infos):
        end = infos[index + 1].header_offset if index + 1 < len(infos) else central_start
        if info.file_size >= LIMIT or info.compress_size >= LIMIT or end > LIMIT:
            raise ZipFormatError(f"member {info.filename} needs zip64, which the overlay writer does not support")
        spans[info.filename] = (info.header_offset, end)
    if central_start > size:
        raise ZipFormatError("central directory beyond the end of the file")
    return spans


class RawZipWriter:
    """Append members to `out`, either raw-copied from another zip or freshly deflated.

    Raw byte ranges are copied by a thread of their own (`Copier`) while the caller goes on: the offsets
    of everything are known when a member is added, so the copy of a 300 MB wheel's unchanged members runs
    beside the Python work of writing the rest (RECORD, dist-info, the central directory) instead of before
    it. Every write has its offset (`os.pwrite`, `copy_file_range` with both offsets), none uses the file
    position. Use it as a context manager: leaving the block stops and joins the copier (before the caller
    closes or unlinks the files it copies between); `close()` writes the central directory and waits for it.
    """

    def __init__(self, out: BinaryIO, *, speculation: Speculation | None = None) -> None:
        self.out = out
        out.flush()
        self._fd = out.fileno()
        self._end = out.tell()  # where the next member goes: what is written or queued ends here
        self.entries: list[Entry | CopiedEntry] = []
        self.names: set[str] = set()
        self._pending: tuple[BinaryIO, int, int] | None = None  # (source, start, end) not yet queued
        self._copier: Copier | None = None
        # The work up to `settle()` (the copy plan, `speculate.Job`s); with a speculation it is held back until then.
        self.plan: list[Job] = []
        self._planning = True
        self._speculation = speculation
        self._held: list[tuple[BinaryIO | None, Job]] = []

    def __enter__(self) -> RawZipWriter:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if self._copier is not None:
            self._copier.stop(cancel=kind is not None)
            self._copier = None

    def _add(self, entry: Entry | CopiedEntry) -> None:
        if entry.name in self.names:
            raise ZipFormatError(f"duplicate member {entry.name}")
        self.names.add(entry.name)
        self.entries.append(entry)

    def copy_raw(self, source: BinaryIO, info: zipfile.ZipInfo | StoredRecord, span: tuple[int, int]) -> None:
        """Carry a member over as stored: its local record is copied byte for byte.

        With the central record as stored (`zipread.StoredMember`), that too is kept, only its offset
        changed. Consecutive members of the source are copied as one byte range (see `flush_raw`).
        """
        offset = self._end
        central = getattr(info, "central", None)
        if central is not None:
            self._add(CopiedEntry(info.filename, central, offset))
        else:  # a zipfile.ZipInfo
            info = cast("zipfile.ZipInfo", info)
            self._add(
                Entry(
                    info.filename,
                    info.CRC,
                    info.compress_size,
                    info.file_size,
                    info.compress_type,
                    info.flag_bits,
                    info.date_time,
                    info.external_attr,
                    info.create_system,
                    info.create_version,
                    info.extract_version,
                    offset,
                )
            )
        if self._pending is not None and self._pending[0] is source and self._pending[2] == span[0]:
            self._pending = (source, self._pending[1], span[1])
        else:
            self.flush_raw()
            self._pending = (source, span[0], span[1])
        self._end = offset + span[1] - span[0]

    def flush_raw(self) -> None:
        """Hand the pending run of raw members to the copier (it starts copying at once)."""
        if self._pending is not None:
            source, start, end = self._pending
            self._pending = None
            self._run(source, ("copy", start, end - start, self._end - (end - start)))

    def _write_at_end(self, data: bytes) -> int:
        offset = self._end
        self._run(None, ("write", data, offset))
        self._end += len(data)
        return offset

    def _run(self, source: BinaryIO | None, job: Job) -> None:
        if self._planning:
            self.plan.append(job)
            if self._speculation is not None:
                self._held.append((source, job))
                return
        if job[0] == "copy":
            assert source is not None
            if self._copier is None:
                self._copier = Copier(self._fd)
            self._copier.submit(source, *cast("tuple[int, int, int]", job[1:]))
        elif self._copier is not None:  # after the copies queued before it: the file is written front to back
            self._copier.submit_write(*cast("tuple[bytes, int]", job[1:]))
        else:
            pwrite_all(self._fd, *cast("tuple[bytes, int]", job[1:]))

    def settle(self, source: BinaryIO) -> bool:
        """End the plan (what was added so far, raw copies from `source`); with a speculation, take it over
        if it is doing exactly that work into a file of its own, else cancel it and do the work here.

        Taken over, the writer goes on in the speculation's file (`self.out`): the caller renames that one."""
        self.flush_raw()
        speculation, self._speculation = self._speculation, None
        held, self._held = self._held, []
        self._planning = False
        if speculation is None:
            return False
        if speculation.matches(self.plan, source):
            self.out, self._copier = speculation.hand_over()
            self._fd = self.out.fileno()
            return True
        speculation.discard()
        for job_source, job in held:
            self._run(job_source, job)
        return False

    def write(
        self, name: str, data: bytes, *, date_time: tuple[int, int, int, int, int, int], mode: int = 0o644
    ) -> None:
        self.flush_raw()
        # Level 1: three times as fast as the default on the ~700 KB a build writes, for ~5% more bytes.
        compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
        compressed = compressor.compress(data) + compressor.flush()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        encoded = name.encode("utf-8")
        flags = 0x800 if not encoded.isascii() else 0
        date, time = dos_datetime(date_time)
        header = LOCAL_HEADER.pack(
            LOCAL_SIG, 20, flags, ZIP_DEFLATED, time, date, crc, len(compressed), len(data), len(encoded), 0
        )
        offset = self._write_at_end(header + encoded + compressed)
        self._add(
            Entry(
                name,
                crc,
                len(compressed),
                len(data),
                ZIP_DEFLATED,
                flags,
                date_time,
                (0o100000 | mode) << 16,
                3,
                20,
                20,
                offset,
            )
        )

    def close(self) -> None:
        """Write the central directory, wait for the copier, and leave the file position at the end."""
        self.flush_raw()
        central_start = self._end
        if len(self.entries) > 0xFFFF or central_start > LIMIT:  # every offset is below central_start
            raise ZipFormatError("archive needs zip64, which the overlay writer does not support")
        central: list[bytes] = []
        for entry in self.entries:
            if isinstance(entry, CopiedEntry):
                # The offset is the header's last field (bytes 42-46); name, extra and comment follow as stored.
                central.append(entry.central[:42] + entry.offset.to_bytes(4, "little") + entry.central[46:])
                continue
            encoded = entry.name.encode("utf-8")
            date, time = dos_datetime(entry.date_time)
            # Flags are carried as stored (a data-descriptor bit stays valid: the descriptor was copied too).
            central.append(
                CENTRAL_HEADER.pack(
                    CENTRAL_SIG,
                    entry.create_system << 8 | entry.create_version,
                    entry.extract_version,
                    entry.flags,
                    entry.method,
                    time,
                    date,
                    entry.crc,
                    entry.compress_size,
                    entry.file_size,
                    len(encoded),
                    0,
                    0,
                    0,
                    0,
                    entry.external_attr,
                    entry.offset,
                )
                + encoded
            )
        directory = b"".join(central)
        end = END_RECORD.pack(END_SIG, 0, 0, len(self.entries), len(self.entries), len(directory), central_start, 0)
        self._write_at_end(directory + end)
        if self._copier is not None:  # kept until it stopped: interrupted in the join, leaving the block cancels it
            self._copier.stop(cancel=False)
            self._copier = None
        self.out.seek(self._end)
