"""HTTP for the kit: small documents whole (capped), items streamed into the work dir and hashed.

The client is the image lists' (lists/releases.py http_client: system CAs plus
--ca-file, HTTPS_PROXY honoured). Downloads ask for the bytes as stored
(``Accept-Encoding: identity``: a checksum is of the file, not of a
transfer encoding), at the registries' minimum rate (a source that drips
is cut), a large file in parallel ranges where its host takes them (a CDN
caps each connection: a K3s or RKE2 images tarball on one would take the
link's time several times over), go to a temporary file beside the store's blobs, and
enter the store under their digest only once it matched: a tampered or
truncated download leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx

from ..bundle.store import BlobStore
from ..errors import IntegrityError, MirrorError, UsageError
from ..inorder_hash import InOrderHash
from ..model.numbers import ascii_int
from ..registry.sender import IDENTITY
from ..registry.settings import RegistrySettings
from ..registry.transport import RateGuard, Stalled
from ..lists.releases import fetch_error, http_client

FIRST_RANGE = 8 << 20  # asked first; what follows, where the host takes ranges, comes as SEGMENTS at once
SEGMENTS = 8


class KitFetcher:
    """One HTTP client for a run's look-ups and downloads, shared by their threads: a download reuses the
    connection its item's look-up opened, instead of paying a TCP and TLS handshake (2-3 round trips) again."""

    def __init__(self, ca_file: Path | None = None, pace: RegistrySettings | None = None):
        self.ca_file = ca_file
        self.pace = pace or RegistrySettings()  # its min_rate over rate_window: a source that drips is cut
        self._shared: httpx.Client | None = None
        self._making = threading.Lock()

    def _guard(self, url: str, what: str) -> Callable[[int], None]:
        guard = RateGuard(self.pace)

        def feed(size: int) -> None:
            try:
                guard.feed(size)
            except Stalled as exc:
                raise MirrorError(f"{what}: {url} sends {exc}; given up") from None
        return feed

    @contextmanager
    def _client(self) -> Iterator[httpx.Client]:
        """The shared client, made on first use; closed with the fetcher (httpx's pool is thread-safe)."""
        with self._making:
            if self._shared is None:
                self._shared = http_client(self.ca_file, follow_redirects=True)
                weakref.finalize(self, self._shared.close)
        yield self._shared

    def document(self, url: str, what: str, cap: int) -> bytes:
        """The body of a 200 at ``url``: missing (404) or larger than ``cap`` is a usage error naming it."""
        body = bytearray()
        try:
            with self._client() as client, client.stream("GET", url, headers=IDENTITY) as response:
                _check_status(response, url, what)
                paced = self._guard(url, what)
                for chunk in response.iter_bytes():
                    paced(len(chunk))
                    body += chunk
                    if len(body) > cap:
                        raise UsageError(f"{what}: {url} serves more than {cap >> 10} KiB; refused")
        except httpx.HTTPError as exc:
            raise fetch_error(exc, url, what) from None
        return bytes(body)

    def exists(self, url: str, what: str) -> None:
        """A HEAD: missing upstream (404, 410) is a usage error naming ``url``; anything else is left to the GET."""
        try:
            with self._client() as client:
                response = client.head(url, headers=IDENTITY)
        except httpx.HTTPError as exc:
            raise fetch_error(exc, url, what) from None
        if response.status_code in (404, 410):
            raise UsageError(f"{what}: {url} is not there (answered {response.status_code})")

    def download(self, url: str, what: str, store: BlobStore, cap: int, expected: str | None,
                 checked_by: str | None, sized: Callable[[int], None] | None = None) -> tuple[str, int]:
        """(digest, size) of ``url``'s content, now in ``store``; a digest other than ``expected`` is exit 4.

        ``sized`` hears the size once the first answer gives it, before its body is read (not for an
        answer without a length); what it raises ends the download. Already in the store (a re-run)
        under ``expected``: not fetched again.
        """
        if expected and store.has(f"sha256:{expected}"):
            return f"sha256:{expected}", store.size(f"sha256:{expected}")
        fd, temp = tempfile.mkstemp(prefix=".kit-", suffix=".partial", dir=store.blob_dir)
        try:
            with _writes_to(store, what), open(fd, "wb") as out, self._client() as client:
                hashed = InOrderHash(out.fileno())
                try:
                    size = self._fetch(client, url, what, hashed, cap, sized)
                except httpx.HTTPError as exc:
                    raise fetch_error(exc, url, what) from None
            actual = hashed.hexdigest()
            if expected and actual != expected:
                raise IntegrityError(f"{what}: {url} hashes to sha256:{actual}, but {checked_by} "
                                     f"says sha256:{expected}; nothing kept")
            digest = f"sha256:{actual}"
            store.adopt(temp, digest)
            return digest, size
        finally:
            if os.path.exists(temp):
                os.unlink(temp)

    def _fetch(self, client: httpx.Client, url: str, what: str, hashed: InOrderHash, cap: int,
               sized: Callable[[int], None] | None) -> int:
        """``url``'s content into ``hashed.fd``, hashed on the way; its size.

        The first 8 MiB are asked for as a range, whose answer tells the size: where the host takes
        ranges, the rest is asked for at once, as SEGMENTS ranges (a CDN caps each connection), while
        the first still streams; a host that does not answers 200 with the whole file.
        """
        first = {**IDENTITY, "Range": f"bytes=0-{FIRST_RANGE - 1}"}
        stop = threading.Event()  # set on the first failure: the other ranges end at their next piece
        rest: list[Future] = []
        with ThreadPoolExecutor(SEGMENTS) as pool:
            try:
                with client.stream("GET", url, headers=first) as response:
                    _check_status(response, url, what)
                    whole = response.status_code == 200
                    size = (ascii_int(response.headers.get("content-length", "")) if whole
                            else _range_total(response.headers.get("content-range", ""), url, what))
                    if size is not None and size > cap:
                        raise UsageError(f"{what}: {url} is {size} bytes, more than the "
                                         f"{cap >> 20} MiB a kit item may be")
                    most = cap if whole else min(FIRST_RANGE, size)
                    if not whole:
                        rest = [pool.submit(self._range, client, url, what, hashed, start, end, stop)
                                for start, end in _spans(most, size)]
                    if sized is not None and size is not None:
                        sized(size)
                    received = self._write(response, url, what, hashed, 0, most, stop, too_much=UsageError(
                        f"{what}: {url} serves more than {cap >> 20} MiB; refused") if whole else None)
                if whole and size is not None and received != size:
                    raise IntegrityError(f"{what}: {url} ended after {received} of {size} bytes")
                if not whole and received != most:
                    raise IntegrityError(f"{what}: {url} ended its first range after {received} bytes")
                for done in rest:
                    done.result()
            except BaseException as exc:
                stop.set()
                raise _cause(exc, rest) from None
        return size if size is not None else received

    def _range(self, client: httpx.Client, url: str, what: str, hashed: InOrderHash, start: int, end: int,
               stop: threading.Event) -> None:
        headers = {**IDENTITY, "Range": f"bytes={start}-{end}"}
        try:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 206:
                    raise MirrorError(f"{what}: {url} answered a range, then {response.status_code} to another")
                received = self._write(response, url, what, hashed, start, end + 1 - start, stop, too_much=None)
            if received != end + 1 - start:
                raise IntegrityError(f"{what}: {url} ended the range {start}-{end} after {received} bytes")
        except BaseException:
            stop.set()
            raise

    def _write(self, response: httpx.Response, url: str, what: str, hashed: InOrderHash, offset: int, most: int,
               stop: threading.Event, *, too_much: MirrorError | None) -> int:
        """The body into the file from ``offset``, at most ``most`` bytes, at the minimum rate; how many came.
        More is ``too_much`` (a file past the cap), else a range longer than asked: an integrity error.
        Another range failing (``stop``) ends it at its next piece."""
        received, paced = 0, self._guard(url, what)
        try:
            for chunk in response.iter_raw():  # as it arrives: the rate guard sees each piece
                if stop.is_set():
                    raise _Stopped()
                paced(len(chunk))
                if received + len(chunk) > most:
                    raise too_much or IntegrityError(f"{what}: {url} sent more than the {most} bytes asked for")
                os.pwrite(hashed.fd, chunk, offset + received)
                hashed.wrote(offset + received, chunk)
                received += len(chunk)
        except httpx.RemoteProtocolError as exc:  # closed before the length it gave: a truncated download
            raise IntegrityError(f"{what}: {url} was cut short at byte {offset + received} ({exc}); "
                                 "nothing kept") from None
        return received


