"""``mirror pull``: resolve images, fetch every unique blob once, write one bundle.

1. resolve: every reference to its manifest bytes (tag -> digest), indexes
   walked and, with ``--platform``, narrowed; all images concurrently;
2. fetch and write, overlapped: the union of all blobs is downloaded once
   into the work dir (a content-addressed store a re-run resumes from) as
   images resolve, while the bundle writer streams each one from the work
   dir into the bundle as soon as it is there (a manifest after all it names).

An image that cannot be resolved or whose blob fails is a failure; without
``keep_going`` any failure means no bundle at all. Each image's blobs are
charged to the work dir's and the bundle's file systems before its downloads
start (``_Room``, diskspace.py): once the pull no longer fits in what was
free when it began, it stops (exit 2) before the disk fills. A disk that
fills anyway (``--no-space-check``, other writers) ends the whole pull in one
line naming the directory and about how much more it needs.

A source registry's rate limit (budget.py) is read before any manifest GET;
what it cannot pay for is deferred: the blobs of what was resolved are still
fetched into the work dir, which is kept, no bundle is written, and the
result says so (exit 6). The same command run after the window continues
from the work dir; with ``wait_for_limit`` the run waits for the window
instead.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import anyio
import httpx

from ..bundle.format import BundleManifest, ImageRecord
from ..bundle.parts import stray_parts
from ..bundle.store import BlobStore
from ..attach.keys import Verifier
from ..bundle.writer import WrittenBundle, plan_blobs, tar_size, write_bundle
from ..diskspace import Space
from ..errors import DiskFull, ExitCode, ImagesFailed, MirrorError, NoRoom, UsageError, worst_exit_code
from ..kit.artifact import Artifact
from ..kit.collect import KitDownloads
from ..kit.fetcher import KitFetcher
from ..kit.items import KitItem
from ..model.oci import Platform
from ..model.reference import Reference
from ..model.upstream import Location, SourceMap
from ..progress import Progress
from ..registry.pool import ClientPool
from ..registry.settings import RegistrySettings
from ..safefiles import own_directory
from ..units import human_size
from .budget import Budget
from .delta import Base
from .fetch import Abandoned, Arrivals, Fetch
from .attachments import PullAttachments, attachment_report
from .resolve import ResolvedImage, Resolver, expect_pulls


@dataclass
class PullRequest:
    images: list[Reference]
    output: Path
    sources: SourceMap
    settings_for: Callable[[str], RegistrySettings]
    platforms: list[Platform] = field(default_factory=list)
    jobs: int = 16
    work_dir: Path | None = None
    keep_going: bool = False
    keep_work: bool = False
    topology: dict[str, Any] | None = None
    compression_level: int = 1  # layers are gzip'd already: level 3 costs ~2x CPU for ~0.5% smaller
    part_size: int | None = None
    base: Base | None = None  # with a base: a delta bundle, leaving out what the base holds
    only_if_changed: bool = False  # with a base: write no bundle when the base holds everything
    space_check: bool = True  # False: --no-space-check
    attachments: bool = True  # carry signatures, attestations, SBOMs and referrers (--no-attachments: not)
    verify_keys: list[Verifier] = field(default_factory=list)  # --verify-key, keyless: an image must be signed
    http_transport: httpx.AsyncBaseTransport | None = None  # under every client: tests inject a fake registry
    wait_for_limit: bool = False  # a spent rate limit is waited for, not deferred to the next run
    log: Callable[[str], None] = lambda line: None  # a line for the user: a wait for a rate limit
    kit: list[KitItem] = field(default_factory=list)  # charts and files, downloaded beside the images
    kit_fetcher: KitFetcher | None = None
    kit_failures: dict[str, str] = field(default_factory=dict)  # items found missing upstream (keep_going)
    kit_causes: dict[str, MirrorError] = field(default_factory=dict)

    @property
    def store_dir(self) -> Path:
        return self.work_dir or self.output.parent / f".{self.output.name}.work"


@dataclass
class PullResult:
    images: list[ImageRecord]
    failures: dict[str, str]
    downloaded_bytes: int = 0
    reused_bytes: int = 0
    bundle: WrittenBundle | None = None
    total_blob_bytes: int = 0
    exit_code: ExitCode = ExitCode.OK  # not OK only with keep_going: a bundle without the failed images
    kind: str = "full"
    base: list[str] = field(default_factory=list)
    omitted: int = 0  # blobs and manifests left to the base
    signatures: dict[str, str] = field(default_factory=dict)  # image source -> verified|present|absent|invalid
    deferred: dict[str, str] = field(default_factory=dict)  # left for the next run by a rate limit: no bundle
    deferral: str | None = None  # one line: how many are left, and when the window reopens
    ratelimits: dict[str, Any] = field(default_factory=dict)  # host -> its budget (budget.Allowance.to_json)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle.path) if self.bundle else None,
            "bundle_size": self.bundle.size if self.bundle else None,
            "bundle_sha256": self.bundle.sha256 if self.bundle else None,
            "parts": [str(p) for p in self.bundle.parts] if self.bundle else [],
            "images": [{"source": r.source, "digest": r.digest, "platforms": r.platforms,
                        "narrowed_from": r.narrowed_from, **attachment_report(r, self.images, self.signatures)}
                       for r in self.images if not r.is_attachment],
            "failures": self.failures,
            "exit_code": int(self.exit_code),
            "downloaded_bytes": self.downloaded_bytes,
            "reused_bytes": self.reused_bytes,
            "unique_blob_bytes": self.total_blob_bytes,
            "kind": self.kind,
            "base": self.base,
            "omitted": self.omitted,
            "deferred": self.deferred,
            "ratelimits": self.ratelimits,
        }


def check_output(output: Path, force: bool) -> None:
    """Refuse, before anything is fetched, an -o that is a directory or (without --force) a bundle."""
    if output.is_dir():
        raise UsageError(f"-o {output}: is a directory; name the bundle file to write, e.g. {output}/bundle.tar.zst")
    if not force and (output.exists() or stray_parts(output, 0)):
        raise UsageError(f"-o {output}: a bundle is already there; pass --force to replace it")


def _drop_own_work_dir(request: PullRequest) -> None:
    """Our own hidden work dir goes once it served; a --work-dir is the user's."""
    if request.work_dir is None and not request.keep_work:
        shutil.rmtree(request.store_dir, ignore_errors=True)


