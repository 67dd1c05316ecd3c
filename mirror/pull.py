"""``mirror pull``: resolve images, fetch every unique blob once, write one bundle.

Three phases, each concurrent where it can be:

1. resolve: every reference to its manifest bytes (tag -> digest), indexes
   walked and, with ``--platform``, narrowed;
2. fetch: the union of all blobs, each downloaded once into the work dir
   (a content-addressed store that a re-run resumes from), largest first so
   the long transfers start early;
3. write: the bundle, streamed from the work dir under a temp name.

An image that cannot be resolved or whose blob fails is a failure; without
``keep_going`` any failure means no bundle at all.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import anyio

from .bundle.format import BundleManifest, ImageRecord
from .bundle.writer import WrittenBundle, write_bundle
from .errors import AuthError, ExitCode, ImagesFailed, IntegrityError, MirrorError, UsageError
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
    compression_level: int = 3
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
            "failed": self.failures,
            "downloaded_bytes": self.downloaded_bytes,
            "reused_bytes": self.reused_bytes,
            "unique_blob_bytes": self.total_blob_bytes,
        }


async def resolve_all(
    request: PullRequest, pool: ClientPool, progress: Progress, store: BlobStore | None
) -> tuple[list[ResolvedImage], dict[str, str], list[MirrorError]]:
    """Fetch every image's manifests (kept in ``store`` if given); failures are collected."""
    resolved: dict[int, ResolvedImage] = {}
    failures: dict[str, str] = {}
    errors: list[MirrorError] = []
    limiter = anyio.CapacityLimiter(request.jobs)

    async def one(index: int, ref: Reference) -> None:
        async with limiter:
            try:
                image = await resolve_image(ref, request, pool)
                if store is not None:
                    for manifest in (image.top, *image.children):
                        store.put_bytes(manifest.digest, manifest.data)
                resolved[index] = image
            except MirrorError as exc:
                failures[str(ref)] = str(exc)
                errors.append(exc)
            bar.update(1)

    with progress.bar(len(request.images), "resolving", unit="img") as bar:
        async with anyio.create_task_group() as tg:
            for index, ref in enumerate(request.images):
                tg.start_soon(one, index, ref)
    return [resolved[i] for i in sorted(resolved)], failures, errors


async def resolve_image(ref: Reference, request: PullRequest, pool: ClientPool) -> ResolvedImage:
    location = request.sources.locate(ref)
    client = await pool.get(location.host)
    top = await client.get_manifest(location.repository, ref.identifier)
    if not top.is_index:
        blobs = {d.digest: d.size for d in top.children()}
        return ResolvedImage(ref, location, top, [], blobs, platforms=[])

    entries = top.children()
    selected = [d for d in entries if _wanted(d, request.platforms)]
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


async def fetch_blobs(
    images: list[ResolvedImage], store: BlobStore, pool: ClientPool, jobs: int, progress: Progress
) -> tuple[dict[str, MirrorError], int, int]:
    """Download each blob of ``images`` not yet in ``store``, once, largest first."""
    wanted: dict[str, tuple[int, Location]] = {}
    for image in images:
        for digest, size in image.blobs.items():
            wanted.setdefault(digest, (size, image.location))
    missing = sorted((d for d in wanted if not store.has(d)), key=lambda d: -wanted[d][0])
    reused = sum(wanted[d][0] for d in wanted if store.has(d))
    failed: dict[str, MirrorError] = {}
    limiter = anyio.CapacityLimiter(jobs)
    downloaded = 0

    async def one(digest: str, bar: Any) -> None:
        nonlocal downloaded
        size, location = wanted[digest]
        async with limiter:
            client: RegistryClient = await pool.get(location.host)
            partial = store.partial_path(digest)
            already = partial.stat().st_size if partial.exists() else 0
            bar.update(already)
            try:
                await client.download_blob(location.repository, digest, partial, progress=bar.update)
                store.promote(digest)
                downloaded += size - already
            except MirrorError as exc:
                failed[digest] = exc

    total = sum(wanted[d][0] for d in missing)
    with progress.bar(total, "downloading") as bar:
        async with anyio.create_task_group() as tg:
            for digest in missing:
                tg.start_soon(one, digest, bar)
    return failed, downloaded, reused


def _platform_of_config(store: BlobStore, image: ResolvedImage) -> list[str]:
    """For a single-manifest image, its platform as its config states it."""
    config = image.top.children()[0] if image.top.children() else None
    if config is None or not store.has(config.digest):
        return []
    try:
        document = json.loads(store.read(config.digest))
        platform = Platform(document["os"], document["architecture"], document.get("variant"))
    except (ValueError, KeyError, TypeError):
        return []
    return [str(platform)]


def exit_error(failures: dict[str, str], errors: list[MirrorError]) -> MirrorError:
    """The error a run with failures ends on: integrity beats auth beats the rest."""
    error = ImagesFailed(failures)
    for kind in (IntegrityError, AuthError):
        if any(isinstance(e, kind) for e in errors):
            error.exit_code = kind.exit_code
            break
    return error


async def pull(request: PullRequest, progress: Progress) -> PullResult:
    """Run a whole pull. Failures raise ImagesFailed (no bundle) unless keep_going."""
    store = BlobStore(request.store_dir)
    async with ClientPool(request.settings_for) as pool:
        images, failures, errors = await resolve_all(request, pool, progress, store)
        if failures and not request.keep_going:
            raise exit_error(failures, errors)
        failed_blobs, downloaded, reused = await fetch_blobs(images, store, pool, request.jobs, progress)

    if failed_blobs:
        kept = []
        for image in images:
            bad = [d for d in image.blobs if d in failed_blobs]
            if bad:
                failures[str(image.ref)] = f"blob {bad[0]}: {failed_blobs[bad[0]]}"
                errors.append(failed_blobs[bad[0]])
            else:
                kept.append(image)
        images = kept
        if not request.keep_going:
            raise exit_error(failures, errors)

    for image in images:
        if not image.top.is_index:
            image.platforms = _platform_of_config(store, image)
    records = [image.record() for image in images]
    sizes: dict[str, int] = {}
    for image in images:
        sizes[image.top.digest] = len(image.top.data)
        sizes.update({m.digest: len(m.data) for m in image.children})
        sizes.update(image.blobs)
    manifest = BundleManifest(
        images=records,
        blobs=sizes,
        topology=request.topology,
        platforms_requested=[str(p) for p in request.platforms],
    )
    result = PullResult(records, failures, downloaded, reused, total_blob_bytes=sum(sizes.values()))
    if not records:
        raise exit_error(failures, errors) if failures else UsageError("no images to pull")

    with progress.bar(sum(sizes.values()), "writing bundle") as bar:
        result.bundle = await anyio.to_thread.run_sync(
            lambda: write_bundle(request.output, manifest, store, level=request.compression_level,
                                 part_size=request.part_size, progress=bar.update)
        )
    if not request.keep_work:
        shutil.rmtree(request.store_dir, ignore_errors=True)
    if failures:
        result.exit_code = exit_error(failures, errors).exit_code
    return result
