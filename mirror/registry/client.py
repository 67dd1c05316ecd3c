"""The OCI distribution API of one registry host, over a Transport.

Everything a pull, push or sync needs: manifests kept byte-for-byte, blobs
streamed in bounded memory (downloads resumable with Range requests), cross
repository mounts, chunked uploads, tags and the catalog (listing.py), each answer
checked against the digest asked for.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import AsyncIterator, Callable, Iterable

import anyio
import httpx

from ..errors import IntegrityError, MirrorError, RegistryError
from ..model import oci
from ..model.oci import Descriptor, Manifest, digest_hex
from .auth import delete_scope, pull_scope, push_scope
from .credentials import AuthFiles
from .download import Downloads, SmallDownload
from .unfinished import Unfinished
from .listing import Listing
from .settings import RegistrySettings
from .transport import Transport, read_capped
from .upload import BlobSource, Uploads


class RegistryClient:
    """One registry host. Use as ``async with RegistryClient(host, settings) as client:``.

    ``backoff_base`` overrides the transport's first retry delay (tests use a tiny one);
    ``http_transport`` replaces the network under the client (tests: tests/support/fake_registry.py).
    """

    def __init__(self, host: str, settings: RegistrySettings = RegistrySettings(), *,
                 auth_files: AuthFiles | None = None, backoff_base: float | None = None,
                 http_transport: httpx.AsyncBaseTransport | None = None):
        self.host = host
        self.settings = settings
        self._transport = Transport(host, settings, auth_files=auth_files, backoff_base=backoff_base,
                                    http_transport=http_transport)
        self._downloads = Downloads(self._transport)
        self._uploads = Uploads(self._transport)
        self._listing = Listing(self._transport)
        # The newest ``RateLimit-Remaining`` and ``RateLimit-Limit`` a manifest HEAD answered
        # (``N;w=SECONDS``), as sent: Docker Hub counts pulls, and HEADs are free.
        self.last_ratelimit: str | None = None
        self.last_ratelimit_limit: str | None = None
        self._serves_referrers: bool | None = None  # whether it serves the referrers API, once it answered
        self._referrers_probe = anyio.Lock()

    async def __aenter__(self) -> "RegistryClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    def expect_pulls(self, repositories: Iterable[str]) -> None:
        """Repositories this run will pull from: their bearer tokens come several to a request (auth.py)."""
        self._transport.expect(pull_scope(repository) for repository in repositories)

    # -- operations ---------------------------------------------------------

    async def ping(self) -> None:
        """GET /v2/: the registry is there, speaks the API and accepts our credentials."""
        what = f"registry {self.host}"
        response = await self._transport.request("GET", "/v2/", what=what)
        await response.aclose()
        refused = self._transport.plain_http_refused(response, response.content)
        if refused:
            raise refused
        if response.status_code != 200:
            raise RegistryError(f"{self.host} answered {response.status_code} at /v2/; is it a container "
                                "registry (OCI distribution API) at that address?", response.status_code)

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        what = f"manifest {_image(self.host, repository, reference)}"
        response, data = await self._get_document(f"/v2/{repository}/manifests/{reference}", repository,
                                                  oci.ACCEPT, what)
        assert data is not None
        try:
            manifest = Manifest.from_bytes(data, response.headers.get("content-type"))
        except MirrorError as exc:
            raise type(exc)(f"{what}: {exc}") from None
        if _is_digest(reference) and manifest.digest != reference:
            raise IntegrityError(f"{what}: the served bytes hash to {manifest.digest}; the registry "
                                 "or a proxy in between altered the manifest")
        served = response.headers.get("docker-content-digest", "")
        if served.startswith("sha256:") and served != manifest.digest:
            raise IntegrityError(f"{what}: the registry says its digest is {served} but the bytes "
                                 f"hash to {manifest.digest}; a proxy in between may alter content")
        return manifest

    async def _get_document(self, path: str, repository: str, accept: str, what: str, *,
                            absent_ok: bool = False) -> tuple[httpx.Response, bytes | None]:
        """GET a manifest-sized document, read whole but refused past MAX_MANIFEST_SIZE before it is held.

        An answer other than 200 raises, or with ``absent_ok`` gives no body.
        """
        response = await self._transport.request("GET", path, scopes=[pull_scope(repository)],
                                                 headers={"Accept": accept}, stream=True, what=what)
        try:
            if response.status_code != 200:
                if absent_ok:
                    await self._transport.discard(response)
                    return response, None
                raise await self._transport.failure(response, what)
            limit = oci.MAX_MANIFEST_SIZE
            return response, await read_capped(self._transport, response, what, limit, IntegrityError(
                f"{what}: {self.host} serves more than {limit} bytes for it; a manifest is never that large, "
                "so it was not read"))
        finally:
            await response.aclose()

    async def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        what = f"manifest {_image(self.host, repository, reference)}"
        response = await self._transport.request("HEAD", f"/v2/{repository}/manifests/{reference}",
                                                 scopes=[pull_scope(repository)],
                                                 headers={"Accept": oci.ACCEPT}, what=what)
        self.last_ratelimit = response.headers.get("ratelimit-remaining", self.last_ratelimit)
        self.last_ratelimit_limit = response.headers.get("ratelimit-limit", self.last_ratelimit_limit)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self._transport.failure(response, what)
        digest = response.headers.get("docker-content-digest", "")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        length = self._transport.content_length(response, what)
        if not _is_sha256(digest) or media_type not in oci.MANIFEST_TYPES or length is None:
            return (await self.get_manifest(repository, reference)).descriptor  # HEAD said too little
        return Descriptor(media_type, digest, length)

    async def referrers(self, repository: str, digest: str) -> list[dict] | None:
        """The OCI 1.1 referrers API's list for ``digest`` (descriptors as sent); None where it is not served.

        A registry that implements the API answers 200 with an index, empty when nothing refers to
        the digest; any other answer (404 from distribution 2.8, 400, 405, a 200 that is no index, as
        a proxy's catch-all page) means it does not.
        """
        digest_hex(digest)
        if self._serves_referrers is None:  # not known yet: one asks, the others wait for its answer
            async with self._referrers_probe:
                if self._serves_referrers is None:
                    listed = await self._referrers(repository, digest)
                    self._serves_referrers = listed is not None  # the same for the next subject: asked once
                    return listed
        return await self._referrers(repository, digest) if self._serves_referrers else None

    @property
    def serves_referrers(self) -> bool | None:
        """Whether the registry serves the referrers API; None until it answered once."""
        return self._serves_referrers

    async def _referrers(self, repository: str, digest: str) -> list[dict] | None:
        what = f"referrers of {_image(self.host, repository, digest)}"
        _, data = await self._get_document(f"/v2/{repository}/referrers/{digest}", repository, oci.OCI_INDEX, what,
                                           absent_ok=True)
        return _referrers_listed(data)

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob the registry has in ``repository``; None when absent."""
        what = f"blob {digest} in {self.host}/{repository}"
        response = await self._transport.request("HEAD", f"/v2/{repository}/blobs/{digest}",
                                                 scopes=[pull_scope(repository)], follow=True, what=what)
        if response.status_code == 404:
            return None
        length = self._transport.content_length(response, what) if response.status_code == 200 else None
        if length is None:
            raise await self._transport.failure(response, what)
        return length

    async def download_blob(self, repository: str, digest: str, partial: Path, *, size: int | None = None,
                            progress: Callable[[int], None] | None = None, segments: int = 1,
                            unfinished: Unfinished | None = None) -> None:
        """Stream a blob into ``partial``, resuming from what it holds; verify its sha256 (download.py)."""
        await self._downloads.download(repository, digest, partial, size=size, progress=progress,
                                       segments=segments, unfinished=unfinished)

    async def download_small_blob(self, repository: str, digest: str, *, size: int,
                                  progress: Callable[[int], None] | None = None,
                                  unfinished: Unfinished | None = None) -> bytes:
        """A blob of at most ``size`` bytes (small: held whole), its sha256 verified (download.py SmallDownload)."""
        return await SmallDownload(self._downloads, repository, digest, size, progress).fetch(unfinished)

    def open_blob(self, repository: str, digest: str,
                  size: int | None = None) -> "contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]":
        """The blob's bytes as an async iterator of chunks as they arrive (download.py ``Downloads.open``)."""
        return self._downloads.open(repository, digest, size)

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another of its repositories; False if it would not."""
        return await self._uploads.mount(repository, digest, from_repository)

    async def upload_blob(self, repository: str, digest: str, size: int, source: BlobSource, *,
                          unless_there: bool = False) -> bool:
        """Upload a blob (upload.py); retried as a whole on transient failures, a bare iterator once.
        ``unless_there``: asked in the same request whether the repository has it (False: it had)."""
        return await self._uploads.upload(repository, digest, size, source, unless_there=unless_there)

    async def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> None:
        """PUT the manifest's bytes exactly as given under a tag or its digest."""
        what = f"manifest {_image(self.host, repository, reference)}"
        if _is_digest(reference) and reference != manifest.digest:
            raise IntegrityError(f"{what}: the manifest's bytes hash to {manifest.digest}")
        response = await self._transport.request("PUT", f"/v2/{repository}/manifests/{reference}",
                                                 scopes=[push_scope(repository)],
                                                 headers={"Content-Type": manifest.media_type},
                                                 content=manifest.data, what=what)
        if response.status_code not in (200, 201):
            raise await self._transport.failure(response, what)
        served = response.headers.get("docker-content-digest")
        if served and served != manifest.digest:
            raise IntegrityError(f"{what}: the registry stored it as {served}, not {manifest.digest}; "
                                 "it must have altered the bytes")

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        """DELETE a manifest by digest: every tag on it goes too. False when it was not there.

        A registry that does not allow deletes (distribution without ``storage:
        delete: enabled: true``) answers 405 UNSUPPORTED: a RegistryError with that status.
        """
        digest_hex(digest)
        what = f"delete of manifest {_image(self.host, repository, digest)}"
        response = await self._transport.request("DELETE", f"/v2/{repository}/manifests/{digest}",
                                                 scopes=[delete_scope(repository)], what=what)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 202):
            raise await self._transport.failure(response, what)
        return True

    async def list_tags(self, repository: str) -> list[str]:
        """All tags (every page); [] when the repository does not exist."""
        return await self._listing.tags(repository)

    async def tags_within(self, repository: str, pages: int) -> list[str] | None:
        """All tags when they come in at most ``pages`` pages, else None (listing.py)."""
        return await self._listing.tags_within(repository, pages)

    async def catalog(self) -> list[str]:
        """Every repository the registry lists (every page)."""
        return await self._listing.catalog()


def _referrers_listed(data: bytes | None) -> list[dict] | None:
    """The descriptors of a referrers answer's index; None when it is no index (the API is not served)."""
    if data is None:
        return None
    try:
        listed = json.loads(data).get("manifests") or []
    except (ValueError, AttributeError):
        return None
    if not isinstance(listed, list):
        return None
    return [entry for entry in listed if isinstance(entry, dict)]


def _is_sha256(digest: str) -> bool:
    try:
        digest_hex(digest)
    except IntegrityError:
        return False
    return True


def _is_digest(reference: str) -> bool:
    return ":" in reference


def _image(host: str, repository: str, reference: str) -> str:
    return f"{host}/{repository}{'@' if _is_digest(reference) else ':'}{reference}"
