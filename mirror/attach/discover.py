"""Find what is attached to an image in its source registry, in a few requests whatever its platforms.

The repository's tags are listed once (``Listings``, shared by a run): of cosign's three tags
and the referrers tag schema's for each subject (the image's digest and each of its platform
manifests), only those listed are fetched, each with one GET. The referrers API is asked per
subject until the registry shows it does not serve it (the client remembers; then the listing
answers for the tag schema). Nothing found is not an error; a registry failing a lookup is (the image fails, rather
than crossing the gap without the signature a policy will ask for). A registry that will not
list tags, or lists more than LISTING_PAGES pages, is asked with a HEAD (free on Docker Hub)
per candidate tag instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc

from ..errors import IntegrityError, MirrorError, NotFoundError, leaves
from ..model.oci import Manifest, digest_hex
from ..registry.client import RegistryClient
from .cosign import MAX_PAYLOAD, SIMPLE_SIGNING, TAG_KINDS, artifact_type, referrer_kind, tag_for

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

MAX_REFERRERS = 256  # per subject: more is no attachment set but a flood, and is cut


@dataclass
class Found:
    """One attachment: a manifest of the source repository, about ``subject``."""

    subject: str
    kind: str  # signature, attestation, sbom, referrer
    manifest: Manifest
    tag: str | None  # cosign's tag for it; None for an OCI 1.1 referrer
    artifact_type: str


LISTING_PAGES = 3  # of a repository's tags; Docker Hub and distribution send all in one
GetManifest = Callable[[str, str], Awaitable[Manifest]]  # (repository, reference) -> the manifest


class Listings:
    """Each repository's tags, listed once per run however many images share it (whether a registry
    serves the referrers API, the client remembers: RegistryClient.referrers)."""

    def __init__(self) -> None:
        self._tags: dict[tuple[str, str], set[str] | None] = {}  # (host, repository) -> its tags
        self._listing: dict[tuple[str, str], anyio.Event] = {}  # being listed -> set when done

    def record(self, host: str, repository: str, listed: list[Any]) -> None:
        """Tags the run listed already (a sync job's selection): not asked for again."""
        self._tags.setdefault((host, repository), {tag for tag in listed if isinstance(tag, str)} or None)

    async def tags(self, client: RegistryClient, repository: str) -> set[str] | None:
        """The repository's tags; None where the registry will not list them, or lists none (a
        repository holding the image has some: a registry that lists nothing is not believed)."""
        key = (client.host, repository)
        while key not in self._tags and key in self._listing:
            await self._listing[key].wait()
        if key in self._tags:
            return self._tags[key]
        self._listing[key] = done = anyio.Event()
        try:
            # None: refused (ECR wants a right pulls do not need) or past LISTING_PAGES pages: each
            # candidate is HEADed instead, and fails there if it must
            self._tags[key] = set(await client.tags_within(repository, LISTING_PAGES) or ()) or None
        finally:
            del self._listing[key]
            done.set()
        return self._tags[key]


async def find(client: RegistryClient, repository: str, subjects: list[str],
               have: Callable[[str, str], Awaitable[bool]] | None = None,
               get: GetManifest | None = None, listings: Listings | None = None) -> list[Found]:
    """Every attachment of every subject, each once (cosign's tags first, then referrers).

    ``have(reference, digest)``, when given, says the destination holds it already (under
    that tag, or by that digest): it is not fetched (a GET Docker Hub would count).
    ``get`` fetches a manifest (default: the client's GET; pull's pays from its rate limit budget).
    ``listings``: what the run knows of the registry already (default: asked afresh).
    """
    found: dict[tuple[str, str | None], list[Found]] = {}
    get = get or client.get_manifest
    listings = listings or Listings()

    async def tagged(tag: str, held: Callable[[str, str], Awaitable[bool]] | None = None) -> Manifest | None:
        """The manifest under ``tag``, unless ``held`` says the destination has it. Only a tag the
        listing names is asked for (any, without a listing), with a GET at once where nothing needs
        its digest first (a HEAD, else: ``held``, or a 404 without a listing)."""
        tags = await listings.tags(client, repository)
        if tags is not None and tag not in tags:
            return None
        if tags is not None and held is None:
            try:
                return await get(repository, tag)
            except NotFoundError:
                return None  # deleted since it was listed
        there = await client.head_manifest(repository, tag)
        if there is None or (held and await held(tag, there.digest)):
            return None
        return await get(repository, there.digest)

    async def cosign_tag(subject: str, suffix: str) -> None:
        manifest = await tagged(tag_for(subject, suffix), have)
        if manifest is not None and not manifest.is_index:
            found[subject, suffix] = [Found(subject, TAG_KINDS[suffix], manifest, tag_for(subject, suffix),
                                            artifact_type(manifest))]

    async def referrers(subject: str) -> None:
        listed = await client.referrers(repository, subject)
        if listed is None:  # no referrers API: the referrers tag schema, if anyone wrote it
            index = await tagged(tag_for(subject))
            listed = index.document.get("manifests") or [] if index is not None and index.is_index else []
        digests = [entry.get("digest") for entry in listed[:MAX_REFERRERS] if isinstance(entry, dict)]
        digests = [d for d in digests if _is_digest(d) and not (have and await have(d, d))]
        manifests = await _each_manifest(get, repository, digests)
        found[subject, None] = [
            Found(subject, referrer_kind(artifact_type(m)), m, None, artifact_type(m))
            for m in manifests if not m.is_index and _names_subject(m, subject)]

    async with together() as group:
        # A task only for what will be asked (an image with nothing attached is most images: 3 subjects
        # would be 12 tasks, each looking at the listing to ask nothing). The referrers API is asked
        # while the listing is on its way, as long as the registry may serve it.
        asked = set()
        if client.serves_referrers is not False:
            asked.update(subjects)
            for subject in subjects:
                group.start_soon(referrers, subject)
        tags = await listings.tags(client, repository)
        for subject in subjects:
            for suffix in TAG_KINDS:
                if tags is None or tag_for(subject, suffix) in tags:
                    group.start_soon(cosign_tag, subject, suffix)
            if subject not in asked and (tags is None or tag_for(subject) in tags):
                group.start_soon(referrers, subject)  # the referrers tag schema, where someone wrote it
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