class _Stopped(Exception):
    """A range ended because another failed: that one's error is the download's."""


def _cause(error: BaseException, ranges: list[Future]) -> BaseException:
    """The error that ended a download: ``error``, unless it only stopped for a range that failed."""
    if isinstance(error, _Stopped):
        for done in ranges:
            if (own := done.exception()) is not None and not isinstance(own, _Stopped):  # waits for it to end
                return own
    return error


def _spans(start: int, size: int) -> list[tuple[int, int]]:
    """Bytes ``start`` to ``size`` as SEGMENTS ranges (first, last), each asked for on its own connection."""
    step = -(-(size - start) // SEGMENTS)
    return [(first, min(first + step, size) - 1) for first in range(start, size, step)] if size > start else []


@contextmanager
def _writes_to(store: BlobStore, what: str) -> Iterator[None]:
    """A write into the work dir that fails is the store's error: DiskFull when there is no room."""
    try:
        yield
    except OSError as exc:
        raise store.write_failed(exc, what) from None


def _range_total(content_range: str, url: str, what: str) -> int:
    """The total of ``bytes FIRST-LAST/TOTAL``; a range answer without it is no use."""
    total = ascii_int(content_range.rpartition("/")[2]) if content_range.startswith("bytes ") else None
    if total is None:
        raise MirrorError(f"{what}: {url} answered a range without the file's size ({content_range[:80]!r})")
    return total


def _check_status(response: httpx.Response, url: str, what: str) -> None:
    if response.status_code in (404, 410):
        raise UsageError(f"{what}: {url} is not there (answered {response.status_code})")
    if response.status_code not in (200, 206):
        raise MirrorError(f"{what}: {url} answered {response.status_code}")