def _base_holds_all(base: Base, images: list[ResolvedImage]) -> bool:
    """Every manifest and blob of every image is in the base: a delta would carry nothing new."""
    return bool(base.ids) and all(
        m.digest in base.digests for image in images for m in image.manifests) and all(
        digest in base.digests for image in images for digest in image.blobs)


def artifact_image(artifact: Artifact) -> ResolvedImage:
    """A kit artifact as pull carries an image: its manifest, config and layer already in the work dir."""
    url = urlsplit(artifact.item.url)
    return ResolvedImage(artifact.item.reference, Location(url.netloc, url.path), artifact.manifest, [],
                         dict(artifact.blobs), [], fetched=dict(artifact.blobs), artifact=artifact.record)


def resolver(request: PullRequest, pool: ClientPool, store: BlobStore | None, budget: Budget | None) -> Resolver:
    return Resolver(pool, request.sources, request.platforms, request.jobs, store, budget)


def _deferral(request: PullRequest, budget: Budget, left: int) -> str:
    """The one line a deferred run ends on: what is left, when it can go on, and how to need less."""
    spent = "; ".join(a.describe() for a in budget.spent_out()) or "a source's rate limit is spent"
    return (f"{left} of {len(request.images)} image(s) left for the next run: {spent}. Run the same command "
            f"again then (the work dir {request.store_dir} keeps what was fetched), or add --wait-for-limit; "
            "signing in (docker login) raises Docker Hub's limit, and a --source-mirror avoids it "
            "(docs/rate-limits.md)")


