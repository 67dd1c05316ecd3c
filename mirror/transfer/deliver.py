"""Deliver: write blobs, manifests and tags into the target in an order that never lies.

A blob is uploaded once, into the first repository missing it, and mounted
into the others. A manifest goes up by digest only once everything it names
is present in its repository. Tags go last, and only for images whose every
blob and manifest arrived, so a tag never points at a broken image. Where
the bytes come from (a bundle being read, another registry) is the caller's.
"""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import anyio

from ..errors import ExitCode, IntegrityError, MirrorError, RegistryError, StorageFull, worst_exit_code
from ..model.oci import Manifest
from ..registry.client import BlobSource, RegistryClient
from .plan import ImagePlan, Target
from .survey import Presence
from .tasks import each

# Two pushes writing one manifest into one repository at once: distribution can refuse one of
# them with DIGEST_INVALID although the bytes are right (seen in tests, more often the faster the
# clients). With its children in place the manifest is put again, after a pause.
MANIFEST_RACE_RETRIES = 4
MANIFEST_RACE_PAUSE = (0.05, 0.4)  # seconds, drawn at random so the two pushes fall out of step


@dataclass
class DeliveryReport:
    registry: str
    images: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    mounted_blobs: int = 0
    present_blobs: int = 0
    manifests_pushed: int = 0
    tags_pushed: int = 0
    kind: str = "full"
    base: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.OK
    causes: dict[str, MirrorError] = field(default_factory=dict, repr=False)  # failures' errors, for one line per cause

    def fail(self, plan: ImagePlan, error: MirrorError) -> None:
        """``plan``'s image did not make it to this registry, and why."""
        self.failures[plan.record.source] = f"to {self.registry}/{plan.target}: {error}"
        self.causes[plan.record.source] = error

    def to_json(self) -> dict[str, Any]:
        report = {key: (int(value) if key == "exit_code" else value) for key, value in self.__dict__.items()
                  if key != "causes"}
        report["images"] = sorted(self.images, key=lambda image: (image["source"], image["target"]))
        return report


def image_entry(target: Target, plan: ImagePlan) -> dict[str, Any]:
    return {"source": plan.record.source, "target": f"{target.host}/{plan.target}", "digest": plan.record.digest}


