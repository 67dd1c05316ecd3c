"""Resolve: each source reference to its manifests, exactly as the source serves them.

A tag becomes a digest; an index's platform manifests are fetched
concurrently (and, with ``--platform``, narrowed: the kept manifests keep
their digests, the index gets a new one and records the original); a single
image's config is fetched as soon as its manifest arrives, to learn its
platform. Pull, sync and the delta planner start from what this returns.

With a work dir (``store``) every manifest is kept there as it arrives, and
one whose digest is known (a child's, a pinned reference's) is taken from
there instead of asked again. With a ``budget`` each GET is a pull paid for
from its registry's rate limit (budget.py); on a registry that meters pulls
a tag is HEADed first (free) to find its manifest in the work dir, so a run
the limit deferred is continued without paying twice. A work dir empty when
the run began holds no manifest to find: its tags are not HEADed (a round
trip each).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import anyio

from ..bundle.format import ArtifactRecord, Attached, ImageRecord
from ..bundle.store import BlobStore
from ..errors import MirrorError, UsageError
from ..model import graph
from ..model.oci import Descriptor, Manifest, Platform
from ..model.reference import Reference
from ..model.upstream import Location, SourceMap
from ..progress import Progress
from ..registry.client import RegistryClient
from ..registry.pool import ClientPool
from ..registry.settings import tasks_for
from .budget import Budget, RateLimited
from .fetch import download_into
from .tasks import each


@dataclass
class ResolvedImage:
    ref: Reference
    location: Location
    top: Manifest
    children: list[Manifest]
    blobs: dict[str, int]  # configs and layers: digest -> size
    platforms: list[str]
    narrowed_from: str | None = None
    fetched: dict[str, int] = field(default_factory=dict)  # blobs already downloaded while resolving
    artifact: ArtifactRecord | None = None  # a kit chart or file, built rather than resolved
    attached_to: Attached | None = None  # set on a signature, attestation, SBOM or referrer of another image

    @property
    def manifests(self) -> list[Manifest]:
        return [self.top, *self.children]

    def record(self) -> ImageRecord:
        needed = [m.digest for m in self.children] + list(self.blobs)
        return ImageRecord(
            source=str(self.ref.with_digest(None)) if self.ref.tag else str(self.ref),
            digest=self.top.digest,
            media_type=self.top.media_type,
            size=len(self.top.data),
            platforms=self.platforms,
            blobs=needed,
            narrowed_from=self.narrowed_from,
            manifests=[m.digest for m in self.children],
            artifact=self.artifact,
            attached_to=self.attached_to,
        )


@dataclass
class Resolution:
    images: list[ResolvedImage]  # in the order asked for
    failures: dict[str, str]  # reference -> why
    causes: dict[str, MirrorError]  # reference -> the error itself
    deferred: dict[str, str] = field(default_factory=dict)  # reference -> the rate limit that left it for later

    def joined(self, other: "Resolution") -> "Resolution":
        """Both, this one's images first."""
        return Resolution(self.images + other.images, {**self.failures, **other.failures},
                          {**self.causes, **other.causes}, {**self.deferred, **other.deferred})


