"""``mirror pull``: resolve images, fetch every unique blob once, write one bundle.

1. resolve: every reference to its manifest bytes (tag -> digest), indexes
   walked and, with ``--platform``, narrowed; all images concurrently;
2. fetch and write, overlapped: the union of all blobs is downloaded once
   into the work dir (a content-addressed store a re-run resumes from), in
   the order the bundle needs them, while the bundle writer streams each one
   from the work dir into the bundle as soon as it is there.

An image that cannot be resolved or whose blob fails is a failure; without
``keep_going`` any failure means no bundle at all.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import anyio

from .bundle.format import BundleManifest, ImageRecord
from .bundle.writer import WrittenBundle, plan_blobs, write_bundle
from .errors import ExitCode, ImagesFailed, MirrorError, UsageError, worst_exit_code
from .oci import Descriptor, Manifest, Platform
from .progress import Progress
from .reference import Reference
from .registry.client import RegistryClient
from .registry.pool import ClientPool
from .registry.settings import RegistrySettings
from .sources import Location, SourceMap
from .store import BlobStore


@dataclass
class PullRequest:
    images: list[Reference]
    output: Path
    sources: SourceMap
    settings_for: Callable[[str], RegistrySettings]
    platforms: list[Platform] = field(default_factory=list)
    jobs: int = 8
    work_dir: Path | None = None
    keep_going: bool = False
    keep_work: bool = False
    topology: dict[str, Any] | None = None
    compression_level: int = 1  # layers are gzip'd already: level 3 costs ~2x CPU for ~0.5% smaller
    part_size: int | None = None

    @property
    def store_dir(self) -> Path:
        return self.work_dir or self.output.parent / f".{self.output.name}.work"


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
        )


@dataclass
class PullResult:
    images: list[ImageRecord]
    failures: dict[str, str]
    downloaded_bytes: int = 0
    reused_bytes: int = 0
    bundle: WrittenBundle | None = None
    total_blob_bytes: int = 0
    exit_code: ExitCode = ExitCode.OK  # not OK only with keep_going: a bundle without the failed images

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle.path) if self.bundle else None,
            "bundle_size": self.bundle.size if self.bundle else None,
            "bundle_sha256": self.bundle.sha256 if self.bundle else None,
            "parts": [str(p) for p in self.bundle.parts] if self.bundle else [],
            "images": [{"source": r.source, "digest": r.digest, "platforms": r.platforms,
                        "narrowed_from": r.narrowed_from} for r in self.images],
            "failures": self.failures,
            "exit_code": int(self.exit_code),
            "downloaded_bytes": self.downloaded_bytes,
            "reused_bytes": self.reused_bytes,
            "unique_blob_bytes": self.total_blob_bytes,
        }


async def resolve_all(
    request: PullRequest, pool: ClientPool, progress: Progress, store: BlobStore | None
) -> tuple[list[ResolvedImage], dict[str, str], list[MirrorError]]:
    """Fetch every image's manifests (kept in ``store`` if given); failures are collected.

    With a ``store``, single-manifest images also get their config fetched:
    mirror-bundle.json, the bundle's first entry, lists every image's platform.
    """
    resolved: dict[int, ResolvedImage] = {}
    failures: dict[str, str] = {}
    errors: list[MirrorError] = []
    limiter = anyio.CapacityLimiter(request.jobs)

    def failed(ref: Reference, error: MirrorError) -> None:
        failures[str(ref)] = str(error)
        errors.append(error)

    async def one(index: int, ref: Reference) -> None:
        async with limiter:
            try:
                image = await resolve_image(ref, request, pool)
                if store is not None:
                    for manifest in (image.top, *image.children):
                        store.put_bytes(manifest.digest, manifest.data)
                resolved[index] = image
            except MirrorError as exc:
                failed(ref, exc)
            bar.update(1)

    with progress.bar(len(request.images), "resolving", unit="img") as bar:
        async with anyio.create_task_group() as tg:
            for index, ref in enumerate(request.images):
                tg.start_soon(one, index, ref)
    if store is not None:
        singles = [resolved[i] for i in sorted(resolved) if not resolved[i].top.is_index]
        for image, error in await _read_platforms(singles, request, store, pool, limiter):
            failed(image.ref, error)
            resolved = {i: r for i, r in resolved.items() if r is not image}
    return [resolved[i] for i in sorted(resolved)], failures, errors


async def resolve_image(ref: Reference, request: PullRequest, pool: ClientPool) -> ResolvedImage:
    location = request.sources.locate(ref)
    client = await pool.get(location.host)
    top = await client.get_manifest(location.repository, ref.identifier)
    if not top.is_index:
        blobs = {d.digest: d.size for d in top.children()}
        return ResolvedImage(ref, location, top, [], blobs, platforms=[])

    entries = top.children()
    # A reference pinned by digest names exactly that index: narrowing would change its digest.
    platforms = [] if ref.digest else request.platforms
    selected = [d for d in entries if _wanted(d, platforms)]
    if not selected:
        available = ", ".join(sorted({str(d.platform) for d in entries if d.platform})) or "none"
        wanted = ", ".join(str(p) for p in request.platforms)
        raise UsageError(f"{ref}: no manifest for platform {wanted} (the image has: {available})")
    children: list[Manifest] = []
    blobs: dict[str, int] = {}
    for descriptor in selected:
        child = await client.get_manifest(location.repository, descriptor.digest)
        if child.is_index:
            raise MirrorError(f"{ref}: nested index {descriptor.digest} is not supported")
        children.append(child)
        blobs.update({d.digest: d.size for d in child.children()})
    platforms = sorted({str(d.platform) for d in selected if d.platform and d.platform.os != "unknown"})
    narrowed_from = None
    if len(selected) < len(entries):
        narrowed_from = top.digest
        top = _narrow_index(top, selected)
    return ResolvedImage(ref, location, top, children, blobs, platforms, narrowed_from)


async def _read_platforms(images: list[ResolvedImage], request: PullRequest, store: BlobStore, pool: ClientPool,
                          limiter: anyio.CapacityLimiter) -> list[tuple[ResolvedImage, MirrorError]]:
    """Each single-manifest image's platform, from its config (fetched once per digest).

    Returns the images that fail: config not fetched, or not a requested platform.
    """
    configs = {image.top.children()[0].digest: image for image in reversed(images) if image.top.children()}
    unfetched: dict[str, MirrorError] = {}

    async def fetch(digest: str, image: ResolvedImage) -> None:
        async with limiter:
            if store.has(digest):
                return
            client = await pool.get(image.location.host)
            try:
                await client.download_blob(image.location.repository, digest, store.partial_path(digest))
                store.promote(digest)
                image.fetched[digest] = store.size(digest)
            except MirrorError as exc:
                unfetched[digest] = exc

    async with anyio.create_task_group() as tg:
        for digest, image in configs.items():
            tg.start_soon(fetch, digest, image)
    failed = []
    for image in images:
        if not image.top.children():
            continue
        config = image.top.children()[0].digest
        if config in unfetched:
            failed.append((image, unfetched[config]))
            continue
        try:
            document = json.loads(store.read(config))
            platform = Platform(document["os"], document["architecture"], document.get("variant"))
        except (ValueError, KeyError, TypeError):
            continue  # not an image config (an artifact): no platform to list
        image.platforms = [str(platform)]
        if request.platforms and not image.ref.digest and not any(platform.matches(p) for p in request.platforms):
            wanted = ", ".join(str(p) for p in request.platforms)
            failed.append((image, UsageError(f"{image.ref}: no manifest for platform {wanted} "
                                             f"(the image is only {platform})")))
    return failed


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


class _Abandoned(Exception):
    """The bundle being written is given up because a download failed."""


class Arrivals:
    """Which blobs are in the store: downloads announce them, the bundle writer waits for them.

    Shared between the event loop (downloads) and the writer's thread.
    """

    def __init__(self, present: set[str]):
        self._ready = set(present)
        self._abandoned = False
        self._condition = threading.Condition()

    def arrived(self, digest: str) -> None:
        with self._condition:
            self._ready.add(digest)
            self._condition.notify_all()

    def abandon(self) -> None:
        with self._condition:
            self._abandoned = True
            self._condition.notify_all()

    def wait_for(self, digest: str) -> None:
        with self._condition:
            while digest not in self._ready and not self._abandoned:
                self._condition.wait()
            if self._abandoned:
                raise _Abandoned(digest)


@dataclass
class Fetch:
    """Downloads of every blob not yet in the store, in the order the bundle writes them."""

    store: BlobStore
    pool: ClientPool
    jobs: int
    wanted: dict[str, tuple[int, Location]]  # digest -> size and where to get it
    order: list[str]
    failed: dict[str, MirrorError] = field(default_factory=dict)
    downloaded: int = 0
    verified: set[str] = field(default_factory=set)  # hashed on the way in by this process

    @property
    def missing(self) -> list[str]:
        return [d for d in self.order if d in self.wanted and not self.store.has(d)]

    @property
    def reused(self) -> int:
        return sum(size for d, (size, _) in self.wanted.items() if d not in self.verified)

    async def run(self, arrivals: Arrivals, progress: Progress, abandon_on_failure: bool) -> None:
        limiter = anyio.CapacityLimiter(self.jobs)

        async def one(digest: str, bar: Any) -> None:
            size, location = self.wanted[digest]
            async with limiter:
                client: RegistryClient = await self.pool.get(location.host)
                partial = self.store.partial_path(digest)
                already = partial.stat().st_size if partial.exists() else 0
                bar.update(already)
                try:
                    await client.download_blob(location.repository, digest, partial, progress=bar.update)
                    self.store.promote(digest)
                except OSError as exc:  # the work dir, not the registry: full disk, permissions
                    exc = MirrorError(f"blob {digest}: cannot write to the work dir {self.store.root}: {exc}")
                    self.failed[digest] = exc
                except MirrorError as exc:
                    self.failed[digest] = exc
                if digest in self.failed:
                    if abandon_on_failure:
                        arrivals.abandon()
                    return
                self.downloaded += size - already
                self.verified.add(digest)
                arrivals.arrived(digest)

        missing = self.missing
        try:
            with progress.bar(sum(self.wanted[d][0] for d in missing), "downloading") as bar:
                async with anyio.create_task_group() as tg:
                    for digest in missing:
                        tg.start_soon(one, digest, bar)
        finally:
            if not all(self.store.has(d) for d in missing):
                arrivals.abandon()  # cancelled or failed: the writer thread must not wait for ever


def exit_error(failures: dict[str, str], errors: list[MirrorError]) -> MirrorError:
    """The error a run with failures ends on, with the worst of their exit codes."""
    error = ImagesFailed(failures)
    error.exit_code = worst_exit_code(errors) if errors else ExitCode.FAILED
    return error


def bundle_manifest(request: PullRequest, images: list[ResolvedImage]) -> BundleManifest:
    sizes: dict[str, int] = {}
    for image in images:
        sizes[image.top.digest] = len(image.top.data)
        sizes.update({m.digest: len(m.data) for m in image.children})
        sizes.update(image.blobs)
    return BundleManifest(
        images=[image.record() for image in images],
        blobs=sizes,
        topology=request.topology,
        platforms_requested=[str(p) for p in request.platforms],
    )


async def _write(request: PullRequest, manifest: BundleManifest, store: BlobStore, progress: Progress,
                 verified: set[str], wait_for: Callable[[str], None] | None = None) -> WrittenBundle:
    with progress.bar(manifest.total_size, "writing bundle") as bar:
        return await anyio.to_thread.run_sync(
            lambda: write_bundle(request.output, manifest, store, level=request.compression_level,
                                 part_size=request.part_size, progress=bar.update, verified=verified,
                                 wait_for=wait_for))


async def pull(request: PullRequest, progress: Progress) -> PullResult:
    """Run a whole pull. Failures raise ImagesFailed (no bundle) unless keep_going.

    The bundle is written while the blobs are still downloading (the writer
    waits for each in turn), so disk, network and compression overlap. If a
    download fails the half-written bundle is dropped; with ``keep_going``
    it is written again from the work dir without the failed images.
    """
    if not request.output.parent.is_dir():
        raise UsageError(f"cannot write {request.output}: directory {request.output.parent} does not exist")
    store = BlobStore(request.store_dir)
    async with ClientPool(request.settings_for) as pool:
        images, failures, errors = await resolve_all(request, pool, progress, store)
        if failures and not request.keep_going:
            raise exit_error(failures, errors)
        if not images:
            raise exit_error(failures, errors) if failures else UsageError("no images to pull")
        manifest = bundle_manifest(request, images)
        wanted = {d: (size, image.location) for image in reversed(images) for d, size in image.blobs.items()}
        order = [digest for digest, _ in plan_blobs(manifest, store, pending=True)]
        fetch = Fetch(store, pool, request.jobs, wanted, order)
        for image in images:
            fetch.verified.update(image.fetched)
            fetch.downloaded += sum(image.fetched.values())
        arrivals = Arrivals({d for d in order if store.has(d)})
        bundle: WrittenBundle | None = None
        writer_error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch.run, arrivals, progress, True)
            try:
                bundle = await _write(request, manifest, store, progress, fetch.verified, arrivals.wait_for)
            except _Abandoned:
                pass
            except Exception as exc:  # kept out of the task group, so it surfaces as itself
                writer_error = exc
                tg.cancel_scope.cancel()
        if writer_error is not None:
            raise writer_error

    if fetch.failed:
        kept = []
        for image in images:
            bad = [d for d in image.blobs if d in fetch.failed]
            if bad:
                failures[str(image.ref)] = f"blob {bad[0]}: {fetch.failed[bad[0]]}"
                errors.append(fetch.failed[bad[0]])
            else:
                kept.append(image)
        if not request.keep_going or not kept:
            raise exit_error(failures, errors)
        images, manifest = kept, bundle_manifest(request, kept)
        bundle = await _write(request, manifest, store, progress, fetch.verified)

    result = PullResult(manifest.images, failures, fetch.downloaded, fetch.reused,
                        total_blob_bytes=manifest.total_size, bundle=bundle)
    if request.work_dir is None and not request.keep_work and not failures:
        shutil.rmtree(request.store_dir, ignore_errors=True)  # our own hidden dir; a --work-dir is the user's
    if failures:
        result.exit_code = exit_error(failures, errors).exit_code
    return result
