"""HTTP for the kit: small documents whole (capped), items streamed into the work dir and hashed.

The client is the image lists' (release_lists.http_client: system CAs plus
--ca-file, HTTPS_PROXY honoured). Downloads ask for the bytes as stored
(``Accept-Encoding: identity``: a checksum is of the file, not of a
transfer encoding), at the registries' minimum rate (a source that drips
is cut), go to a temporary file beside the store's blobs, and
enter the store under their digest only once it matched: a tampered or
truncated download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx

from ..bundle.store import BlobStore
from ..errors import IntegrityError, MirrorError, UsageError
from ..model.numbers import ascii_int
from ..registry.settings import RegistrySettings
from ..registry.transport import RateGuard, Stalled
from ..release_lists import fetch_error, http_client

IDENTITY = {"Accept-Encoding": "identity"}


class KitFetcher:
    def __init__(self, ca_file: Path | None = None, pace: RegistrySettings | None = None):
        self.ca_file = ca_file
        self.pace = pace or RegistrySettings()  # its min_rate over rate_window: a source that drips is cut

    def _guard(self, url: str, what: str) -> Callable[[int], None]:
        guard = RateGuard(self.pace)

        def feed(size: int) -> None:
            try:
                guard.feed(size)
            except Stalled as exc:
                raise MirrorError(f"{what}: {url} sends {exc}; given up") from None
        return feed

    def _client(self) -> httpx.Client:
        return http_client(self.ca_file, follow_redirects=True)

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
                 checked_by: str | None) -> tuple[str, int]:
        """(digest, size) of ``url``'s content, now in ``store``; a digest other than ``expected`` is exit 4.

        Already in the store (a re-run) under ``expected``: not fetched again.
        """
        if expected and store.has(f"sha256:{expected}"):
            return f"sha256:{expected}", store.size(f"sha256:{expected}")
        fd, temp = tempfile.mkstemp(prefix=".kit-", suffix=".partial", dir=store.blob_dir)
        try:
            hasher, size = hashlib.sha256(), 0
            with _writes_to(store, what), open(fd, "wb") as out:
                try:
                    with self._client() as client, client.stream("GET", url, headers=IDENTITY) as response:
                        _check_status(response, url, what)
                        declared = ascii_int(response.headers.get("content-length", ""))
                        if declared is not None and declared > cap:
                            raise UsageError(f"{what}: {url} is {declared} bytes, more than the "
                                             f"{cap >> 20} MiB a kit item may be")
                        paced = self._guard(url, what)
                        for chunk in response.iter_raw():  # as it arrives: the rate guard sees each piece
                            paced(len(chunk))
                            size += len(chunk)
                            if size > cap:
                                raise UsageError(f"{what}: {url} serves more than {cap >> 20} MiB; refused")
                            hasher.update(chunk)
                            out.write(chunk)
                        if declared is not None and size != declared:
                            raise IntegrityError(f"{what}: {url} ended after {size} of {declared} bytes")
                except httpx.HTTPError as exc:
                    raise fetch_error(exc, url, what) from None
            actual = hasher.hexdigest()
            if expected and actual != expected:
                raise IntegrityError(f"{what}: {url} hashes to sha256:{actual}, but {checked_by} "
                                     f"says sha256:{expected}; nothing kept")
            digest = f"sha256:{actual}"
            os.replace(temp, store.path(digest))
            return digest, size
        finally:
            if os.path.exists(temp):
                os.unlink(temp)


@contextmanager
def _writes_to(store: BlobStore, what: str) -> Iterator[None]:
    """A write into the work dir that fails is the store's error: DiskFull when there is no room."""
    try:
        yield
    except OSError as exc:
        raise store.write_failed(exc, what) from None


def _check_status(response: httpx.Response, url: str, what: str) -> None:
    if response.status_code in (404, 410):
        raise UsageError(f"{what}: {url} is not there (answered {response.status_code})")
    if response.status_code != 200:
        raise MirrorError(f"{what}: {url} answered {response.status_code}")
