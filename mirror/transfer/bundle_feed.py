"""Read a bundle once and feed its blobs and manifests to a Delivery, within a byte window.

The tar is read sequentially in a worker thread. A blob the target still
needs is re-hashed while it is spooled (memory for small ones, a temp file
otherwise, all within ``window`` bytes so disk and memory stay bounded) and
uploaded by the event loop while reading goes on; a temp file's upload
starts with its first bytes and follows the writing. A blob larger than the
window is streamed straight from the bundle (one attempt). A manifest is
handed over as soon as it is read.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import anyio.from_thread
import anyio.to_thread

from ..bundle.reader import BundleEntry, BundleReader
from ..errors import DiskFull, IntegrityError, MirrorError
from ..model.oci import Manifest
from ..registry.download import CHUNK_SIZE as CHUNK
from ..registry.upload import BlobSource
from ..units import MIB
from .fanout import FanOut, one_shot

IN_MEMORY_LIMIT = 1 * MIB  # blobs up to this size are spooled in memory ...
MEMORY_BUDGET = 64 * MIB  # ... while the in-memory spool stays under this


class ByteWindow:
    """A weighted semaphore over bytes: spooling waits until there is room."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._condition = anyio.Condition()

    async def acquire(self, amount: int) -> None:
        async with self._condition:
            while self.used and self.used + amount > self.capacity:
                await self._condition.wait()
            self.used += amount

    async def release(self, amount: int) -> None:
        async with self._condition:
            self.used -= amount
            self._condition.notify_all()


class FileSpool:
    """A blob's temp file, uploaded while the reader thread is still writing it.

    The reader thread creates it, then calls ``write`` and ``finish``. Every
    upload attempt reads the file from its start and waits for bytes not
    written yet, so a retry still sends the whole blob; if reading the blob
    failed (a corrupt blob), the attempt raises that error.
    """

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        self.abandoned = False  # the uploads are over: the reader can stop writing
        self._lock = threading.Lock()
        self._written = 0
        self._error: MirrorError | None = None
        self._waiter: anyio.Event | None = None
        self._handle = open(path, "wb")  # exists before any upload opens it

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self._handle.flush()
        self._advance(len(chunk))

    def finish(self, error: MirrorError | None = None) -> None:
        self._handle.close()
        if error is not None:
            self._advance(error=error)

    def _advance(self, written: int = 0, error: MirrorError | None = None) -> None:
        with self._lock:
            self._written += written
            self._error = self._error or error
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            anyio.from_thread.run_sync(waiter.set)

    async def _available(self, offset: int) -> int:
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                if self._written > offset or self._written == self.size:
                    return self._written
                self._waiter = waiter = self._waiter or anyio.Event()
            await waiter.wait()

    async def _chunks(self) -> AsyncIterator[bytes]:
        with open(self.path, "rb") as handle:
            offset = 0
            while offset < self.size:
                available = await self._available(offset)
                chunk = handle.read(min(CHUNK, available - offset))
                offset += len(chunk)
                yield chunk

    @property
    def source(self) -> BlobSource:
        return self._chunks

    def discard(self) -> None:
        self.abandoned = True
        self.path.unlink(missing_ok=True)