def exit_error(failures: dict[str, str], causes: dict[str, MirrorError]) -> MirrorError:
    """The error a run with failures ends on, with the worst of their exit codes."""
    error = ImagesFailed(failures, causes)
    error.exit_code = worst_exit_code(causes.values()) if causes else ExitCode.FAILED
    return error


def bundle_manifest(request: PullRequest, images: list[ResolvedImage]) -> BundleManifest:
    sizes: dict[str, int] = {}
    for image in images:
        sizes[image.top.digest] = len(image.top.data)
        sizes.update({m.digest: len(m.data) for m in image.children})
        sizes.update(image.blobs)
    base = request.base or Base()
    return BundleManifest(
        images=[image.record() for image in images],
        blobs=sizes,
        topology=request.topology,
        platforms_requested=[str(p) for p in request.platforms],
        base=list(base.ids),
        omitted=sorted(digest for digest in sizes if digest in base.digests),
        base_registry=dict(base.registries),
        base_names={base_id: name for base_id, name in base.names.items() if base_id in base.ids},
    )


def _stopped_by_full_disk(full: DiskFull, request: PullRequest, store: BlobStore, fetch: Fetch) -> DiskFull:
    """One line for a full disk: which directory, and about how much more this pull needs on its filesystem
    (the blobs still to download when the work dir is there, the bundle when it is)."""
    to_fetch = sum(store.missing_bytes(digest, declared) for digest, (declared, _) in fetch.wanted.items())
    bundle = sum(declared for declared, _ in fetch.wanted.values())  # about the compressed bundle: layers are gzip'd
    device = os.stat(full.directory).st_dev
    needed = ((to_fetch if os.stat(store.root).st_dev == device else 0)
              + (bundle if os.stat(request.output.parent).st_dev == device else 0))
    free = shutil.disk_usage(full.directory).free
    return DiskFull(f"{full.directory} is full ({full.reason}): this pull needs about {human_size(needed)} more "
                    f"there, {human_size(free)} is free; free some, or put the work dir (--work-dir) or the bundle "
                    "(-o) on a larger disk", full.directory, full.reason)


class _Room:
    """The pull's space check: each resolved image is charged before its downloads start.

    Its manifests and its blobs not charged yet go into the bundle; those not in the
    work dir yet (less what a partial holds) into the work dir; on one file system both.
    """

    def __init__(self, request: PullRequest, store: BlobStore, fetch: Fetch):
        self.space = Space("this pull")
        advice = "free some, or put the work dir (--work-dir) or the bundle (-o) on a larger disk"
        self.bundle = self.space.where(request.output.parent, "the bundle", advice)
        self.work = self.space.where(store.root, "the work dir", advice)
        self.store, self.fetch, self.total = store, fetch, len(request.images)  # attachments are not counted
        self.manifests: set[str] = set()
        self.admitted = 0

    def admit(self, image: ResolvedImage) -> None:
        """Charge ``image``; NoRoom once the pull no longer fits (then nothing of it was queued)."""
        manifests = [len(m.data) for m in image.manifests if m.digest not in self.manifests]
        self.manifests.update(m.digest for m in image.manifests)
        blobs = self.fetch.new(image.blobs)
        # A config fetched while resolving is in the store already, but was written after the free space was measured.
        self.work.add_files([*manifests, *(size if digest in image.fetched else self.store.missing_bytes(digest, size)
                                           for digest, size in blobs.items())])
        self.bundle.add(sum(tar_size(size) for size in [*manifests, *blobs.values()]))
        self.admitted += image.attached_to is None
        self.space.check(None if self.admitted == self.total else
                         f"for the {self.admitted} of {self.total} images resolved so far")


async def _write(request: PullRequest, manifest: BundleManifest, store: BlobStore, progress: Progress,
                 verified: set[str], arrived: Callable[[set[str]], set[str]] | None = None) -> WrittenBundle:
    with progress.bar(manifest.total_size, "writing bundle") as bar:
        return await anyio.to_thread.run_sync(
            lambda: write_bundle(request.output, manifest, store, level=request.compression_level,
                                 part_size=request.part_size, progress=bar.update, verified=verified,
                                 arrived=arrived))


