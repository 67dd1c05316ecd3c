"""``mirror sync``: copy images from their sources straight into a target registry.

check (HEAD the tag on both sides: HEADs do not count against Docker Hub's
rate limit; an image whose tag already has the source's digest costs those
two HEADs and nothing else) -> budget (the source's ``ratelimit-remaining``:
what does not fit is deferred to the next run) -> resolve (GET the
manifests of what changed, with the Resolver pull uses) -> deliver (one
Presence over every plan: blobs stream source -> target, re-hashed on the
way and never on disk, each uploaded once and mounted into the other
repositories; manifests after their children; retag backups; tags last,
only on complete images) -> prune (entries with ``prune: true``: the tags of
their repositories no entry selects any more, with ``transfer/prune.py``;
only where every wanted image of the repository is in, so a failed copy
never leaves a repository with fewer versions than before).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import anyio
import httpx

from ..attach.keys import VERIFIED
from ..clock import utc_now
from ..errors import ExitCode, IntegrityError, MirrorError, NotFoundError, worst_exit_code
from ..model.oci import Descriptor, Platform
from ..model.reference import Reference
from ..model.target import backup_tag, target_repository
from ..model.upstream import Location, SourceMap
from ..progress import Progress
from ..registry.client import RegistryClient
from ..registry.pool import ClientPool
from ..registry.ratelimit import RateLimit
from ..registry.settings import RegistrySettings
from .attachments import Subject, copy_attachments, signatures_at_source, subjects_of, unsigned
from .deliver import Delivery
from .plan import ImagePlan, Target
from .prune import DeletesRefused, KeptSet, PruneReport, prune
from .resolve import ResolvedImage, Resolver
from .selection import SkippedTags, SyncImage, TagSelection
from .survey import Presence
from .tasks import each

RETAG_POLICIES = ("update", "backup", "fail")
# What happened to an image, in reports' order.
ACTIONS = ("copied", "updated", "attached", "moved", "unchanged", "deferred", "failed")


@dataclass
class SyncRequest:
    images: list[SyncImage]  # references named one by one
    target: Target | None  # None: the job writes delta bundles (sync_bundle.BundleTarget)
    sources: SourceMap
    settings_for: Callable[[str], RegistrySettings]
    platforms: list[Platform] = field(default_factory=list)
    jobs: int = 8
    dry_run: bool = False
    keep_going: bool = False  # without it, a failure found before any write stops the run
    config_sha256: str | None = None
    selections: list[TagSelection] = field(default_factory=list)  # tags listed at run time
    http_transport: httpx.AsyncBaseTransport | None = None  # under every client: tests inject a fake registry
    prune: list[str] = field(default_factory=list)  # registry/repository names whose unwanted tags go (prune: true)
    attachments: bool = True  # signatures, attestations, SBOMs and referrers follow their images
    verify_keys: list[Any] = field(default_factory=list)  # attach.keys.Verifier: what must vouch for a copy


@dataclass
class ImageResult:
    source: str
    target: str
    # copied | updated | unchanged | attached (unchanged, new attachments copied) | moved (an immutable tag,
    # left) | deferred | failed
    action: str = "pending"
    old_digest: str | None = None  # what the target's tag pointed at before the run
    new_digest: str | None = None
    error: str | None = None
    backup_tag: str | None = None  # on_retag backup: where the old image stays tagged
    image: SyncImage | None = field(default=None, repr=False)
    repository: str = field(default="", repr=False)
    source_head: Descriptor | None = field(default=None, repr=False)
    resolved: ResolvedImage | None = field(default=None, repr=False)
    plan: ImagePlan | None = field(default=None, repr=False)
    exception: MirrorError | None = field(default=None, repr=False)
    attachments: list[str] = field(default_factory=list)  # copied this run: cosign tags, referrers' digests
    signatures: str | None = None  # with verify_keys, of an image copied or updated: verified | absent | invalid

    def fail(self, error: MirrorError | str) -> None:
        self.action = "failed"
        self.error = str(error)
        self.exception = error if isinstance(error, MirrorError) else MirrorError(error)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "action": self.action,
                "old_digest": self.old_digest, "new_digest": self.new_digest, "backup_tag": self.backup_tag,
                "attachments": self.attachments, "signatures": self.signatures, "error": self.error}


@dataclass
class SyncResult:
    target: str
    run_id: str
    started: str
    ended: str = ""
    images: list[ImageResult] = field(default_factory=list)
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    mounted_blobs: int = 0
    skipped_blobs: int = 0  # already in their repository
    manifests_pushed: int = 0
    tags_pushed: int = 0
    ratelimits: dict[str, RateLimit] = field(default_factory=dict)
    config_sha256: str | None = None
    dry_run: bool = False
    delta: dict[str, Any] | None = None  # a run to a bundle: what it wrote (path null: nothing changed)
    skipped_tags: list[SkippedTags] = field(default_factory=list)
    pruned: PruneReport | None = None  # entries with prune: true
    not_pruned: dict[str, str] = field(default_factory=dict)  # repository -> why its prune waits for a later run

    def count(self, action: str) -> int:
        return sum(1 for image in self.images if image.action == action)

    @property
    def result(self) -> str:
        failed = self.count("failed")
        if failed and failed == len(self.images):
            return "failed"
        if failed or self.prune_failures:
            return "partial"
        return "deferred" if self.count("deferred") else "ok"

    @property
    def exit_code(self) -> ExitCode:
        errors = [i.exception or MirrorError(i.error or "") for i in self.images if i.action == "failed"]
        if errors:
            return worst_exit_code(errors)
        if self.prune_failures:
            return ExitCode.FAILED
        return ExitCode.DEFERRED if self.count("deferred") else ExitCode.OK

    @property
    def prune_failures(self) -> dict[str, str]:
        return self.pruned.failures if self.pruned else {}

    @property
    def failures(self) -> dict[str, str]:
        return {i.source: i.error or "" for i in self.images if i.action == "failed"} | self.prune_failures

    @property
    def causes(self) -> dict[str, MirrorError]:
        return {i.source: i.exception for i in self.images if i.action == "failed" and i.exception is not None}

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "config_sha256": self.config_sha256,
            "started": self.started,
            "ended": self.ended,
            "target": self.target,
            "dry_run": self.dry_run,
            "result": self.result,
            "exit_code": int(self.exit_code),
            "images": [i.to_json() for i in sorted(self.images, key=lambda i: (i.source, i.target))],
            **({"bundle": self.delta} if self.delta is not None else {
                "blobs": {"uploaded": self.uploaded_blobs, "mounted": self.mounted_blobs,
                          "skipped": self.skipped_blobs},
                "bytes": {"uploaded": self.uploaded_bytes},
                "manifests_pushed": self.manifests_pushed,
                "tags_pushed": self.tags_pushed}),
            "ratelimits": {host: {"remaining": r.remaining, "limit": r.limit, "window": r.window}
                           for host, r in sorted(self.ratelimits.items())},
            "skipped_tags": [skipped.to_json() for skipped in self.skipped_tags],
            "pruned": [tag.to_json() for tag in self.pruned.pruned] if self.pruned else [],
            "prune_skipped": [tag.to_json() for tag in self.pruned.skipped] if self.pruned else [],
            "not_pruned": self.not_pruned | self.prune_failures,
        }


@dataclass
class Wanted:
    images: list[SyncImage]  # each once: those the job names, then each selection's tags as listed now
    unlisted: list[tuple[Reference, MirrorError]]  # repositories whose tags could not be listed, with why
    skipped: list[SkippedTags]  # entries of the tag lists that are no tags


async def wanted_images(request: SyncRequest, pool: ClientPool) -> Wanted:
    """The job's images: those it names, then each selection's tags as listed now."""
    images: dict[Reference, SyncImage] = {}
    for image in request.images:
        images.setdefault(image.ref, image)
    unlisted: list[tuple[Reference, MirrorError]] = []
    skipped: list[SkippedTags] = []
    for selection in request.selections:
        try:
            listed = await selection.list_tags(pool, request.sources)
        except MirrorError as exc:
            unlisted.append((selection.repository, exc))
            continue
        chosen, bad = selection.select(listed)  # a config mistake found on these tags ends the run (exit 2)
        for image in chosen:
            images.setdefault(image.ref, image)
        skipped += [bad] if bad else []
    return Wanted(list(images.values()), unlisted, skipped)


async def sync(request: SyncRequest, progress: Progress) -> SyncResult:
    """One run. Per-image outcomes are in the result; setup errors (target unreachable, auth) raise."""
    target = request.target
    assert target is not None, "a job without a target registry writes bundles (sync_bundle)"
    result = SyncResult(str(target.address), uuid.uuid4().hex, utc_now(), config_sha256=request.config_sha256,
                        dry_run=request.dry_run)
    async with ClientPool(request.settings_for, request.http_transport) as pool, \
            RegistryClient(target.host, target.settings, http_transport=request.http_transport) as client:
        await client.ping()
        wanted = await wanted_images(request, pool)
        result.skipped_tags = wanted.skipped
        for repository, exc in wanted.unlisted:
            entry = ImageResult(repository.name, f"{target.host}/{target_repository(repository, target.prefix)}")
            entry.fail(exc)
            result.images.append(entry)
        for image in wanted.images:
            repository = target_repository(image.ref, target.prefix)
            where = f":{image.ref.tag}" if image.ref.tag else f"@{image.ref.digest}"
            result.images.append(ImageResult(str(image.ref), f"{target.host}/{repository}{where}", image=image,
                                             repository=repository))
        run = SyncRun(request, target, result, pool, client, progress)
        await run.check()
        if not request.dry_run:
            await run.resolve()
            if request.verify_keys:
                await run.verify()
            if request.keep_going or not any(i.action == "failed" for i in result.images):
                await run.deliver()
                if request.attachments:
                    await run.attach()
            else:
                for image in result.images:
                    if image.action == "pending":
                        image.fail("not copied: another image failed before anything was written "
                                   "(--keep-going copies the rest)")
        await run.prune(wanted)
    result.ended = utc_now()
    return result


class SyncRun:
    def __init__(self, request: SyncRequest, target: Target, result: SyncResult, pool: ClientPool,
                 client: RegistryClient, progress: Progress):
        self.request, self.target, self.result = request, target, result
        self.pool, self.client, self.progress = pool, client, progress

    # -- check: two HEADs per image ------------------------------------------------

    async def check(self) -> None:
        async def one(image: ImageResult) -> None:
            if image.image is None:  # an entry whose tags could not be listed
                return
            try:
                await self._check(image)
            except MirrorError as exc:
                image.fail(exc)
            bar.update(1)

        with self.progress.bar(len(self.result.images), "checking", unit="img") as bar:
            await each(self.result.images, one, self.request.jobs)
        _defer_past_budget(self.request, self.result)
        if self.request.dry_run:
            for image in self.result.images:
                if image.action == "pending":
                    image.action = "updated" if image.old_digest else "copied"

    async def _check(self, image: ImageResult) -> None:
        assert image.image is not None
        ref = image.image.ref
        current = await self.client.head_manifest(image.repository, ref.identifier)
        image.old_digest = current.digest if current else None
        location = self.request.sources.locate(ref)
        source = await self.pool.get(location.host)
        upstream = await source.head_manifest(location.repository, ref.identifier)
        limit = RateLimit.parse(source.last_ratelimit)
        if limit is not None:
            allowed = RateLimit.parse(source.last_ratelimit_limit)
            limit.limit = allowed.remaining if allowed else None
            known = self.result.ratelimits.get(location.host)
            if known is None or limit.remaining < known.remaining:
                self.result.ratelimits[location.host] = limit
        if upstream is None:
            raise NotFoundError(f"{ref}: not found at {location.host}/{location.repository}")
        image.source_head, image.new_digest = upstream, upstream.digest
        if current is not None and current.digest == upstream.digest:
            image.action = "unchanged"
        elif current is not None and image.image.immutable:  # never replaced: a move upstream is said, not copied
            image.action = "moved"
        elif not self.request.platforms:  # a narrowed index differs from upstream anyway: judged once resolved
            _refuse_retag(image)

    # -- resolve: GET the manifests of what changed ----------------------------------

    async def resolve(self) -> None:
        request = self.request
        resolver = Resolver(self.pool, request.sources, request.platforms, request.jobs, store=None)
        pending = [image for image in self.result.images if image.action == "pending"]

        async def one(image: ImageResult) -> None:
            assert image.image is not None
            try:
                resolved = await resolver.resolve(image.image.ref)
            except MirrorError as exc:
                image.fail(exc)
                return
            image.resolved, image.new_digest = resolved, resolved.top.digest
            if image.old_digest == resolved.top.digest:  # a narrowed index already synced
                image.action = "unchanged"
                return
            _refuse_retag(image)
            if image.action == "failed":
                return
            image.plan = ImagePlan.of(resolved.record(), self.target.prefix)

        await each(pending, one, request.jobs)

    # -- deliver: blobs, manifests, backups, tags ----------------------------------

    async def deliver(self) -> None:
        images = [image for image in self.result.images if image.plan is not None and image.action == "pending"]
        if not images:
            return
        plans = [image.plan for image in images if image.plan]
        request, client = self.request, self.client
        presence = Presence(plans)
        await presence.survey(client, request.jobs)
        delivery = Delivery(self.target, client, plans, presence, request.jobs)
        self.result.skipped_blobs += len(presence.blob_repos) - len(presence.missing_blobs)
        self.result.mounted_blobs += await presence.mount_known(client, request.jobs)
        origins: dict[str, tuple[Location, int]] = {}
        for image in images:
            assert image.resolved is not None
            for digest, size in image.resolved.blobs.items():
                origins.setdefault(digest, (image.resolved.location, size))
        missing = sorted(presence.missing_blobs, key=lambda d: -origins[d][1])  # largest first: they end last
        arrived: set[str] = set()

        async def place(digest: str) -> None:
            location, size = origins[digest]
            await delivery.place_blob(digest, size, self._streamed(location, digest, size))

        with self.progress.bar(sum(origins[d][1] for d in missing), "copying") as bar:
            delivery.progress = bar.update
            async with anyio.create_task_group() as group:
                for image in images:
                    assert image.resolved is not None
                    for manifest in image.resolved.manifests:
                        if manifest.digest not in arrived:
                            arrived.add(manifest.digest)
                            delivery.manifest_arrived(manifest, group)
                group.start_soon(each, missing, place, request.jobs)
        await self._backups(images, presence, delivery)
        await delivery.tag_all()
        report = delivery.report
        self.result.uploaded_blobs += report.uploaded_blobs
        self.result.uploaded_bytes += report.uploaded_bytes
        self.result.mounted_blobs += report.mounted_blobs
        self.result.manifests_pushed += report.manifests_pushed
        self.result.tags_pushed += report.tags_pushed
        for image in images:
            if image.action != "pending":
                continue  # its backup failed
            assert image.plan is not None
            failure = report.failures.get(image.plan.record.source)
            if failure is not None:
                image.fail(presence.image_error(image.plan) or delivery.fatal or MirrorError(failure))
                image.error = failure
            else:
                image.action = "updated" if image.old_digest else "copied"

    async def verify(self) -> None:
        """An image about to be copied or updated must carry a signature a verifier vouches for, read
        from its source (by digest); one that does not fails before anything of it is written."""
        pending = [image for image in self.result.images if image.action == "pending" and image.resolved]
        verdicts = await signatures_at_source([image.resolved for image in pending if image.resolved], self.pool,
                                              self.request.verify_keys, self.request.jobs)
        for image, verdict in zip(pending, verdicts):
            image.signatures = verdict.status
            if verdict.status != VERIFIED:
                image.fail(unsigned(verdict))

    async def attach(self) -> None:
        """After the images' tags: the attachments the target lacks of every image in place
        (docs/signatures.md); an unchanged image that gained one is ``attached``."""
        subjects: dict[int, Subject] = {}
        for image in self.result.images:
            if image.action in ("copied", "updated", "unchanged") and image.image and not image.image.immutable:
                resolved = image.resolved
                digests = ([*subjects_of(resolved), *(m.digest for m in resolved.children)] if resolved
                           else [image.source_head.digest if image.source_head else image.new_digest or ""])
                subjects[id(image)] = Subject(image.image.ref, image.repository, [d for d in digests if d])
        await copy_attachments(list(subjects.values()), self.request.sources, self.pool, self.client, self.target,
                               self.request.jobs, self._streamed)
        for image in self.result.images:
            subject = subjects.get(id(image))
            if subject is None:
                continue
            image.attachments = subject.written
            if subject.error is not None:
                image.fail(subject.error)
            elif subject.written and image.action == "unchanged":
                image.action = "attached"

    # -- prune: the tags no entry selects any more ----------------------------------

    async def prune(self, wanted: Wanted) -> None:
        """Entries with ``prune: true`` (a repository, or each repository of a topology's images): every tag
        of those repositories that no entry of the job wants now.

        A repository is pruned only once all it should hold is in: one whose tags could not be listed,
        or with an image that failed or was deferred, waits for a later run (``not_pruned``).
        """
        prefix = self.target.prefix
        asked = {target_repository(Reference.parse(name), prefix) for name in self.request.prune}
        if not asked:
            return
        waiting = {target_repository(ref, prefix): f"its tags could not be listed: {exc}"
                   for ref, exc in wanted.unlisted}
        for image in self.result.images:
            if image.repository in asked and image.action in ("failed", "deferred", "pending"):
                waiting.setdefault(image.repository, f"{image.source} is {image.action}: pruned once it is in")
        self.result.not_pruned = {repository: why for repository, why in waiting.items() if repository in asked}
        repositories = asked - set(waiting)
        kept = KeptSet({image.ref for image in wanted.images})
        try:
            self.result.pruned = await prune(self.client, self.target, kept, repositories=repositories,
                                             dry_run=self.request.dry_run, jobs=self.request.jobs)
        except DeletesRefused as exc:  # the copies are done: their report stands, with why nothing was pruned
            self.result.pruned = PruneReport(str(self.target.address), self.request.dry_run, sorted(repositories),
                                             failures={repository: str(exc) for repository in repositories})

    async def _backups(self, images: list[ImageResult], presence: Presence, delivery: Delivery) -> None:
        """``on_retag: backup``: tag the old image ``TAG-prev-<12 hex>`` before its tag moves.

        Only for complete images (the others keep their tag anyway); an image
        whose backup fails is not retagged.
        """
        async def one(image: ImageResult) -> None:
            assert image.image is not None and image.plan is not None and image.old_digest
            tag = image.image.ref.tag
            if tag is None or presence.image_error(image.plan) is not None:
                return
            try:
                old = await self.client.get_manifest(image.repository, image.old_digest)
                await self.client.put_manifest(image.repository, backup_tag(tag, image.old_digest), old)
                image.backup_tag = backup_tag(tag, image.old_digest)
            except MirrorError as exc:
                image.fail(MirrorError(f"backup of {image.target} ({image.old_digest}) failed, so it "
                                       f"was not moved: {exc}"))
                delivery.plans.remove(image.plan)

        wanted = [i for i in images if i.old_digest and i.image and i.image.on_retag == "backup"]
        await each(wanted, one, self.request.jobs)

    def _streamed(self, location: Location, digest: str, size: int) -> Callable[[], AsyncIterator[bytes]]:
        """A fresh source stream per upload attempt, hashed as it goes through."""
        pool = self.pool

        async def stream() -> AsyncIterator[bytes]:
            source = await pool.get(location.host)
            async with source.open_blob(location.repository, digest) as chunks:
                async for chunk in verified(chunks, digest, size, f"blob {digest} of {location.host}/"
                                                                    f"{location.repository}"):
                    yield chunk

        return stream


async def verified(chunks: AsyncIterator[bytes], digest: str, size: int, what: str) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, holding the last one back until the whole content hashes to ``digest``.

    An upload with a declared length is committed by its last byte: raising
    before that byte leaves the target without the bad blob.
    """
    hasher = hashlib.sha256()
    seen = 0
    held: bytes | None = None
    async for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise IntegrityError(f"{what}: the source sent more than its {size} bytes")
        hasher.update(chunk)
        if held is not None:
            yield held
        held = chunk
    actual = "sha256:" + hasher.hexdigest()
    if seen != size or actual != digest:
        raise IntegrityError(f"{what}: the source sent {seen} bytes hashing to {actual}; nothing was "
                             "written for it")
    if held is not None:
        yield held


def _refuse_retag(image: ImageResult) -> None:
    """``on_retag: fail``: a tag the target has that now means another image upstream."""
    assert image.image is not None
    if image.old_digest and image.old_digest != image.new_digest and image.image.on_retag == "fail":
        image.fail(MirrorError(f"{image.image.ref} moved upstream from {image.old_digest} to "
                               f"{image.new_digest}, and its entry says on_retag: fail"))


def _defer_past_budget(request: SyncRequest, result: SyncResult) -> None:
    """Defer what the sources' rate limits cannot pay for: one pull per changed image, in order.

    Docker Hub's ``ratelimit-remaining`` counts pulls; HEADs are free, so
    only the images whose manifests must be fetched are counted.
    """
    left = {host: limit.remaining for host, limit in result.ratelimits.items()}
    for image in result.images:
        if image.action != "pending" or request.dry_run:
            continue
        assert image.image is not None
        host = request.sources.locate(image.image.ref).host
        if host not in left:
            continue
        if left[host] <= 0:
            image.action = "deferred"
            window = result.ratelimits[host].window
            image.error = (f"{host}'s rate limit is spent" +
                           (f" (its window is {window} s)" if window else "") + "; the next run copies it")
        else:
            left[host] -= 1