class BundleFeed:
    """One pass over ``reader`` delivering the blobs the targets want and every planned manifest (a pipeline
    feed: pipeline.py)."""

    def __init__(self, reader: BundleReader, window: int, spool_in: Path | None):
        self.reader = reader
        self.window_size = window
        self.window = ByteWindow(window)
        self.memory = ByteWindow(MEMORY_BUDGET)
        self.spool_in = spool_in  # --spool-dir; None: $TMPDIR
        self.spool_dir = Path()  # a directory of this run's own in ``spool_in``, while running
        self.group: Any = None
        self.delivery: Any = None  # the FanOut fed, once running
        self.to_upload: set[str] = set()

    def size(self, digest: str) -> int:
        return self.reader.manifest.blobs.get(digest, 0)

    async def run(self, sink: FanOut) -> None:
        self.delivery = delivery = sink
        self.to_upload = sink.wanted
        self.spool_dir = Path(tempfile.mkdtemp(prefix="mirror-push-", dir=self.spool_in))
        try:
            async with anyio.create_task_group() as group:
                self.group = group
                try:
                    await anyio.to_thread.run_sync(self._read_all)
                except MirrorError as exc:
                    delivery.fatal = exc
                bundle = self.reader.path
                delivery.fail_unreached(
                    lambda digest: IntegrityError(f"{digest} is not in {bundle} (truncated or incomplete)"))
        finally:
            shutil.rmtree(self.spool_dir, ignore_errors=True)

    def _read_all(self) -> None:
        """Runs in a worker thread: the tar is read sequentially, work goes to the loop."""
        for entry in self.reader.entries():
            if self.delivery.fatal is not None:
                return  # the registry is gone: reading on would only queue more failures
            digest = entry.digest
            if digest is None:
                continue
            if digest in self.delivery.presence.manifest_repos:
                manifest = Manifest.from_bytes(entry.read(), None)
                anyio.from_thread.run_sync(self.delivery.manifest_arrived, manifest, self.group)
            elif digest in self.to_upload:
                self._take_blob(entry)

    def _take_blob(self, entry: BundleEntry) -> None:
        digest, size = entry.digest, entry.size
        assert digest is not None
        if size > self.window_size:
            self._stream_through(entry)
            return
        anyio.from_thread.run(self.window.acquire, size)
        if size <= IN_MEMORY_LIMIT and self.memory.used + size <= MEMORY_BUDGET:
            self._spool_in_memory(entry)
        else:
            self._spool_to_file(entry)

    def _spool_in_memory(self, entry: BundleEntry) -> None:
        """Copy a small blob out of the stream, verified, then hand it to an upload."""
        digest, size = entry.digest, entry.size
        assert digest is not None
        anyio.from_thread.run(self.memory.acquire, size)
        try:
            data = b"".join(entry.chunks())
        except MirrorError as exc:
            anyio.from_thread.run(self.memory.release, size)
            anyio.from_thread.run(self.window.release, size)
            anyio.from_thread.run_sync(self.delivery.presence.fail_blob, digest, exc)
            return
        self.delivery.claim(digest)
        anyio.from_thread.run_sync(self.group.start_soon, self._upload, digest, data)

    def _spool_to_file(self, entry: BundleEntry) -> None:
        """Copy a blob into a temp file, verifying its digest as it goes; its upload starts at once."""
        digest = entry.digest
        assert digest is not None
        try:
            spool = FileSpool(self.spool_dir / digest.split(":", 1)[1], entry.size)
        except OSError as exc:
            anyio.from_thread.run(self.window.release, entry.size)
            raise self._spool_error(exc) from None
        self.delivery.claim(digest)
        anyio.from_thread.run_sync(self.group.start_soon, self._upload, digest, spool)
        error: MirrorError | None = None
        try:
            for chunk in entry.chunks():
                if spool.abandoned:
                    break  # the upload is over (it failed): the reader skips the rest
                spool.write(chunk)
        except MirrorError as exc:
            error = exc
        except OSError as exc:
            error = self._spool_error(exc)
            raise error from None
        except BaseException:
            error = MirrorError(f"blob {digest}: reading the bundle was interrupted")
            raise
        finally:
            spool.finish(error)

    def _spool_error(self, exc: OSError) -> MirrorError:
        """Named by the directory the user chose (--spool-dir, else $TMPDIR), not the temp dir inside it."""
        where = self.spool_dir.parent
        said = (f"cannot write the push spool in {where} ({exc.strerror or exc}); free some space there, or "
                "pass --spool-dir elsewhere or a smaller --window")
        return DiskFull.of(exc, said, str(where))

    def _stream_through(self, entry: BundleEntry) -> None:
        """A blob larger than the window: upload straight from the tar, one attempt."""
        digest = entry.digest
        assert digest is not None
        send, receive = anyio.create_memory_object_stream[Any](4)
        self.delivery.claim(digest)
        anyio.from_thread.run_sync(self.group.start_soon, self._upload_streamed, digest, entry.size, receive)
        with send:
            try:
                for chunk in entry.chunks():
                    anyio.from_thread.run(send.send, chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the upload gave up; the reader skips the rest of the entry
            except MirrorError as exc:
                try:
                    anyio.from_thread.run(send.send, exc)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass

    async def _upload(self, digest: str, spool: bytes | FileSpool) -> None:
        """Upload a spooled blob, then give its room in the window (and memory) back."""
        size, source = (len(spool), spool) if isinstance(spool, bytes) else (spool.size, spool.source)
        try:
            await self.delivery.place_blob(digest, size, source)
        finally:
            if isinstance(spool, bytes):
                await self.memory.release(size)
            else:
                spool.discard()
            await self.window.release(size)

    async def _upload_streamed(self, digest: str, size: int, receive: Any) -> None:
        with receive:
            await self.delivery.place_blob(digest, size, one_shot(digest, receive))