async def pull(request: PullRequest, progress: Progress) -> PullResult:
    """Run a whole pull. Failures raise ImagesFailed (no bundle) unless keep_going, or unless a rate
    limit deferred images: then the result says so (no bundle, exit 6 or the failures' code).

    The bundle is written while the blobs are still downloading (the writer
    waits for each in turn), so disk, network and compression overlap. If a
    download fails the half-written bundle is dropped; with ``keep_going``
    it is written again from the work dir without the failed images.
    """
    if not request.output.parent.is_dir():
        raise UsageError(f"cannot write {request.output}: directory {request.output.parent} does not exist")
    made_work_dir = request.work_dir is None and not request.store_dir.exists()
    if request.work_dir is None:  # ours, at a name anyone can predict; a --work-dir is the user's choice
        own_directory(request.store_dir)
    store = BlobStore(request.store_dir)
    base = request.base or Base()
    bundle: WrittenBundle | None = None
    writer_error: BaseException | None = None
    refused: list[NoRoom] = []
    surveyed: list[Exception] = []  # what reading the sources' rate limits raised
    async with ClientPool(request.settings_for, request.http_transport) as pool:
        budget = Budget(pool, wait=request.wait_for_limit, log=request.log)
        fetch = Fetch(store, pool, request.jobs, skip=base.digests)
        room = _Room(request, store, fetch) if request.space_check else None
        arrivals = Arrivals()
        kit = KitDownloads(request.kit, store, request.kit_fetcher or KitFetcher(), arrivals.arrived, arrivals.abandon)
        async with anyio.create_task_group() as tg:
            # the kit, from hosts of its own, downloads from the start: while the sources' rate limits are
            # read (round trips the link would idle through), then beside the images
            tg.start_soon(kit.run)
            try:
                await expect_pulls(pool, request.sources, request.images)  # before the survey's first request
                await budget.survey(request.sources, request.images)
            except Exception as exc:  # raised below, outside the task group, as itself
                surveyed.append(exc)
                tg.cancel_scope.cancel()

            def resolved(image: ResolvedImage) -> None:
                """Its downloads start at once, if the pull still fits; else the pull stops here."""
                if refused:
                    return
                try:
                    if room is not None:
                        room.admit(image)
                except NoRoom as exc:
                    refused.append(exc)
                    tg.cancel_scope.cancel()
                    return
                fetch.want(image.blobs, image.location)

            tg.start_soon(fetch.run, arrivals, progress, True)
            # the attachments are looked up while the images resolve, not after them
            attached = PullAttachments(pool, store, resolved, request.attachments, request.verify_keys, budget)
            async with anyio.create_task_group() as first:
                resolution = await resolver(request, pool, store, budget).resolve_all(
                    request.images, progress, lambda image: (resolved(image), attached.look_up(image, first)))
            attached.settle(resolution)
            fetch.no_more()  # before the kit is in: connections left idle meanwhile help with the last blobs
            # once every kit item is described: a file's body may still be coming, and the writer takes
            # it when it arrives, as an image's blob
            await kit.described.wait()
            images = resolution.images + [artifact_image(artifact) for artifact in kit.take()]
            failures = {**resolution.failures, **request.kit_failures, **kit.failures}
            causes = {**resolution.causes, **request.kit_causes, **kit.causes}
            deferred = resolution.deferred
            unchanged = request.only_if_changed and not failures and not deferred and _base_holds_all(base, images)
            if deferred:
                pass  # no bundle: the downloads of what was resolved go on into the work dir, for the next run
            elif (failures and not request.keep_going) or not images or unchanged:
                tg.cancel_scope.cancel()  # raised (or returned) below, outside the task group
            else:
                manifest = bundle_manifest(request, images)
                for image in images:
                    fetch.verified.update(image.fetched)
                    fetch.downloaded += sum(image.fetched.values())
                for digest, _ in plan_blobs(manifest, store, pending=True):
                    if store.has(digest) and not kit.coming(digest):
                        arrivals.arrived(digest)
                try:
                    bundle = await _write(request, manifest, store, progress, fetch.verified, arrivals.among)
                except Abandoned:
                    pass
                except Exception as exc:  # kept out of the task group, so it surfaces as itself
                    writer_error = exc
                    tg.cancel_scope.cancel()
    if surveyed:
        raise surveyed[0]
    if refused:  # before the disk filled: a work dir this run made held only manifests and the first downloads
        if made_work_dir:
            shutil.rmtree(request.store_dir, ignore_errors=True)
        raise refused[0]
    # kit items that failed once they were in the bundle being written (which gave it up)
    lost = {str(artifact.item.reference) for artifact in kit.lost()}
    images = [image for image in images if str(image.ref) not in lost]
    failures.update(kit.failures)
    causes.update(kit.causes)
    full = next((e for e in (writer_error, *fetch.failed.values(), *causes.values()) if isinstance(e, DiskFull)),
                None)
    if full is not None:  # the disk, not the images: no use going on with the others
        raise _stopped_by_full_disk(full, request, store, fetch)
    if deferred:
        return _deferred(request, budget, images, failures, causes, deferred, fetch)
    if failures and not request.keep_going:
        raise exit_error(failures, causes)
    if not images:
        raise exit_error(failures, causes) if failures else UsageError("no images to pull")
    if writer_error is not None:
        raise writer_error
    if unchanged:
        _drop_own_work_dir(request)
        return PullResult([image.record() for image in images], failures, kind="delta", base=list(base.ids))

    if fetch.failed or lost:
        kept = _without_failed_blobs(images, fetch, failures, causes)
        if not request.keep_going or not kept:
            raise exit_error(failures, causes)
        images, manifest = kept, bundle_manifest(request, kept)
        try:
            bundle = await _write(request, manifest, store, progress, fetch.verified)
        except DiskFull as full:
            raise _stopped_by_full_disk(full, request, store, fetch) from None

    layers = {d for image in images for d in image.blobs} & manifest.stored_blobs.keys()
    result = PullResult(manifest.images, failures, fetch.downloaded, fetch.reused(layers),
                        total_blob_bytes=manifest.total_size, bundle=bundle, kind=manifest.kind,
                        base=list(manifest.base), omitted=len(manifest.omitted), ratelimits=_ratelimits(budget),
                        signatures={source: v.status for source, v in attached.verdicts.items()})
    if not failures:
        _drop_own_work_dir(request)
    if failures:
        result.exit_code = exit_error(failures, causes).exit_code
    return result


