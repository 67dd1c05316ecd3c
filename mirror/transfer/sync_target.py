"""One target of a sync run: its side of each image, its delivery, its backups, attachments and prune.

sync.py reads the sources once for every target (HEADs, the budget,
manifests, blobs); a TargetRun is what one target registry adds: the HEAD of
each tag there, the retag rules, the Presence and Delivery of what it lacks,
the ``on_retag: backup`` tags before its tags move, and the result's counts.
A target that fails fails alone: its images fail, the others go on.
"""

from __future__ import annotations

from ..errors import MirrorError
from ..model.reference import Reference
from ..model.target import backup_tag, target_repository
from ..registry.client import RegistryClient
from .attachments import subjects_of
from .deliver import Delivery
from .plan import ImagePlan, Target
from .prune import DeletesRefused, KeptSet, PruneReport, prune
from .resolve import ResolvedImage
from .survey import Presence
from .sync_attachments import AttachTo, Subject
from .sync_result import ImageResult, SyncRequest, SyncResult, Wanted
from .tasks import each


class TargetRun:
    def __init__(self, request: SyncRequest, target: Target, client: RegistryClient, result: SyncResult):
        self.request, self.target, self.client, self.result = request, target, client, result
        self.delivery: Delivery | None = None
        self.subjects: dict[int, Subject] = {}  # id(image) -> its attachments, once its tag is in place

    def add(self, wanted: Wanted) -> None:
        """An entry per image wanted (the repositories whose tags could not be listed first: failed)."""
        target = self.target
        self.result.skipped_tags = wanted.skipped
        for repository, exc in wanted.unlisted:
            entry = ImageResult(repository.name, f"{target.host}/{target_repository(repository, target.prefix)}")
            entry.fail(exc)
            self.result.images.append(entry)
        for image in wanted.images:
            repository = target_repository(image.ref, target.prefix)
            where = f":{image.ref.tag}" if image.ref.tag else f"@{image.ref.digest}"
            self.result.images.append(ImageResult(str(image.ref), f"{target.host}/{repository}{where}",
                                                  image=image, repository=repository))

    def fail_pending(self, error: MirrorError | str) -> None:
        for image in self.result.images:
            if image.action == "pending":
                image.fail(error)

    # -- check ------------------------------------------------------------------------

    async def head(self, image: ImageResult) -> None:
        """The target's side of the check: what its tag points at now."""
        assert image.image is not None
        current = await self.client.head_manifest(image.repository, image.image.ref.identifier)
        image.old_digest = current.digest if current else None

    def judge(self, image: ImageResult) -> None:
        """With the source's digest known: unchanged, moved (immutable), refused (on_retag: fail) or to copy."""
        assert image.image is not None
        if image.old_digest is not None and image.old_digest == image.new_digest:
            image.action = "unchanged"
        elif image.old_digest is not None and image.image.immutable:  # never replaced: a move upstream is said
            image.action = "moved"
        elif not self.request.platforms:  # a narrowed index differs from upstream anyway: judged once resolved
            refuse_retag(image)

    def resolved(self, image: ImageResult, resolved: ResolvedImage) -> None:
        image.resolved, image.new_digest = resolved, resolved.top.digest
        if image.old_digest == resolved.top.digest:  # a narrowed index already synced
            image.action = "unchanged"
            return
        refuse_retag(image)
        if image.action != "failed":
            image.plan = ImagePlan.of(resolved.record(), self.target.prefix)

    # -- deliver ----------------------------------------------------------------------

    def to_copy(self) -> list[ImageResult]:
        return [image for image in self.result.images if image.plan is not None and image.action == "pending"]

    async def prepare(self) -> Delivery | None:
        """Survey what this target lacks of the images to copy; its Delivery (None: nothing to copy)."""
        plans = [image.plan for image in self.to_copy() if image.plan]
        if not plans:
            return None
        jobs = self.request.jobs
        presence = Presence(plans)
        tagless = await self._tagless()
        await presence.survey(self.client, jobs, skip=tagless)
        self.delivery = Delivery(self.target, self.client, plans, presence, jobs)
        self.delivery.unsurveyed = tagless
        # what check's HEAD of each tag found (not of a pinned tag@digest: that HEAD asked for the digest)
        self.delivery.tags_read = {(image.plan.repository, image.plan.tag): image.old_digest
                                   for image in self.to_copy()
                                   if image.plan and image.image and image.plan.tag == image.image.ref.identifier}
        self.result.skipped_blobs += len(presence.blob_repos) - len(presence.missing_blobs)
        self.result.mounted_blobs += await presence.mount_known(self.client, jobs)
        return self.delivery

    async def _tagless(self) -> set[str]:
        """The repositories of new tags that hold no tag at all: new to the target, most likely.

        One tag listing each, instead of a HEAD for each of their blobs and manifests (distribution
        spends ~1.4 ms of CPU on each); their blobs' uploads ask instead (Delivery.unsurveyed). A
        repository whose listing is refused or long is surveyed as any other.
        """
        asked = {image.repository for image in self.to_copy() if image.old_digest is None}
        tagless: set[str] = set()

        async def one(repository: str) -> None:
            if await self.client.tags_within(repository, 1) == []:
                tagless.add(repository)

        await each(sorted(asked), one, self.request.jobs)
        return tagless

    async def backups(self, delivery: Delivery) -> None:
        """``on_retag: backup``: tag the old image ``TAG-prev-<12 hex>`` before its tag moves.

        Only for complete images (the others keep their tag anyway); an image
        whose backup fails is not retagged.
        """
        async def one(image: ImageResult) -> None:
            assert image.image is not None and image.plan is not None and image.old_digest
            tag = image.image.ref.tag
            if tag is None or delivery.presence.image_error(image.plan) is not None:
                return
            try:
                old = await self.client.get_manifest(image.repository, image.old_digest)
                await self.client.put_manifest(image.repository, backup_tag(tag, image.old_digest), old)
                image.backup_tag = backup_tag(tag, image.old_digest)
            except MirrorError as exc:
                image.fail(MirrorError(f"backup of {image.target} ({image.old_digest}) failed, so it "
                                       f"was not moved: {exc}"))
                delivery.plans.remove(image.plan)

        wanted = [i for i in self.to_copy() if i.old_digest and i.image and i.image.on_retag == "backup"]
        await each(wanted, one, self.request.jobs)

    def delivered(self) -> None:
        """The delivery's counts and each image's outcome into the result."""
        delivery = self.delivery
        if delivery is None:
            return
        report, result = delivery.report, self.result
        result.uploaded_blobs += report.uploaded_blobs
        result.uploaded_bytes += report.uploaded_bytes
        result.mounted_blobs += report.mounted_blobs
        result.skipped_blobs += report.present_blobs  # found by an upload to a repository not surveyed
        result.manifests_pushed += report.manifests_pushed
        result.tags_pushed += report.tags_pushed
        for image in self.to_copy():  # an image whose backup failed has failed already
            assert image.plan is not None
            failure = report.failures.get(image.plan.record.source)
            if failure is not None:
                image.fail(delivery.presence.image_error(image.plan) or delivery.fatal or MirrorError(failure))
                image.error = failure
            else:
                image.action = "updated" if image.old_digest else "copied"

    # -- attachments ------------------------------------------------------------------

    def attach_to(self) -> AttachTo:
        """The images in place here whose attachments are to follow them (docs/signatures.md)."""
        for image in self.result.images:
            if image.action in ("copied", "updated", "unchanged") and image.image and not image.image.immutable:
                resolved = image.resolved
                digests = ([*subjects_of(resolved), *(m.digest for m in resolved.children)] if resolved
                           else [image.source_head.digest if image.source_head else image.new_digest or ""])
                self.subjects[id(image)] = Subject(image.image.ref, image.repository, [d for d in digests if d])
        return AttachTo(self.target, self.client, list(self.subjects.values()))

    def attached(self) -> None:
        """An unchanged image that gained an attachment is ``attached``; one whose attachments failed, failed;
        one whose attachments a source's rate limit left for later, deferred (the next run copies them)."""
        for image in self.result.images:
            subject = self.subjects.get(id(image))
            if subject is None:
                continue
            image.attachments = subject.written
            if subject.error is not None:
                image.fail(subject.error)
            elif subject.deferred is not None:
                image.action, image.error = "deferred", subject.deferred
            elif subject.written and image.action == "unchanged":
                image.action = "attached"

    # -- prune ------------------------------------------------------------------------

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


def refuse_retag(image: ImageResult) -> None:
    """``on_retag: fail``: a tag the target has that now means another image upstream."""
    assert image.image is not None
    if image.old_digest and image.old_digest != image.new_digest and image.image.on_retag == "fail":
        image.fail(MirrorError(f"{image.image.ref} moved upstream from {image.old_digest} to "
                               f"{image.new_digest}, and its entry says on_retag: fail"))
