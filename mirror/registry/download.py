"""Blob downloads into a partial file: resumable, bounded by what the source declares, in ranges.

The pull's work dir is its resume point, so a download continues a partial
file with a Range request, is cut one chunk past the descriptor's size, is
cut and resumed when slower than the settings' min_rate, and ends once
give_up_after seconds pass without a byte. Large blobs may come as parallel
ranges, and a connection left with nothing to do near the end of a pull takes
over half of what the largest range has left; each range is resumable in a
file of its own (pieces.py), and the blob is joined and hashed in order.
A pull's downloads wait for a worker and their turn in unfinished.py.
Bodies are kept as sent, never decoded: the digest is over the stored bytes.
A blob small enough for the work dir's pack (bundle/store.py) comes whole into
memory instead (``SmallDownload``): no partial file, no ranges.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time
from pathlib import Path
from typing import AsyncIterator, Callable

import anyio
import httpx

from ..errors import IntegrityError, RegistryError
from ..model.numbers import ascii_int
from ..model.oci import digest_hex
from .answers import content_encoding
from .auth import pull_scope
from .pieces import CHUNK_SIZE, SPLIT_MIN, Piece, Pieces, hash_file
from .transport import RateGuard, Stalled, Transport, describe
from .unfinished import Unfinished

SEGMENTED_MIN = 32 << 20  # blobs from this size on may be fetched as parallel ranges
RANGE_SIZE = 8 << 20  # about how long each of those ranges is, up to the ``segments`` asked for


class _NoRanges(Exception):
    """The registry answered a range request with the whole body or another range."""


class Downloads:
    """The blob downloads of one registry, over its transport."""

    def __init__(self, transport: Transport):
        self.transport = transport
        self.ranges_refused = False  # the registry answered a range with something else: no more ranges asked

    @contextlib.asynccontextmanager
    async def open(self, repository: str, digest: str,
                   size: int | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes as an async iterator of chunks as they arrive (at most ~1 MiB each over
        wire.py: not re-chunked, which would copy every byte once more); the caller hashes them.

        A body past the declared ``size`` or slower than the settings'
        ``min_rate`` fails the transfer (IntegrityError, RegistryError).

        The open stream holds a place in this client's window of transfers
        until the block exits: copying within one registry, use a separate
        client for the writes, or they can wait forever for a place.
        """
        what = f"blob {digest} of {self.transport.host}/{repository}"
        response = await self.transport.request("GET", f"/v2/{repository}/blobs/{digest}",
                                                 scopes=[pull_scope(repository)], stream=True, follow=True,
                                                 what=what)
        try:
            if response.status_code != 200:
                raise await self.transport.failure(response, what)

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in _bounded(response, self.transport, size, what):
                        yield chunk
                except (httpx.TransportError, Stalled) as exc:
                    raise RegistryError(f"{what}: the connection failed mid-transfer ({describe(exc)})") from exc

            yield chunks()
        finally:
            await response.aclose()

    async def download(self, repository: str, digest: str, partial: Path, *, size: int | None = None,
                       progress: Callable[[int], None] | None = None, segments: int = 1,
                       unfinished: Unfinished | None = None) -> None:
        """Stream a blob into ``partial``, resuming from what it holds; verify its sha256.

        With ``segments`` > 1, a blob of SEGMENTED_MIN bytes or more is fetched
        as that many ranges at once: one capped connection would otherwise set
        the pace of the largest layers. While it downloads, the blob is in
        ``unfinished``, where a connection with nothing else to do may take
        over half of what a range has left (``Unfinished.help``). Ranges are
        pieces on disk, each resumable (pieces.py), joined and hashed in order
        at the end. A registry that answers a range with the whole body, or
        with another range, gets one stream instead, and no ranges after.

        ``size`` is what the descriptor declares: a body going past it is cut
        there, so a lying source costs at most one chunk more than declared.
        A body slower than the settings' ``min_rate`` is cut and resumed;
        attempts stop once ``give_up_after`` seconds pass without a byte.
        ``progress(n)`` gets the bytes as they arrive over the network (bytes
        already on disk are not reported). On a digest mismatch the partial
        file is deleted, so the next run downloads afresh.
        """
        digest_hex(digest)
        if unfinished is not None:
            await unfinished.turn(self.transport, size or 0, small=False)
        cuts = []
        if size is not None and segments > 1 and size >= SEGMENTED_MIN and not self.ranges_refused:
            cuts = _cuts(size, min(segments, -(-size // RANGE_SIZE)))
        blob = _Download(self, repository, digest, Pieces.resume(Path(partial), size, cuts), progress)
        first = blob.pieces.pieces[0]
        if first.held:
            await anyio.to_thread.run_sync(hash_file, first.file, blob.hasher)
        if unfinished is not None:
            unfinished.add(blob)
        try:
            await blob.fetch()
        finally:
            if unfinished is not None:
                unfinished.discard(blob)
        if len(blob.pieces.pieces) > 1:
            actual = await anyio.to_thread.run_sync(blob.pieces.join, blob.hasher)
        else:
            actual = "sha256:" + blob.hasher.hexdigest()
        if actual != digest:
            blob.forget()
            raise IntegrityError(f"{blob.what}: the downloaded bytes hash to {actual}{_as_sent(blob.encodings)}; "
                                 "the partial download was deleted, run again to fetch it afresh")

    async def resume_or_give_up(self, attempt: int, last_progress: float, cut: Exception, what: str,
                                then: str = "run again to resume from the partial file") -> None:
        """A body cut mid-way (dropped, or below min_rate): wait and resume, or give up when the
        retries are spent or no byte came for give_up_after seconds (the error ends with ``then``)."""
        settings = self.transport.settings
        if attempt > settings.retries or time.monotonic() - last_progress >= settings.give_up_after:
            raise RegistryError(f"{what}: the transfer kept failing mid-download ({describe(cut)}); {then}") from cut
        await anyio.sleep(self.transport.delay(attempt - 1, None))


class _Download:
    """One blob coming in pieces: the first (the partial file) hashed as it arrives, the rest at the join."""

    small = False  # Unfinished: not held whole in memory

    def __init__(self, downloads: Downloads, repository: str, digest: str, pieces: Pieces,
                 progress: Callable[[int], None] | None):
        self.downloads, self.transport, self.pieces, self.progress = downloads, downloads.transport, pieces, progress
        self.what = f"blob {digest} of {self.transport.host}/{repository}"
        self.url, self.scopes = f"/v2/{repository}/blobs/{digest}", [pull_scope(repository)]
        self.hasher = hashlib.sha256()  # over the first piece, as it is written
        self.encodings: set[str] = set()  # Content-Encodings the answers named: kept as sent, named if the hash fails
        self.error: Exception | None = None  # the first piece to fail stops the others
        self._running: set[anyio.CancelScope] = set()
        self.unfinished: Unfinished | None = None  # where idle connections may find this download

    async def fetch(self) -> None:
        """Every piece, at once; then the pieces helpers took. On a refused range, one stream instead."""
        await self._fetch_all()
        if isinstance(self.error, _NoRanges):
            self.downloads.ranges_refused = True
            self.error = None
            self.pieces.discard()
            first = self.pieces.pieces[0]  # asked for from byte 0 without a Range: what this source does right
            first.end, first.held, first.done = self.pieces.size, 0, anyio.Event()
            await self._fetch_all()
        if isinstance(self.error, IntegrityError):
            self.forget()
        if self.error is not None:
            raise self.error

    def splittable(self) -> bool:
        return self.error is None and not self.downloads.ranges_refused and self.pieces.most_left() >= SPLIT_MIN

    async def help(self) -> bool:
        """Split the piece with the most left and fetch its second half here; False when there is none."""
        try:
            piece = self.pieces.split() if self.splittable() else None
        except OSError:  # the work dir took no new piece file: the piece goes on as it was
            return False
        if piece is None:
            return False
        await self._run(piece)
        return True

    def forget(self) -> None:
        """Delete what is on disk of the blob: what a lying source sent, or bytes not matching the digest."""
        self.pieces.discard()
        self.pieces.partial.unlink(missing_ok=True)

    async def _fetch_all(self) -> None:
        if len(self.pieces.pieces) == 1:  # most blobs: no task group to pay for
            await self._run(self.pieces.pieces[0])
        else:
            async with anyio.create_task_group() as group:
                for piece in self.pieces.pieces:
                    group.start_soon(self._run, piece)
        while waiting := next((p for p in self.pieces.pieces if not p.done.is_set()), None):
            await waiting.done.wait()  # taken by a helper

    async def _run(self, piece: Piece) -> None:
        with anyio.CancelScope() as scope:
            self._running.add(scope)
            try:
                await self._fetch_piece(piece)
            except Exception as exc:  # a MirrorError, a refused range, the work dir's OSError
                if self.error is None:
                    self.error = exc
                    for running in self._running:
                        running.cancel()
            finally:
                self._running.discard(scope)
                piece.done.set()
                if self.unfinished is not None:
                    self.unfinished.changed()

    async def _fetch_piece(self, piece: Piece) -> None:
        """Fill ``piece`` from where it stands, resuming after drops; its end may move down meanwhile (a split)."""
        pieces, size, what = self.pieces, self.pieces.size, self.what
        last_progress = time.monotonic()
        for attempt in itertools.count(1):
            if piece.left == 0:
                return
            position, to_the_end = piece.position, piece.end == size
            if position == 0 and to_the_end:
                headers, asked_end = {}, size  # the whole blob
            else:
                headers = {"Range": f"bytes={position}-" + ("" if to_the_end else str(piece.end - 1))}
                asked_end = size if to_the_end else piece.end
            response = await self.transport.request("GET", self.url, scopes=self.scopes, headers=headers,
                                                    stream=True, follow=True, what=what)
            try:
                status = response.status_code
                if status == 416 and position and size is None:
                    return  # nothing after what we hold: the hash check decides
                if status == 206 and headers and _range_start(response) == position:
                    mode = "ab"
                elif status == 200 and not headers:
                    mode, self.hasher = "wb", hashlib.sha256()
                elif status == 200 or (status == 206 and headers):  # a range answered with all, or another
                    if len(pieces.pieces) > 1:
                        raise _NoRanges()
                    if status == 206:  # resuming the one piece: the partial file is kept for the next run
                        raise await self.transport.failure(response, what)
                    mode, piece.held, self.hasher = "wb", 0, hashlib.sha256()  # all of it again
                else:
                    raise await self.transport.failure(response, what)
                _note_encoding(response, self.encodings)
                hasher = self.hasher if piece.start == 0 else None
                guard = RateGuard(self.transport.settings)
                # Chunks as they arrive (so a drop loses nothing), written in ~1 MiB syscalls.
                with open(piece.file, mode, buffering=CHUNK_SIZE) as out:
                    async for chunk in response.aiter_raw():
                        if asked_end is not None and piece.position + len(chunk) > asked_end:
                            raise IntegrityError(f"{what}: {self.transport.host} " + (
                                f"sent more than the {size} bytes its descriptor declares; stopped reading there"
                                if asked_end == size else "answered a range with more bytes than asked for"))
                        if piece.end is not None and piece.position + len(chunk) > piece.end:
                            chunk = chunk[:piece.end - piece.position]  # split meanwhile: the rest is a helper's
                        out.write(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                        piece.held += len(chunk)
                        last_progress = time.monotonic()
                        guard.feed(len(chunk))
                        if self.progress:
                            self.progress(len(chunk))
                        if piece.left == 0 and piece.end != asked_end:
                            break
                if piece.left and piece.end != size:  # a range cut short: ask for the rest
                    raise httpx.RemoteProtocolError("the body ended before the range did")
                return  # to the blob's end: a body short of the declared size fails the hash check
            except (httpx.TransportError, Stalled) as exc:
                await self.downloads.resume_or_give_up(attempt, last_progress, exc, what)
            finally:
                await response.aclose()


class SmallDownload:
    """A blob small enough to come whole into memory (the work dir packs it: bundle/store.py PACKED_MAX).

    Checked as a download into a file is: cut one chunk past the declared
    size, cut and retried when slower than min_rate, given up after
    give_up_after seconds without a byte, its sha256 checked. It has no
    partial file and asks for no range: a body cut mid-way starts again.
    It waits in ``Unfinished``'s line of small blobs and goes in the
    registry's window of small blobs (registry/settings.py), and counts among
    the downloads in progress, with nothing for an idle connection to take over.
    """

    small = True  # Unfinished: held whole in memory until it is in

    def __init__(self, downloads: Downloads, repository: str, digest: str, size: int,
                 progress: Callable[[int], None] | None):
        digest_hex(digest)
        self.downloads, self.transport, self.digest, self.size = downloads, downloads.transport, digest, size
        self.progress = progress
        self.what = f"blob {digest} of {self.transport.host}/{repository}"
        self.url, self.scopes = f"/v2/{repository}/blobs/{digest}", [pull_scope(repository)]
        self.unfinished: Unfinished | None = None  # set by Unfinished.add

    def splittable(self) -> bool:
        return False

    async def fetch(self, unfinished: Unfinished | None) -> bytes:
        """The blob's bytes, once they hash to its digest."""
        if unfinished is not None:
            await unfinished.turn(self.transport, self.size, small=True)
            unfinished.add(self)  # counted as a download in progress, with nothing to split
        try:
            data, encodings = await self._body()
        finally:
            if unfinished is not None:
                unfinished.discard(self)
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != self.digest:
            raise IntegrityError(f"{self.what}: the downloaded bytes hash to {actual}{_as_sent(encodings)}; "
                                 "nothing was kept, run again to fetch it afresh")
        return data

    async def _body(self) -> tuple[bytes, set[str]]:
        """The whole body and the Content-Encodings its answer named; a body cut mid-way is asked for again."""
        attempt, last_progress = 0, time.monotonic()
        while True:
            attempt += 1
            response = await self.transport.request("GET", self.url, scopes=self.scopes, stream=True, follow=True,
                                                    small_blob=True, what=self.what)
            try:
                if response.status_code != 200:
                    raise await self.transport.failure(response, self.what)
                chunks: list[bytes] = []
                async for chunk in _bounded(response, self.transport, self.size, self.what):
                    chunks.append(chunk)
                    last_progress = time.monotonic()
                if self.progress:
                    self.progress(sum(map(len, chunks)))  # once whole: a body cut short is not counted twice
                encodings: set[str] = set()
                _note_encoding(response, encodings)
                return b"".join(chunks), encodings
            except (httpx.TransportError, Stalled) as exc:
                await self.downloads.resume_or_give_up(attempt, last_progress, exc, self.what, "run again")
            finally:
                await response.aclose()


async def _bounded(response: httpx.Response, transport: Transport, size: int | None,
                  what: str) -> AsyncIterator[bytes]:
    """A blob's body as stored (the digest is over these bytes), cut one chunk past the declared ``size``
    (IntegrityError) and when slower than the settings' min_rate (Stalled)."""
    guard, received = RateGuard(transport.settings), 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if size is not None and received > size:
            raise IntegrityError(f"{what}: {transport.host} sent more than the {size} bytes its descriptor declares")
        guard.feed(len(chunk))
        yield chunk


def _as_sent(encodings: set[str]) -> str:
    """What a failed hash check says of the Content-Encodings the answers named (none: nothing)."""
    if not encodings:
        return ""
    return (f" as sent with Content-Encoding {', '.join(sorted(encodings))} (mirror asks for identity "
            "and undoes no encoding: something between it and the storage compresses)")


def _range_start(response: httpx.Response) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    value = response.headers.get("content-range", "")
    unit, _, spec = value.partition(" ")
    return ascii_int(spec.split("-", 1)[0]) if unit == "bytes" else None


def _cuts(size: int, count: int) -> list[int]:
    """Where ``count`` ranges of about equal length start after the first, on MiB boundaries."""
    step = -(-size // count // CHUNK_SIZE) * CHUNK_SIZE
    return list(range(step, size, step))


def _note_encoding(response: httpx.Response, encodings: set[str]) -> None:
    encoding = content_encoding(response)
    if encoding:
        encodings.add(encoding[:40])


