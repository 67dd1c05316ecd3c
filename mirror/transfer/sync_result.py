"""What a sync run is asked and what it says: the request, each image's outcome, a target's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import httpx

from ..attach.discover import Listings
from ..errors import ExitCode, MirrorError, worst_exit_code
from ..model.oci import Descriptor, Platform
from ..model.reference import Reference
from ..model.upstream import SourceMap
from ..registry.ratelimit import RateLimit
from ..registry.settings import RegistrySettings
from .plan import ImagePlan, Target
from .prune import PruneReport
from .resolve import ResolvedImage
from .selection import SkippedTags, SyncImage, TagSelection

if TYPE_CHECKING:
    from ..kit.plan import KitPlan

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
    also: tuple[Target, ...] = ()  # more registries written from the same read of the sources
    kit: KitPlan | None = None  # the charts and files pull would carry for the job's topologies (sync_kit.py)
    wait_for_limit: bool = False  # a spent rate limit is waited for, not deferred to the next run
    log: Callable[[str], None] = lambda line: None  # a line for the user: a wait for a rate limit

    @property
    def targets(self) -> list[Target]:
        return [self.target, *self.also] if self.target is not None else []


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
    kind: str = "image"  # or "kit": a chart or file of the kit (sync_kit.py), kept where push puts it

    def fail(self, error: MirrorError | str) -> None:
        self.action = "failed"
        self.error = str(error)
        self.exception = error if isinstance(error, MirrorError) else MirrorError(error)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "action": self.action,
                "old_digest": self.old_digest, "new_digest": self.new_digest, "backup_tag": self.backup_tag,
                "attachments": self.attachments, "signatures": self.signatures, "error": self.error,
                "kind": self.kind}


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
    listings: Listings = field(default_factory=Listings)  # the tags listed, for the attachment lookups too


def worst_exit(results: list[SyncResult]) -> ExitCode:
    """A run's exit code: its target's; with several, the worst of theirs (integrity, auth, failed, deferred)."""
    codes = {result.exit_code for result in results}
    for code in (ExitCode.INTEGRITY, ExitCode.AUTH, ExitCode.FAILED, ExitCode.DEFERRED):
        if code in codes:
            return code
    return max(codes, default=ExitCode.OK)


def runs_to_json(results: list[SyncResult]) -> dict[str, Any]:
    """The report of a run: its target's result; with several targets, a result each under ``targets``."""
    if len(results) == 1:
        return results[0].to_json()
    said = {result.result for result in results}
    first = results[0]
    return {"run_id": first.run_id, "config_sha256": first.config_sha256, "started": first.started,
            "ended": max(result.ended for result in results), "dry_run": first.dry_run,
            "result": ("failed" if said == {"failed"} else "partial" if said & {"failed", "partial"}
                       else "deferred" if "deferred" in said else "ok"),
            "exit_code": int(worst_exit(results)), "targets": [result.to_json() for result in results]}
