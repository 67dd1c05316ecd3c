"""sha256 of a file that several threads write in pieces, in any order, without a second pass over it.

Parallel range downloads write a file out of order, but a digest is of the
bytes in order. ``InOrderHash`` hashes each byte once, in file order, as soon
as every byte before it is written: a piece that lands where the hashed part
ends is hashed from memory as it is written; one further on waits, and is
read back from the file (the page cache, just written) once the gap before
it closes. The first range of a download is thus hashed as it arrives, and
the others as soon as those before them are complete, not in a pass over the
whole file after the last byte.
"""

from __future__ import annotations

import hashlib
import os
import threading

READ_BACK = 1 << 20


class InOrderHash:
    def __init__(self, fd: int):
        self.fd = fd  # the file the pieces are written to, open for reading too
        self.hashed = 0  # every byte before this is written and hashed
        self._hasher = hashlib.sha256()
        self._ahead: dict[int, int] = {}  # start -> end of written spans past ``hashed``, not hashed yet
        self._ends: dict[int, int] = {}  # the same spans, end -> start: a piece that follows one extends it
        self._lock = threading.Lock()

    def wrote(self, offset: int, piece: bytes | memoryview) -> None:
        """``piece`` is in the file at ``offset`` now (each byte is reported once)."""
        end = offset + len(piece)
        with self._lock:
            if offset == self.hashed:
                self._hasher.update(piece)
                self.hashed = end
            else:
                start = self._ends.pop(offset, offset)
                self._ahead[start], self._ends[end] = end, start
            while (span_end := self._ahead.pop(self.hashed, None)) is not None:
                del self._ends[span_end]
                self._read_back(span_end)

    def _read_back(self, end: int) -> None:
        while self.hashed < end:
            chunk = os.pread(self.fd, min(READ_BACK, end - self.hashed), self.hashed)
            if not chunk:
                raise OSError(f"file ended at {self.hashed} bytes, before the {end} written to it")
            self._hasher.update(chunk)
            self.hashed += len(chunk)

    def hexdigest(self) -> str:
        """The digest of the first ``hashed`` bytes: the whole file once every piece is written."""
        with self._lock:
            return self._hasher.hexdigest()
