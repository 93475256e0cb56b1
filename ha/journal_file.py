"""The file under pysyncobj's Raft journal, written with pwrite.

pysyncobj's FileJournal keeps its records in a ResizableFile: an mmap of
the file, doubled in size whenever a record would not fit. Every first
write to a page of that mapping is a page fault, so appending a log entry
costs the kernel a fault per 4 KiB: measured here, 436 us per 120 KB entry
(a batch of 40 pod-sized puts), where pwrite into the same file takes
61 us. Every master pays it for every entry, leader and followers alike.

JournalFile offers ResizableFile's interface (what FileJournal calls) over
pread/pwrite: the file's bytes are the same, so a data directory written
by either is read by the other. Durability is what it was: FileJournal
never flushed a record (the page cache holds it, as the mmap did, through
a kill -9 of the master); `_destroy` (a clean stop) fsyncs, as the mmap's
flush did.
"""

from __future__ import annotations

import os


class JournalFile:
    def __init__(
        self,
        # ResizableFile's parameters, by their names (the file grows as it
        # is written: no resizeFactor to apply).
        fileName: str,
        initialSize: int = 1024,
        resizeFactor: float = 2.0,
        defaultContent: bytes | None = None,
    ):
        self._fd = os.open(fileName, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size == 0 and defaultContent is not None:
            self.write(0, defaultContent)
        # ResizableFile never leaves a file shorter than this (zeros after
        # the header): keep the bytes the same either way.
        if os.fstat(self._fd).st_size < initialSize:
            os.ftruncate(self._fd, initialSize)

    def write(self, offset: int, values: bytes) -> None:
        view = memoryview(values)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def flush(self) -> None:
        os.fsync(self._fd)

    def _destroy(self) -> None:
        if self._fd < 0:
            return
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