class Delivery:
    """One write of planned images into one registry; ``fatal`` stops it once the registry is gone."""

    def __init__(self, target: Target, client: RegistryClient, plans: list[ImagePlan], presence: Presence,
                 jobs: int, progress: Any = None):
        self.target, self.client, self.plans, self.presence = target, client, plans, presence
        self.report = DeliveryReport(registry=target.host)
        self.limiter = anyio.CapacityLimiter(jobs)
        self.jobs = jobs
        self.progress = progress  # a bar's update(n), for uploaded bytes
        self.manifests: dict[str, Manifest] = {}  # every manifest handed over, by digest
        self.uploading: set[str] = set()  # blobs handed over whose upload has not finished
        self.fatal: MirrorError | None = None
        self.to_upload: set[str] | None = None  # blobs the feed must send; None: whatever the survey found missing
        self.in_hand: list[Manifest] = []  # manifests had before the feed runs (a delta's, from another repository)
        self.refused: dict[int, MirrorError] = {}  # id(plan) -> why it must not be tagged (refuse())
        # (repository, tag) -> the digest the caller read there before this write (None: no such tag), as
        # sync's check did: the tag step then asks no HEAD of its own (a request per image at each registry)
        self.tags_read: dict[tuple[str, str], str | None] = {}
        # repositories the survey did not ask (sync: no tags there, so most likely empty): a blob's upload
        # there asks in its first request whether the blob is there after all (upload.py, ``unless_there``)
        self.unsurveyed: set[str] = set()
        self.present_before: dict[str, set[str]] = defaultdict(set)  # repository -> manifests there at the survey
        for (digest, repository), outcome in presence.outcomes.items():
            if outcome.ok and digest in presence.manifest_repos:
                self.present_before[repository].add(digest)

    # -- blobs ------------------------------------------------------------------

    async def place_blob(self, digest: str, size: int, source: BlobSource) -> None:
        """Upload once into the first repository missing the blob, mount into the rest."""
        presence = self.presence
        missing = [r for r in presence.blob_repos[digest] if not presence[digest, r].ok]
        first, rest = missing[0], missing[1:]
        self.claim(digest)
        try:
            async with self._slot():
                sent = await self.client.upload_blob(first, digest, size, source, unless_there=first in self.unsurveyed)
            presence[digest, first].succeed()
            if sent:
                self._uploaded(size)
            else:
                self.report.present_blobs += 1
                if self.progress is not None:
                    self.progress(size)  # the bar counted it as to send: it is done with
            for repository in rest:
                async with self._slot():
                    if await self.client.mount_blob(repository, digest, first):
                        self.report.mounted_blobs += 1
                    else:
                        await self.client.upload_blob(repository, digest, size, source)
                        self._uploaded(size)
                presence[digest, repository].succeed()
        except MirrorError as exc:
            presence.fail_blob(digest, exc)
            if isinstance(exc, StorageFull) and self.fatal is None:
                self.fatal = exc  # the one reason for every image left
            elif _registry_unwell(exc) and self.fatal is None:
                self.fatal = RegistryError(f"not sent: {self.target.host} stopped answering "
                                           f"(first failure: {exc})", exc.status)
        finally:
            self.uploading.discard(digest)

    def claim(self, digest: str) -> None:
        """The source has the blob in hand: its upload is coming, even if not started yet.

        Called from the reading thread before the upload task is scheduled, so
        ``fail_unreached`` never fails a blob whose upload is merely queued.
        """
        self.uploading.add(digest)

    def _uploaded(self, size: int) -> None:
        self.report.uploaded_blobs += 1
        self.report.uploaded_bytes += size
        if self.progress is not None:
            self.progress(size)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A concurrency slot for one request; refused once the registry is known to be down."""
        async with self.limiter:
            if self.fatal is not None:
                raise self.fatal
            yield

    # -- manifests ----------------------------------------------------------------

    def manifest_arrived(self, manifest: Manifest, group: Any) -> None:
        """Push ``manifest`` into every repository that needs it, each once its children are there."""
        self.manifests[manifest.digest] = manifest
        for repository in self.presence.manifest_repos[manifest.digest]:
            if not self.presence[manifest.digest, repository].done.is_set():
                group.start_soon(self._push_manifest, manifest, repository)

    async def _push_manifest(self, manifest: Manifest, repository: str) -> None:
        outcome = self.presence[manifest.digest, repository]
        for child in manifest.children():
            if not self.presence.planned(child.digest, repository):
                # The plan is input too: a manifest must not wait for what nothing will send.
                outcome.fail(IntegrityError(
                    f"manifest {manifest.digest} references {child.digest}, which the plan does not "
                    f"list for {repository}: the bundle's mirror-bundle.json is inconsistent"))
                return
            dependency = self.presence[child.digest, repository]
            await dependency.done.wait()
            if dependency.error is not None:
                outcome.fail(dependency.error)  # the child's own error: it names what is wrong, keeps its kind
                return
        try:
            for attempt in range(MANIFEST_RACE_RETRIES + 1):
                try:
                    async with self._slot():
                        await self.client.put_manifest(repository, manifest.digest, manifest)
                    break
                except IntegrityError:
                    # A true mismatch (a child really missing) is reported at once.
                    if attempt == MANIFEST_RACE_RETRIES or not await self._children_present(manifest, repository):
                        raise
                    await anyio.sleep(random.uniform(*MANIFEST_RACE_PAUSE))
            outcome.succeed()
            self.report.manifests_pushed += 1
        except MirrorError as exc:
            outcome.fail(exc)
            if isinstance(exc, StorageFull) and self.fatal is None:
                self.fatal = exc

    async def _children_present(self, manifest: Manifest, repository: str) -> bool:
        for child in manifest.children():
            async with self._slot():
                if self.presence.manifest_repos.get(child.digest):
                    found = await self.client.head_manifest(repository, child.digest) is not None
                else:
                    found = await self.client.blob_size(repository, child.digest) == child.size
            if not found:
                return False
        return True

    def fail_unreached(self, never_came: Callable[[str], MirrorError]) -> None:
        """The source is exhausted: whatever it never delivered cannot arrive any more.

        ``never_came(digest)`` says why, unless the registry is gone (then that is why).
        """

        def reason(digest: str) -> MirrorError:
            return self.fatal or never_came(digest)

        for (digest, _), outcome in list(self.presence.outcomes.items()):
            if not outcome.done.is_set() and digest not in self.uploading and digest not in self.manifests:
                outcome.fail(reason(digest))
        for digest, repositories in self.presence.manifest_repos.items():
            for repository in repositories:
                if digest not in self.manifests and not self.presence[digest, repository].done.is_set():
                    self.presence[digest, repository].fail(reason(digest))

    # -- tags ---------------------------------------------------------------------

    def refuse(self, plan: ImagePlan, error: MirrorError) -> None:
        """Never tag this image (its signature did not verify, its subject was not written): a failure."""
        self.refused[id(plan)] = error

    async def tag_all(self, plans: list[ImagePlan] | None = None) -> None:
        """Tag every complete image of ``plans`` (default: all) unless the registry is gone or it was
        refused; record the others as failures."""

        async def tag(plan: ImagePlan) -> dict[str, str]:
            """Tag the image; says whether it was added, updated (and from what) or unchanged."""
            if plan.tag is None:
                there = plan.record.digest in self.present_before[plan.repository]
                return {"change": "unchanged" if there else "added"}
            if (plan.repository, plan.tag) in self.tags_read:
                current = self.tags_read[plan.repository, plan.tag]
            else:
                found = await self.client.head_manifest(plan.repository, plan.tag)
                current = found.digest if found else None
            if current == plan.record.digest:
                return {"change": "unchanged"}
            manifest = self.manifests.get(plan.record.digest) or await self.client.get_manifest(
                plan.repository, plan.record.digest)
            async with self.limiter:
                await self.client.put_manifest(plan.repository, plan.tag, manifest)
            self.report.tags_pushed += 1
            return {"change": "added"} if current is None else {"change": "updated", "previous": current}

        async def one(plan: ImagePlan) -> None:
            error = self.refused.get(id(plan)) or self.presence.image_error(plan)
            if error is None and self.fatal is None:
                try:
                    change = await tag(plan)
                    self.report.images.append({**image_entry(self.target, plan), **change})
                    return
                except MirrorError as exc:
                    error = exc
            error = error or self.fatal
            assert error is not None
            self.report.fail(plan, error)

        plans = self.plans if plans is None else plans
        await each(plans, one, len(plans))
        if self.report.failures:
            self.report.exit_code = worst_exit_code(self.report.causes.values())


def _registry_unwell(error: MirrorError) -> bool:
    """The registry stopped answering (or keeps failing) after the client's own retries.

    Then the write stops instead of retrying every remaining blob in turn.
    """
    return type(error) is RegistryError and (error.status is None or error.status == 429 or error.status >= 500)