class Resolver:
    """Resolves references against their sources; with a ``store``, keeps what it fetched there."""

    def __init__(self, pool: ClientPool, sources: SourceMap, platforms: list[Platform], jobs: int,
                 store: BlobStore | None = None, budget: Budget | None = None):
        self.pool, self.sources, self.platforms, self.jobs, self.store = pool, sources, platforms, jobs, store
        self.budget = budget
        self._resuming = store is not None and not store.empty()  # a tag's HEAD may find its manifest there
        self._configs: dict[str, anyio.Event] = {}  # config downloads in flight or done, each once

    async def resolve_all(self, refs: list[Reference], progress: Progress,
                          resolved_one: Callable[[ResolvedImage], None] | None = None) -> Resolution:
        """Every reference, concurrently; ``resolved_one(image)`` hears of each as soon as it is resolved."""
        resolved: dict[int, ResolvedImage] = {}
        failures: dict[str, str] = {}
        causes: dict[str, MirrorError] = {}
        deferred: dict[str, str] = {}

        async def one(item: tuple[int, Reference]) -> None:
            index, ref = item
            try:
                resolved[index] = image = await self.resolve(ref)
            except RateLimited as exc:
                deferred[str(ref)] = str(exc)
            except MirrorError as exc:
                failures[str(ref)] = str(exc)
                causes[str(ref)] = exc
            else:
                if resolved_one is not None:
                    resolved_one(image)
            bar.update(1)

        await expect_pulls(self.pool, self.sources, refs)
        with progress.bar(len(refs), "resolving", unit="img") as bar:
            await each(enumerate(refs), one, tasks_for(self.jobs))  # each mostly waits a round trip
        return Resolution([resolved[i] for i in sorted(resolved)], failures, causes, deferred)

    async def resolve(self, ref: Reference) -> ResolvedImage:
        location = self.sources.locate(ref)
        client = await self.pool.get(location.host)
        top = await self._top(ref, location, client)
        if top.is_index:
            image = await self._resolve_index(ref, location, client, top)
        else:
            image = ResolvedImage(ref, location, top, [], graph.layer_blobs([top]), platforms=[])
            if self.store is not None:
                await self._read_platform(image, client)
        if self.store is not None and not self.store.has(image.top.digest):  # a narrowed index
            self.store.put_bytes(image.top.digest, image.top.data)
        return image

    async def _top(self, ref: Reference, location: Location, client: RegistryClient) -> Manifest:
        """The manifest ``ref`` names (by tag: found stored, on a metered registry, by a HEAD)."""
        return await self._manifest(client, location.repository, ref.identifier, ref.digest, None)

    async def _manifest(self, client: RegistryClient, repository: str, reference: str, digest: str | None,
                        media_type: str | None) -> Manifest:
        return await stored_manifest(client, repository, reference, self.store, self.budget, digest, media_type,
                                     resuming=self._resuming)

    async def _resolve_index(self, ref: Reference, location: Location, client: RegistryClient,
                             top: Manifest) -> ResolvedImage:
        entries = top.children()
        # A reference pinned by digest names exactly that index: narrowing would change its digest.
        platforms = [] if ref.digest else self.platforms
        selected = [d for d in entries if _wanted(d, platforms)]
        if not selected:
            available = ", ".join(sorted({str(d.platform) for d in entries if d.platform})) or "none"
            wanted = ", ".join(str(p) for p in self.platforms)
            raise UsageError(f"{ref}: no manifest for platform {wanted} (the image has: {available})")
        children: dict[int, Manifest] = {}
        errors: list[MirrorError] = []

        async def fetch(item: tuple[int, Descriptor]) -> None:
            index, descriptor = item
            try:
                child = await self._manifest(client, location.repository, descriptor.digest, descriptor.digest,
                                             descriptor.media_type)
            except MirrorError as exc:  # the image's failure, not a group of its children's
                errors.append(exc)
                return
            if child.is_index:
                errors.append(MirrorError(f"{ref}: nested index {descriptor.digest} is not supported"))
            children[index] = child

        await each(enumerate(selected), fetch, len(selected))
        if errors:  # a failure outranks a deferral: the next run would fail on it too
            raise next((e for e in errors if not isinstance(e, RateLimited)), errors[0])
        ordered = [children[i] for i in range(len(selected))]
        platforms_found = sorted({str(d.platform) for d in selected if d.platform and d.platform.os != "unknown"})
        narrowed_from = None
        if len(selected) < len(entries):
            narrowed_from = top.digest
            top = _narrow_index(top, selected)
        return ResolvedImage(ref, location, top, ordered, graph.layer_blobs(ordered), platforms_found,
                             narrowed_from)

    async def _read_platform(self, image: ResolvedImage, client: RegistryClient) -> None:
        """A single-manifest image's platform, from its config (downloaded once per digest).

        Raises when the config cannot be fetched or the image is not of a requested platform.
        """
        assert self.store is not None
        if not image.top.children():
            return
        config, size = image.top.children()[0].digest, image.top.children()[0].size
        done = self._configs.get(config)
        if done is None:
            self._configs[config] = done = anyio.Event()
            try:
                if not self.store.has(config):
                    try:
                        await download_into(self.store, client, image.location.repository, config, size)
                    except OSError as exc:  # the work dir, not the registry: full disk, permissions
                        raise self.store.write_failed(exc, config) from None
                    image.fetched[config] = self.store.size(config)
            finally:
                done.set()
        await done.wait()
        if not self.store.has(config):
            raise MirrorError(f"{image.ref}: its config {config} could not be fetched")
        try:
            document = json.loads(self.store.read(config))
            platform = Platform(document["os"], document["architecture"], document.get("variant"))
        except (ValueError, KeyError, TypeError):
            return  # not an image config (an artifact): no platform to list
        image.platforms = [str(platform)]
        if self.platforms and not image.ref.digest and not any(platform.matches(p) for p in self.platforms):
            wanted = ", ".join(str(p) for p in self.platforms)
            raise UsageError(f"{image.ref}: no manifest for platform {wanted} (the image is only {platform})")


async def expect_pulls(pool: ClientPool, sources: SourceMap, refs: list[Reference]) -> None:
    """Tell each source registry's client which repositories the run will pull from, in list order:
    their tokens then come several to a request (registry/auth.py)."""
    repositories: dict[str, dict[str, None]] = {}
    for ref in refs:
        location = sources.locate(ref)
        repositories.setdefault(location.host, {})[location.repository] = None
    for host, names in repositories.items():
        (await pool.get(host)).expect_pulls(names)


def _wanted(descriptor: Descriptor, platforms: list[Platform]) -> bool:
    if not platforms:
        return True
    return descriptor.platform is not None and any(descriptor.platform.matches(p) for p in platforms)


def _narrow_index(index: Manifest, keep: list[Descriptor]) -> Manifest:
    """The same index, holding only the kept entries (a new digest, recorded as narrowed)."""
    document = index.document
    kept = {d.digest for d in keep}
    document["manifests"] = [m for m in document.get("manifests", []) if m.get("digest") in kept]
    return Manifest.from_bytes(json.dumps(document, indent=3).encode() + b"\n", index.media_type)


async def stored_manifest(client: RegistryClient, repository: str, reference: str, store: BlobStore | None,
                          budget: Budget | None, digest: str | None = None, media_type: str | None = None,
                          resuming: bool = True) -> Manifest:
    """From the work dir when ``digest`` is there (a rerun pays no pull twice), else a GET (a pull from
    ``budget``, when there is one) kept there as it arrives: a deferred run's rerun has it. Without
    ``digest``, a registry that meters pulls is asked for the tag's with a HEAD (free) first, unless the
    run is not ``resuming``: a work dir that began empty holds no manifest a HEAD could find."""
    if digest is None and resuming and store is not None and budget is not None and budget.limits(client.host):
        head = await client.head_manifest(repository, reference)
        if head is not None:
            digest, media_type = head.digest, head.media_type
    if digest is not None and store is not None and store.has(digest):
        return Manifest.from_bytes(store.read(digest), media_type)
    if budget is not None:
        manifest = await budget.get_manifest(client, repository, reference)
    else:
        manifest = await client.get_manifest(repository, reference)
    if store is not None:
        store.put_bytes(manifest.digest, manifest.data)
    return manifest
