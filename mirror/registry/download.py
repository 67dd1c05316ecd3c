"""Blob downloads into a partial file: resumable, bounded by what the source declares, in ranges.

The pull's work dir is its resume point, so a download continues a partial
file with a Range request, is cut one chunk past the descriptor's size, is
cut and resumed when slower than the settings' min_rate, and ends once
give_up_after seconds pass without a byte. Large blobs may come as parallel
ranges, each resumable in a file of its own, joined and hashed in order.
Bodies are kept as sent, never decoded: the digest is over the stored bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import anyio
import httpx

from ..errors import IntegrityError, RegistryError
from ..model.numbers import ascii_int
from ..model.oci import digest_hex
from .auth import pull_scope
from .transport import RateGuard, Stalled, Transport, content_encoding, describe

CHUNK_SIZE = 1 << 20
SEGMENTED_MIN = 32 << 20  # blobs from this size on may be fetched as parallel ranges


class _NoRanges(Exception):
    """The registry answered a range request with the whole body or another range."""


class Downloads:
    """The blob downloads of one registry, over its transport."""

    def __init__(self, transport: Transport):
        self._transport = transport

    @contextlib.asynccontextmanager
    async def open(self, repository: str, digest: str,
                   size: int | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes as an async iterator of chunks as they arrive (at most ~1 MiB each over
        wire.py: not re-chunked, which would copy every byte once more); the caller hashes them.

        A body past the declared ``size`` or slower than the settings'
        ``min_rate`` fails the transfer (IntegrityError, RegistryError).

        The open stream holds one of this client's ``max_connections`` slots
        until the block exits: copying within one registry, use a separate
        client for the writes, or they can wait forever for a slot.
        """
        what = f"blob {digest} of {self._transport.host}/{repository}"
        response = await self._transport.request("GET", f"/v2/{repository}/blobs/{digest}",
                                                 scopes=[pull_scope(repository)], stream=True, follow=True,
                                                 what=what)
        try:
            if response.status_code != 200:
                raise await self._transport.failure(response, what)

            async def chunks() -> AsyncIterator[bytes]:
                guard, received = RateGuard(self._transport.settings), 0
                try:
                    async for chunk in response.aiter_raw():  # as stored: the digest is over these
                        received += len(chunk)
                        if size is not None and received > size:
                            raise IntegrityError(f"{what}: {self._transport.host} sent more than the {size} bytes its "
                                                 "descriptor declares")
                        guard.feed(len(chunk))
                        yield chunk
                except (httpx.TransportError, Stalled) as exc:
                    raise RegistryError(f"{what}: the connection failed mid-transfer ({describe(exc)})") from exc

            yield chunks()
        finally:
            await response.aclose()


    async def download(self, repository: str, digest: str, partial: Path, *, size: int | None = None,
                       progress: Callable[[int], None] | None = None, segments: int = 1) -> None:
        """Stream a blob into ``partial``, resuming from what it holds; verify its sha256.

        With ``segments`` > 1, a blob of SEGMENTED_MIN bytes or more is fetched
        as that many ranges at once (each resumable in a file of its own,
        joined into ``partial`` and hashed in order at the end): one capped
        connection would otherwise set the pace of the largest layers. A
        registry that does not answer ranges gets one stream instead.

        ``size`` is what the descriptor declares: a body going past it is cut
        there, so a lying source costs at most one chunk more than declared.
        A body slower than the settings' ``min_rate`` is cut and resumed;
        attempts stop once ``give_up_after`` seconds pass without a byte.
        ``progress(n)`` gets the bytes as they arrive over the network (bytes
        already in ``partial`` are not reported). On a digest mismatch the
        partial file is deleted, so the next run downloads afresh.
        """
        digest_hex(digest)
        what = f"blob {digest} of {self._transport.host}/{repository}"
        url = f"/v2/{repository}/blobs/{digest}"
        partial = Path(partial)
        encodings: set[str] = set()  # Content-Encodings the answers named: kept as sent, named if the hash fails
        if size is not None and segments > 1 and size >= SEGMENTED_MIN:
            bounds = _segments(size, segments)
            if not partial.exists() or partial.stat().st_size <= bounds[0][1]:
                try:
                    actual = await self._download_segmented(url, what, repository, partial, bounds, progress,
                                                            encodings)
                except _NoRanges:
                    pass  # the whole body, as one stream, resuming from the first segment
                else:
                    _verdict(partial, digest, actual, what, encodings)
                    return
        hasher = hashlib.sha256()
        offset = await anyio.to_thread.run_sync(_hash_file, partial, hasher) if partial.exists() else 0
        if size is not None and offset > size:
            partial.unlink()
            offset, hasher = 0, hashlib.sha256()
        last_progress = time.monotonic()
        for drops in itertools.count(1):
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = await self._transport.request("GET", url, scopes=[pull_scope(repository)],
                                                     headers=headers, stream=True, follow=True, what=what)
            try:
                status = response.status_code
                if status == 416 and offset:
                    break  # nothing after what we hold: the hash check below decides
                if status == 206 and offset and _range_start(response) == offset:
                    mode = "ab"
                elif status == 200:
                    mode, offset, hasher = "wb", 0, hashlib.sha256()
                else:
                    raise await self._transport.failure(response, what)
                _note_encoding(response, encodings)
                guard = RateGuard(self._transport.settings)
                # Chunks as they arrive (so a drop loses nothing), written in ~1 MiB syscalls.
                with open(partial, mode, buffering=CHUNK_SIZE) as out:
                    async for chunk in response.aiter_raw():
                        out.write(chunk)
                        hasher.update(chunk)
                        offset += len(chunk)
                        last_progress = time.monotonic()
                        if size is not None and offset > size:
                            break
                        guard.feed(len(chunk))
                        if progress:
                            progress(len(chunk))
                if size is not None and offset > size:
                    partial.unlink(missing_ok=True)
                    raise IntegrityError(f"{what}: {self._transport.host} sent more than the {size} bytes its "
                                         "descriptor declares; stopped reading there")
                break
            except (httpx.TransportError, Stalled) as exc:
                await self._resume_or_give_up(drops, last_progress, exc, what)
            finally:
                await response.aclose()
        _verdict(partial, digest, "sha256:" + hasher.hexdigest(), what, encodings)

    async def _resume_or_give_up(self, attempt: int, last_progress: float, cut: Exception, what: str) -> None:
        """A body cut mid-way (dropped, or below min_rate): wait and resume, or give up when the
        retries are spent or no byte came for give_up_after seconds."""
        settings = self._transport.settings
        if attempt > settings.retries or time.monotonic() - last_progress >= settings.give_up_after:
            raise RegistryError(f"{what}: the transfer kept failing mid-download ({describe(cut)}); "
                                "run again to resume from the partial file") from cut
        await anyio.sleep(self._transport.delay(attempt - 1, None))

    async def _download_segmented(self, url: str, what: str, repository: str, partial: Path,
                                  bounds: list[tuple[int, int]], progress: Callable[[int], None] | None,
                                  encodings: set[str]) -> str:
        """Every range into its file (the first is ``partial``), concurrently; then joined into ``partial``.

        Returns the digest of the joined bytes, hashed in order as they are joined.
        """
        files = [partial] + [partial.with_name(f"{partial.name}.seg{k}") for k in range(1, len(bounds))]
        try:
            async with anyio.create_task_group() as group:
                for file, (start, end) in zip(files, bounds):
                    group.start_soon(self._fetch_range, url, what, repository, file, start, end, progress,
                                     encodings)
        except BaseException as exc:
            refusals = [e for e in getattr(exc, "exceptions", [exc]) if isinstance(e, _NoRanges)]
            if refusals:
                for file in files[1:]:
                    file.unlink(missing_ok=True)
                raise refusals[0] from None
            raise
        return await anyio.to_thread.run_sync(_join, partial, files[1:])

    async def _fetch_range(self, url: str, what: str, repository: str, file: Path, start: int, end: int,
                           progress: Callable[[int], None] | None, encodings: set[str]) -> None:
        """Bytes [start, end) of a blob into ``file``, resuming from what it holds (Range requests)."""
        have = file.stat().st_size if file.exists() else 0
        if start + have > end:
            file.unlink()
            have = 0
        last_progress = time.monotonic()
        for attempt in itertools.count(1):
            if start + have == end:
                return
            response = await self._transport.request(
                "GET", url, scopes=[pull_scope(repository)], stream=True, follow=True, what=what,
                headers={"Range": f"bytes={start + have}-{end - 1}"})
            try:
                if response.status_code == 200 or (response.status_code == 206
                                                   and _range_start(response) != start + have):
                    raise _NoRanges()
                if response.status_code != 206:
                    raise await self._transport.failure(response, what)
                _note_encoding(response, encodings)
                guard = RateGuard(self._transport.settings)
                with open(file, "ab", buffering=CHUNK_SIZE) as out:
                    async for chunk in response.aiter_raw():
                        if start + have + len(chunk) > end:
                            raise IntegrityError(f"{what}: {self._transport.host} answered a range with more bytes "
                                                 "than asked for")
                        out.write(chunk)
                        have += len(chunk)
                        last_progress = time.monotonic()
                        guard.feed(len(chunk))
                        if progress:
                            progress(len(chunk))
                if start + have < end:
                    raise httpx.RemoteProtocolError("the range ended early")
            except (httpx.TransportError, Stalled) as exc:
                await self._resume_or_give_up(attempt, last_progress, exc, what)
            finally:
                await response.aclose()


