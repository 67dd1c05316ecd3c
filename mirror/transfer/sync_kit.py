"""``mirror sync``'s kit: the charts and files pull would carry, kept at each target where push puts them.

The items are those of the job's topologies (``request.kit``: mirror/kit/plan.py,
found upstream when the job is read, with pull's options), each at
``REG[/PREFIX]/charts/NAME:VERSION`` or ``REG[/PREFIX]/files/COMPONENT:VERSION``.
A target whose tag holds the item's published digest (its artifact's one
layer; an item published without a checksum, such as ``install.sh``: its
tag, a release's file being fixed) has it ``unchanged``, and nothing is
downloaded for it. The others are downloaded once for every target and
checked as pull checks them (kit/collect.py: the index's digest, the
release's sha256sum file; a mismatch fails that item with exit 4 and nothing
of it is written), made artifacts as pull makes them, and written by the
delivery pipeline (pipeline.py) from a temporary directory, tags last.

A run to a bundle (sync_bundle.py) hands the items to pull, whose delta
leaves out what the base holds (``BundleKit``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import anyio

from ..bundle.store import BlobStore
from ..errors import MirrorError
from ..kit.artifact import Artifact
from ..kit.collect import collect
from ..kit.items import KitItem
from ..model.oci import Manifest
from ..model.reference import Reference
from ..model.target import target_repository
from ..progress import Progress
from .pipeline import deliver
from .plan import ImagePlan
from .pull import artifact_image
from .sync_result import ImageResult, SyncRequest
from .tasks import each

if TYPE_CHECKING:
    from .delta import Base
    from .fanout import FanOut
    from .sync_target import TargetRun


async def sync_kit(request: SyncRequest, runs: list[TargetRun], unreached: dict[int, MirrorError],
                   progress: Progress) -> None:
    """The kit into every target (after its images): an entry per item in each target's result."""
    kit = request.kit
    if kit is None or not (kit.items or kit.failures):
        return
    items: dict[int, list[tuple[KitItem, ImageResult]]] = {}
    writing = []
    for run in runs:
        stopped = not request.keep_going and any(image.action == "failed" for image in run.result.images)
        items[id(run)] = [(item, _entry(run, item)) for item in kit.items]
        run.result.images += [entry for _, entry in items[id(run)]]
        for what, cause in kit.causes.items():  # missing upstream (--keep-going)
            failed = ImageResult(what, str(run.target.address), kind="kit")
            failed.fail(cause)
            run.result.images.append(failed)
        if id(run) in unreached:
            run.fail_pending(unreached[id(run)])
        elif stopped:
            run.fail_pending("not copied: another image failed before anything was written "
                             "(--keep-going copies the rest)")
        else:
            writing.append(run)
    await each([(run, item, entry) for run in writing for item, entry in items[id(run)]],
               lambda one: _check(*one), request.jobs)
    pending = [(run, item, entry) for run in writing for item, entry in items[id(run)] if entry.action == "pending"]
    if request.dry_run:
        for _, _, entry in pending:
            entry.action = "updated" if entry.old_digest else "copied"
        return
    wanted = list({(item.repository, item.tag): item for _, item, _ in pending}.values())
    if not wanted:
        return
    with tempfile.TemporaryDirectory(prefix="mirror-sync-kit-") as work:  # our own, 0700, gone after the run
        store = BlobStore(Path(work))
        collected = await collect(wanted, store, kit.fetcher)
        built = {artifact.item.describe(): artifact for artifact in collected.artifacts}
        for run, item, entry in pending:
            artifact = built.get(item.describe())
            if artifact is None:
                entry.fail(collected.causes[item.describe()])
            else:
                _planned(run, entry, artifact)
        await _deliver(writing, collected.artifacts, store, request.jobs, progress)


def _entry(run: TargetRun, item: KitItem) -> ImageResult:
    repository = target_repository(item.reference, run.target.prefix)
    return ImageResult(item.url, f"{run.target.host}/{repository}:{item.tag}", repository=repository, kind="kit")


