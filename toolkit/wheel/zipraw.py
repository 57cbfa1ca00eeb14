"""Writing zip archives member by member, copying unchanged members' compressed bytes verbatim.

The stock vLLM wheel is ~300 MB, almost all of it compiled `.so` that no patch
touches. Recompressing it would take a minute; copying the local records as raw
byte ranges (with `copy_file_range` where the kernel offers it) takes as long as
`cp`. Only new or changed members are deflated.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

if TYPE_CHECKING:
    import zipfile  # the types only: not loaded by an overlay build

    from toolkit.wheel.zipread import StoredMember, StoredZip

LOCAL_HEADER = struct.Struct("<4s5H3L2H")
CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")
END_RECORD = struct.Struct("<4s4H2LH")
LOCAL_SIG, CENTRAL_SIG, END_SIG = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
LIMIT = 0xFFFFFFFF
ZIP_DEFLATED = 8  # ZIP_DEFLATED
COPY_CHUNK = 64 << 20  # per call: a cancelled copy stops within one


class ZipFormatError(Exception):
    pass


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

    Raw byte ranges are copied by a thread of their own (`_Copier`) while the caller goes on: the offsets
    of everything are known when a member is added, so the copy of a 300 MB wheel's unchanged members runs
    beside the Python work of writing the rest (RECORD, dist-info, the central directory) instead of before
    it. Every write has its offset (`os.pwrite`, `copy_file_range` with both offsets), none uses the file
    position. Use it as a context manager: leaving the block stops and joins the copier (before the caller
    closes or unlinks the files it copies between); `close()` writes the central directory and waits for it.
    """

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        out.flush()
        self._fd = out.fileno()
        self._end = out.tell()  # where the next member goes: what is written or queued ends here
        self.entries: list[Entry | CopiedEntry] = []
        self.names: set[str] = set()
        self._pending: tuple[BinaryIO, int, int] | None = None  # (source, start, end) not yet queued
        self._copier: _Copier | None = None

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
            if self._copier is None:
                self._copier = _Copier(self._fd)
            self._copier.submit(source, start, end - start, self._end - (end - start))

    def _write_at_end(self, data: bytes) -> int:
        offset = self._end
        if self._copier is not None:  # after the copies queued before it: the file is written front to back
            self._copier.submit_write(data, offset)
        else:
            _pwrite_all(self._fd, data, offset)
        self._end += len(data)
        return offset

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


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class _Copier:
    """A thread copying byte ranges from sources into one file, and writing bytes, at the offsets given, in the
    order given (front to back: a write beyond what is copied yet would leave a hole that the copy then fills,
    costing ext4 more kernel time than appending).

    The file descriptors are duplicated, so closing the caller's files cannot hand their numbers to another
    file while a copy runs. An error is kept and raised by `stop`; `stop(cancel=True)` ends the copy early.
    """

    def __init__(self, target_fd: int) -> None:
        import queue  # only here: what the writer needs of a thread
        import threading

        self._target = os.dup(target_fd)
        self._sources: dict[int, int] = {}  # id of the caller's file -> our duplicate of its descriptor
        self._jobs: queue.SimpleQueue[tuple[int, int, int, int] | tuple[bytes, int] | None] = queue.SimpleQueue()
        self._cancelled = False
        self._fds_open = True
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zipraw-copy", daemon=True)
        self._thread.start()

    def submit(self, source: BinaryIO, start: int, length: int, offset: int) -> None:
        fd = self._sources.get(id(source))
        if fd is None:
            fd = self._sources[id(source)] = os.dup(source.fileno())
        self._jobs.put((fd, start, length, offset))

    def submit_write(self, data: bytes, offset: int) -> None:
        self._jobs.put((data, offset))

    def stop(self, *, cancel: bool) -> None:
        """Wait for the queued work (or, cancelled, its current chunk) and raise its error; again, a no-op."""
        self._cancelled |= cancel
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        fds, self._fds_open = (self._fds(), False) if self._fds_open else ([], False)
        for fd in fds:
            os.close(fd)
        error, self.error = self.error, None
        if error is not None and not cancel:
            raise error

    def _fds(self) -> list[int]:
        return [self._target, *self._sources.values()]

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if self._cancelled:
                    continue
                if len(job) == 2:
                    _pwrite_all(self._target, *job)
                else:
                    copy_range(*job[:3], self._target, job[3], lambda: self._cancelled)
        except BaseException as exc:  # raised in the caller's thread by stop()
            self.error = exc
            while self._jobs.get() is not None:  # the rest is not copied; stop() still ends the loop
                pass


def copy_range(
    source: int, start: int, length: int, target: int, offset: int, cancelled: Callable[[], bool] = lambda: False
) -> None:
    """Copy bytes [start, start+length) of file descriptor `source` to `target` at `offset` (positions unused)."""
    remaining = length
    if hasattr(os, "copy_file_range"):
        try:
            while remaining and not cancelled():
                copied = os.copy_file_range(source, target, min(remaining, COPY_CHUNK), start, offset)
                if copied == 0:
                    break
                remaining -= copied
                start += copied
                offset += copied
        except OSError:  # no copy_file_range between these files (another file system, an old kernel)
            pass
    while remaining and not cancelled():
        chunk = os.pread(source, min(remaining, COPY_CHUNK), start)
        if not chunk:
            raise ZipFormatError("unexpected end of the source archive")
        _pwrite_all(target, chunk, offset)
        remaining -= len(chunk)
        start += len(chunk)
        offset += len(chunk)
