"""The thread that copies byte ranges between files (`copy_file_range`) and writes bytes, at given offsets.

Apart from `zipraw` so that it loads with the standard library alone (no dataclasses, no struct): the console's
speculative copy (`toolkit.wheel.speculate`) starts one before the build's own imports.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing not loaded before the console's speculative copy starts (~5 ms)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

COPY_CHUNK = 64 << 20  # per call: a cancelled copy stops within one


class ZipFormatError(Exception):
    pass


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Copier:
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
                    pwrite_all(self._target, *job)
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
        pwrite_all(target, chunk, offset)
        remaining -= len(chunk)
        start += len(chunk)
        offset += len(chunk)