async def _check(run: TargetRun, item: KitItem, entry: ImageResult) -> None:
    """``unchanged`` if the target's tag holds the item's published digest (or, unpublished, the tag at all)."""
    try:
        current = await run.client.head_manifest(entry.repository, item.tag)
        if current is None:
            return
        entry.old_digest = current.digest
        if item.sha256 is None or _layers(await run.client.get_manifest(entry.repository, current.digest)) == [
                f"sha256:{item.sha256}"]:
            entry.action, entry.new_digest = "unchanged", current.digest
    except MirrorError as exc:
        entry.fail(exc)


def _layers(manifest: Manifest) -> list[object]:
    layers = manifest.document.get("layers")
    return [layer.get("digest") for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []


def _planned(run: TargetRun, entry: ImageResult, artifact: Artifact) -> None:
    entry.resolved = artifact_image(artifact)
    entry.new_digest = artifact.manifest.digest
    if entry.old_digest == entry.new_digest:
        entry.action = "unchanged"
    else:
        entry.plan = ImagePlan.of(entry.resolved.record(), run.target.prefix)


async def _deliver(runs: list[TargetRun], artifacts: list[Artifact], store: BlobStore, jobs: int,
                   progress: Progress) -> None:
    """What each target lacks of the built artifacts, through the pipeline push and sync's images share."""
    prepared = []
    for run in runs:
        try:
            delivery = await run.prepare()  # the pending entries with a plan: this run's kit, its images are done
        except MirrorError as exc:
            run.fail_pending(exc)
            continue
        if delivery is not None:
            prepared.append((run, delivery))
    if prepared:
        await deliver([delivery for _, delivery in prepared], StoreFeed(store, artifacts, jobs), progress,
                      "copying the kit")
    for run, _ in prepared:
        run.delivered()


class StoreFeed:
    """Feed a delivery from a blob store (pipeline.py): the artifacts' manifests, then their blobs from it."""

    def __init__(self, store: BlobStore, artifacts: list[Artifact], jobs: int):
        self.store, self.jobs = store, jobs
        self.manifests = list({a.manifest.digest: a.manifest for a in artifacts}.values())
        self.sizes = {digest: size for artifact in artifacts for digest, size in artifact.blobs.items()}

    def size(self, digest: str) -> int:
        return self.sizes[digest]

    async def run(self, sink: FanOut) -> None:
        async with anyio.create_task_group() as group:
            for manifest in self.manifests:
                sink.manifest_arrived(manifest, group)
            await each(sorted(sink.wanted), lambda d: sink.place_blob(d, self.sizes[d], self.store.upload_source(d)),
                       self.jobs)
            sink.fail_unreached(lambda digest: MirrorError(f"{digest}: no kit item holds it"))


# -- to a bundle ------------------------------------------------------------------------------


class BundleKit:
    """The kit's entries of a run to a bundle: pull carries the items, its delta leaving out what the base holds."""

    def __init__(self, request: SyncRequest, where: Callable[[Reference], str], base: Base):
        kit = request.kit
        self.items = kit.items if kit is not None else []
        self.entries = [ImageResult(item.url, where(item.reference), kind="kit") for item in self.items]
        for item, entry in zip(self.items, self.entries):
            entry.old_digest = base.digest_of(str(item.reference))
        self.failed = []  # missing upstream (--keep-going)
        for what, cause in (kit.causes if kit is not None else {}).items():
            self.failed.append(ImageResult(what, "", kind="kit"))
            self.failed[-1].fail(cause)

    @property
    def all(self) -> list[ImageResult]:
        return self.entries + self.failed

    def dry_run(self) -> None:
        """Nothing is downloaded: an item whose tag the base holds is taken as fixed (a release's file)."""
        for entry in self.entries:
            entry.action, entry.new_digest = ("unchanged", entry.old_digest) if entry.old_digest else ("copied", None)

    def judged(self, failures: dict[str, str], causes: dict[str, MirrorError], digests: dict[str, str]) -> None:
        """Each item's outcome in pull's delta: failed (pull names it by its description), else by its digest."""
        for item, entry in zip(self.items, self.entries):
            key = item.describe()
            if key in failures:
                entry.fail(causes.get(key) or MirrorError(failures[key]))
                entry.error = failures[key]
            elif str(item.reference) in digests:
                entry.new_digest = digest = digests[str(item.reference)]
                entry.action = ("unchanged" if entry.old_digest == digest else
                                "updated" if entry.old_digest else "copied")