def _deferred(request: PullRequest, budget: Budget, images: list[ResolvedImage], failures: dict[str, str],
              causes: dict[str, MirrorError], deferred: dict[str, str], fetch: Fetch) -> PullResult:
    """A run a rate limit cut short: no bundle, the work dir kept; exit 6, or a failure's code if any."""
    kept = _without_failed_blobs(images, fetch, failures, causes)
    downloaded = fetch.downloaded + sum(sum(image.fetched.values()) for image in images)
    result = PullResult([image.record() for image in kept], failures, downloaded, deferred=deferred,
                        exit_code=ExitCode.DEFERRED, deferral=_deferral(request, budget, len(deferred)),
                        ratelimits=_ratelimits(budget))
    if failures:
        result.exit_code = exit_error(failures, causes).exit_code
    return result


def _without_failed_blobs(images: list[ResolvedImage], fetch: Fetch, failures: dict[str, str],
                          causes: dict[str, MirrorError]) -> list[ResolvedImage]:
    """The images whose blobs all arrived; each of the others joins ``failures``, naming its first failed blob."""
    kept = []
    for image in images:
        bad = [d for d in image.blobs if d in fetch.failed]
        if bad:
            failures[str(image.ref)] = f"blob {bad[0]}: {fetch.failed[bad[0]]}"
            causes[str(image.ref)] = fetch.failed[bad[0]]
        else:
            kept.append(image)
    return kept


def _ratelimits(budget: Budget) -> dict[str, Any]:
    return {host: allowance.to_json() for host, allowance in sorted(budget.allowances.items())}