def _range_start(response: httpx.Response) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    value = response.headers.get("content-range", "")
    unit, _, spec = value.partition(" ")
    return ascii_int(spec.split("-", 1)[0]) if unit == "bytes" else None


def _hash_file(path: Path, hasher: Any) -> int:
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            hasher.update(chunk)
            size += len(chunk)
    return size


def _segments(size: int, count: int) -> list[tuple[int, int]]:
    """``count`` ranges [start, end) covering ``size`` bytes, cut on MiB boundaries."""
    step = -(-size // count // CHUNK_SIZE) * CHUNK_SIZE
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def _join(partial: Path, rest: list[Path]) -> str:
    """Append the later segments' files to the first, in order, removing each once appended.

    The bytes are hashed on the way (the first segment as it is, the rest as
    they are appended), so the joined blob is read once, not read again after.
    """
    hasher = hashlib.sha256()
    _hash_file(partial, hasher)
    with open(partial, "ab") as out:
        for segment in rest:
            with open(segment, "rb") as handle:
                while chunk := handle.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    out.write(chunk)
            segment.unlink()
    return "sha256:" + hasher.hexdigest()


def _note_encoding(response: httpx.Response, encodings: set[str]) -> None:
    encoding = content_encoding(response)
    if encoding:
        encodings.add(encoding[:40])


def _verdict(partial: Path, digest: str, actual: str, what: str, encodings: set[str]) -> None:
    """The downloaded bytes are the blob, or they are deleted and the run fails."""
    if actual != digest:
        partial.unlink(missing_ok=True)
        sent = (f" as sent with Content-Encoding {', '.join(sorted(encodings))} (mirror asks for identity and "
                "undoes no encoding: something between it and the storage compresses)" if encodings else "")
        raise IntegrityError(f"{what}: the downloaded bytes hash to {actual}{sent}; the partial "
                             "download was deleted, run again to fetch it afresh")
