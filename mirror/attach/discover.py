"""Find what is attached to an image in its source registry: every lookup at once, one round trip deep.

For each subject (the image's digest and each of its platform manifests) cosign's three
tags are HEADed (free on Docker Hub) and the referrers API asked, falling back to the
referrers tag schema where the registry does not serve it. Only what exists is then
fetched. Nothing found is not an error; a registry failing a lookup is (the image fails,
rather than crossing the gap without the signature a policy will ask for).

Most of those tags do not exist, and each HEAD is a round trip: with ``TagListings`` a
repository's tags are listed once per run (one request, shared by all its images) and only
tags in the listing are HEADed. A repository whose listing is long (more than
LISTING_PAGES pages) or refused is looked up tag by tag, as without.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc

from ..errors import IntegrityError, MirrorError, leaves
from ..model.oci import Descriptor, Manifest, digest_hex
from ..registry.client import RegistryClient
from .cosign import MAX_PAYLOAD, SIMPLE_SIGNING, TAG_KINDS, artifact_type, referrer_kind, tag_for

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

MAX_REFERRERS = 256  # per subject: more is no attachment set but a flood, and is cut
LISTING_PAGES = 3  # of a repository's tags; Docker Hub and distribution send all in one


class TagListings:
    """Each repository's tags, listed once per run (concurrent lookups wait for the one listing);
    None for a repository that is not listed (too many pages, or the registry will not)."""

    def __init__(self) -> None:
        self._listed: dict[tuple[str, str], set[str] | None] = {}
        self._listing: dict[tuple[str, str], anyio.Event] = {}

    async def tags(self, client: RegistryClient, repository: str) -> set[str] | None:
        key = (client.host, repository)
        while key not in self._listed:
            pending = self._listing.get(key)
            if pending is not None:
                await pending.wait()
                continue
            self._listing[key] = done = anyio.Event()
            try:
                tags = await client.tags_within(repository, LISTING_PAGES)
                self._listed[key] = set(tags) if tags is not None else None
            finally:
                del self._listing[key]
                done.set()
        return self._listed[key]


@dataclass
class Found:
    """One attachment: a manifest of the source repository, about ``subject``."""

    subject: str
    kind: str  # signature, attestation, sbom, referrer
    manifest: Manifest
    tag: str | None  # cosign's tag for it; None for an OCI 1.1 referrer
    artifact_type: str


GetManifest = Callable[[str, str], Awaitable[Manifest]]  # (repository, reference) -> the manifest


async def find(client: RegistryClient, repository: str, subjects: list[str],
               have: Callable[[str, str], Awaitable[bool]] | None = None,
               get: GetManifest | None = None, listings: TagListings | None = None) -> list[Found]:
    """Every attachment of every subject, each once (cosign's tags first, then referrers).

    ``have(reference, digest)``, when given, says the destination holds it already (under
    that tag, or by that digest): it is not fetched (a GET Docker Hub would count).
    ``get`` fetches a manifest (default: the client's GET; pull's pays from its rate limit budget).
    With ``listings`` a tag missing from its repository's listing is not asked for.
    """
    found: dict[tuple[str, str | None], list[Found]] = {}
    get = get or client.get_manifest
    listed = await listings.tags(client, repository) if listings is not None else None

    async def head(tag: str) -> Descriptor | None:
        return None if listed is not None and tag not in listed else await client.head_manifest(repository, tag)

    async def cosign_tag(subject: str, suffix: str) -> None:
        tag = tag_for(subject, suffix)
        there = await head(tag)
        if there is not None and not (have and await have(tag, there.digest)):
            manifest = await get(repository, there.digest)
            if not manifest.is_index:
                found[subject, suffix] = [Found(subject, TAG_KINDS[suffix], manifest, tag, artifact_type(manifest))]

    async def referrers(subject: str) -> None:
        listed = await client.referrers(repository, subject)
        if listed is None:  # no referrers API: the referrers tag schema, if anyone wrote it
            there = await head(tag_for(subject))
            index = await get(repository, there.digest) if there is not None else None
            listed = index.document.get("manifests") or [] if index is not None and index.is_index else []
        digests = [entry.get("digest") for entry in listed[:MAX_REFERRERS] if isinstance(entry, dict)]
        digests = [d for d in digests if _is_digest(d) and not (have and await have(d, d))]
        manifests = await _each_manifest(get, repository, digests)
        found[subject, None] = [
            Found(subject, referrer_kind(artifact_type(m)), m, None, artifact_type(m))
            for m in manifests if not m.is_index and _names_subject(m, subject)]

    async with together() as group:
        for subject in subjects:
            for suffix in TAG_KINDS:
                group.start_soon(cosign_tag, subject, suffix)
            group.start_soon(referrers, subject)
    seen: set[str] = set()
    result = []
    for subject in subjects:
        for key in [*((subject, suffix) for suffix in TAG_KINDS), (subject, None)]:
            for item in found.get(key, []):
                if item.manifest.digest not in seen:
                    seen.add(item.manifest.digest)
                    result.append(item)
    return result


async def payloads(client: RegistryClient, repository: str, signature: Manifest) -> dict[str, bytes]:
    """A ``.sig`` image's simple signing payloads (digest -> bytes), each checked against its digest."""
    wanted = [layer for layer in signature.children()[1:] if layer.media_type == SIMPLE_SIGNING
              and layer.size <= MAX_PAYLOAD]
    read: dict[str, bytes] = {}

    async def one(digest: str, size: int) -> None:
        data = bytearray()
        async with client.open_blob(repository, digest, size) as chunks:
            async for chunk in chunks:
                data += chunk
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"signature payload {digest} of {client.host}/{repository}: "
                                 "the bytes served do not hash to it")
        read[digest] = bytes(data)

    async with together() as group:
        for layer in wanted:
            group.start_soon(one, layer.digest, layer.size)
    return read


@contextlib.asynccontextmanager
async def together() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group whose failure is its first registry error itself, not an exception group, so a
    caller's ``except MirrorError`` sees it (and names the image it was looking up)."""
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as failed:
        first = next((e for e in leaves(failed) if isinstance(e, MirrorError)), None)
        if first is None or not all(isinstance(e, MirrorError) for e in leaves(failed)):
            raise
        raise first from None


async def _each_manifest(get: GetManifest, repository: str, digests: list[str]) -> list[Manifest]:
    got: dict[int, Manifest] = {}

    async def one(index: int, digest: str) -> None:
        got[index] = await get(repository, digest)

    async with together() as group:
        for index, digest in enumerate(digests):
            group.start_soon(one, index, digest)
    return [got[i] for i in sorted(got)]


def _is_digest(value: object) -> bool:
    """A listed digest goes into a URL: only a sha256 digest does."""
    try:
        return isinstance(value, str) and bool(digest_hex(value))
    except IntegrityError:
        return False


def _names_subject(manifest: Manifest, subject: str) -> bool:
    """A referrer lists its subject; one that names another (a lying index) is not this image's."""
    named = manifest.document.get("subject")
    return isinstance(named, dict) and named.get("digest") == subject
