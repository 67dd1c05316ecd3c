"""Retention: delete the tags of a target that a kept set no longer names (``mirror prune``, sync's ``prune:``).

The distribution API deletes a manifest by digest, and every tag on that
manifest goes with it. So a tag that fell out is deleted only when nothing
kept needs its manifest: no kept tag points at the same digest, and no kept
index lists it as a platform manifest. Such a tag stays and is reported with
what holds it. An index that goes takes its platform manifests along (each
by digest, after the index) unless something kept needs them, so that the
registry's garbage collection (``mirror registry gc``) frees their layers too.

Which repositories prune touches, the ones the kept set *covers*: the target
repository (``model.target.target_repository`` with the target's prefix) of
each image or sync rule the set names. No other repository is read or
written, even one mirror wrote: that a whole image left a site is a decision
prune does not guess. Inside a covered repository every tag is the set's to
judge. A backup ``TAG-prev-<12 hex>`` (sync's ``on_retag: backup``) stays while
TAG stays, and so do the attachments of a kept image (cosign's ``sha256-HEX.sig``,
``.att``, ``.sbom`` and the referrers tag schema's ``sha256-HEX``, docs/signatures.md);
those of an image that goes, go with it. Manifests no tag points at are left
alone (the API cannot list them), except the platform manifests of an index
prune deletes (so a referrers index that goes takes its referrers along).

Nothing is deleted until every covered repository has been read; the first
delete goes alone, so a registry that refuses deletes says so before any.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from ..attach.cosign import subject_of_tag
from ..errors import ExitCode, RegistryError, UsageError
from ..model.oci import INDEX_TYPES, Descriptor
from ..model.reference import Reference, is_tag
from ..model.target import backed_up_tag, source_name, target_repository
from ..registry.client import RegistryClient
from .plan import Target
from .tasks import each

if TYPE_CHECKING:
    from .selection import TagSelection


@dataclass
class KeptSet:
    """What stays: images named by tag or digest, and sync.yaml rules applied to the tags a repository holds."""

    references: set[Reference] = field(default_factory=set)
    selections: list["TagSelection"] = field(default_factory=list)

    def repositories(self, prefix: str) -> set[str]:
        """The repositories this set covers."""
        return ({target_repository(ref, prefix) for ref in self.references}
                | {target_repository(rule.repository, prefix) for rule in self.selections})

    def tags(self, repository: str, prefix: str, present: list[str]) -> set[str]:
        """Of the tags ``present`` in ``repository``, the kept ones: named, chosen by a rule, or a backup of one.

        Rules see no backups: ``v2-prev-…`` would otherwise count as a version for ``keep_latest``.
        """
        kept = {ref.tag for ref in self.references if ref.tag and target_repository(ref, prefix) == repository}
        plain = [tag for tag in present if backed_up_tag(tag) is None]
        for rule in self.selections:
            if target_repository(rule.repository, prefix) == repository:
                kept.update(rule.choose(plain))
        kept &= set(present)
        return kept | {tag for tag in present if backed_up_tag(tag) in kept}

    def digests(self, repository: str, prefix: str) -> set[str]:
        """The images of ``repository`` the set names by digest alone."""
        return {ref.digest for ref in self.references
                if ref.digest and not ref.tag and target_repository(ref, prefix) == repository}


@dataclass
class TagEntry:
    repository: str
    tag: str
    digest: str
    source: str | None = None  # the source image the tag holds, by the layout's inverse
    reason: str | None = None  # why a tag that fell out stays

    def to_json(self) -> dict[str, Any]:
        doc = {"repository": self.repository, "tag": self.tag, "digest": self.digest, "source": self.source}
        return doc | ({"reason": self.reason} if self.reason else {})


@dataclass
class PruneReport:
    registry: str  # HOST[/PREFIX]
    dry_run: bool = False
    repositories: list[str] = field(default_factory=list)  # covered
    pruned: list[TagEntry] = field(default_factory=list)  # deleted (with --dry-run: would be)
    skipped: list[TagEntry] = field(default_factory=list)  # fell out, but a kept tag needs its manifest
    kept: int = 0  # tags kept in the covered repositories
    manifests_deleted: int = 0  # tops and platform manifests
    failures: dict[str, str] = field(default_factory=dict)  # repository, REPO:TAG or REPO@DIGEST -> why

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.failures else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {"registry": self.registry, "dry_run": self.dry_run, "repositories": self.repositories,
                "pruned": [t.to_json() for t in self.pruned], "skipped": [t.to_json() for t in self.skipped],
                "kept": self.kept, "manifests_deleted": self.manifests_deleted, "failures": self.failures,
                "exit_code": int(self.exit_code)}


class DeletesRefused(UsageError):
    """The target does not allow deletes: a registry setting, not something to retry."""


@dataclass
class _Deletes:
    """One repository's deletes: each top manifest with the tags on it, then platform manifests."""

    repository: str
    tops: dict[str, list[str]] = field(default_factory=dict)  # digest -> tags
    children: set[str] = field(default_factory=set)


async def prune(client: RegistryClient, target: Target, kept: KeptSet, *, repositories: Iterable[str] | None = None,
                dry_run: bool = False, jobs: int = 8) -> PruneReport:
    """Delete (``dry_run``: only report) every tag of the covered repositories that ``kept`` does not keep.

    ``repositories`` narrows what is covered (sync prunes only the entries that ask). A repository that
    cannot be read is a failure and is left whole; refused credentials or a refused delete raise.
    """
    covered = sorted(kept.repositories(target.prefix) if repositories is None else set(repositories))
    report = PruneReport(str(target.address), dry_run, covered)
    plans: list[_Deletes] = []

    async def survey(repository: str) -> None:
        try:
            plans.append(await _survey(client, target.prefix, repository, kept, report, jobs))
        except RegistryError as exc:  # auth and integrity errors end the run: nothing was deleted yet
            report.failures[repository] = f"not pruned: {exc}"

    await each(covered, survey, jobs)
    plans.sort(key=lambda plan: plan.repository)
    if not dry_run:
        await _delete(client, target, plans, report, jobs)
    else:
        report.pruned = [_entry(target.prefix, plan.repository, tag, digest)
                         for plan in plans for digest, tags in plan.tops.items() for tag in tags]
    report.pruned.sort(key=lambda t: (t.repository, t.tag))
    report.skipped.sort(key=lambda t: (t.repository, t.tag))
    return report


async def _survey(client: RegistryClient, prefix: str, repository: str, kept: KeptSet, report: PruneReport,
                  jobs: int) -> _Deletes:
    """What goes in ``repository``: its tags' digests, and every manifest something kept needs."""
    plan = _Deletes(repository)
    present = [tag for tag in await client.list_tags(repository) if is_tag(tag)]
    keep = kept.tags(repository, prefix, present)
    fallen = sorted(set(present) - keep)
    report.kept += len(keep)
    if not fallen:
        return plan
    heads: dict[str, Descriptor] = {}

    async def head(tag: str) -> None:
        found = await client.head_manifest(repository, tag)
        if found is not None:  # None: deleted since it was listed
            heads[tag] = found

    await each(present, head, jobs)
    needed: dict[str, str] = {}  # digest -> what kept needs it, for the report

    async def need(reference: str, what: str) -> None:
        top = heads.get(reference) or await client.head_manifest(repository, reference)
        if top is None:
            return
        needed.setdefault(top.digest, f"the manifest of {what}")
        for child in await _children(client, repository, top):
            needed.setdefault(child, f"a platform manifest of {what}")

    await each([(tag, f"kept tag {tag}") for tag in sorted(keep)]
               + [(digest, f"kept image @{digest}") for digest in sorted(kept.digests(repository, prefix))],
               lambda item: need(*item), jobs)
    for tag in fallen:
        found = heads.get(tag)
        if found is None:
            continue
        if needed.get(subject_of_tag(tag) or "") is not None:  # a kept image's signature, SBOM, referrers
            report.kept += 1
            continue
        holder = needed.get(found.digest)
        if holder is not None:
            report.skipped.append(_entry(prefix, repository, tag, found.digest, reason=(
                f"{found.digest} is also {holder}; deleting it by digest would delete that too")))
        else:
            plan.tops.setdefault(found.digest, []).append(tag)
    by_digest = {found.digest: found for found in heads.values()}

    async def children_of(digest: str) -> None:
        plan.children.update(c for c in await _children(client, repository, by_digest[digest])
                             if c not in needed and c not in plan.tops)

    await each(list(plan.tops), children_of, jobs)
    return plan


async def _children(client: RegistryClient, repository: str, top: Descriptor) -> list[str]:
    """The platform manifests of an index (fetched); none for an image manifest."""
    if top.media_type not in INDEX_TYPES:
        return []
    manifest = await client.get_manifest(repository, top.digest)
    return [child.digest for child in manifest.children()]


async def _delete(client: RegistryClient, target: Target, plans: list[_Deletes], report: PruneReport,
                  jobs: int) -> None:
    """Each top manifest, then the platform manifests: a tag never points at an index missing a child."""
    tops = [(plan.repository, digest, tags) for plan in plans for digest, tags in sorted(plan.tops.items())]
    children = [(plan.repository, digest) for plan in plans for digest in sorted(plan.children)]

    async def delete_top(item: tuple[str, str, list[str]]) -> None:
        repository, digest, tags = item
        try:
            deleted = await _delete_one(client, repository, digest, report)
        except DeletesRefused:
            raise
        except RegistryError as exc:
            for tag in tags:
                report.failures[f"{repository}:{tag}"] = str(exc)
            return
        report.manifests_deleted += deleted  # after the await: `+= await` would add to a stale count
        report.pruned += [_entry(target.prefix, repository, tag, digest) for tag in tags]

    async def delete_child(item: tuple[str, str]) -> None:
        repository, digest = item
        try:
            deleted = await _delete_one(client, repository, digest, report)
        except DeletesRefused:
            raise
        except RegistryError as exc:
            report.failures[f"{repository}@{digest}"] = str(exc)
            return
        report.manifests_deleted += deleted

    if tops:
        await delete_top(tops[0])  # alone: a registry that refuses deletes refuses this one first
        await each(tops[1:], delete_top, jobs)
    await each(children, delete_child, jobs)


async def _delete_one(client: RegistryClient, repository: str, digest: str, report: PruneReport) -> bool:
    try:
        return await client.delete_manifest(repository, digest)
    except RegistryError as exc:
        unsupported = "UNSUPPORTED" in str(exc)
        if exc.status == 405 or unsupported:
            answer = f"{exc.status or ''}{' UNSUPPORTED' if unsupported else ''}".strip()
            done = (f"; {report.manifests_deleted} manifests were deleted before it refused"
                    if report.manifests_deleted else "; nothing was deleted")
            raise DeletesRefused(
                f"{client.host} does not allow deletes (it answered {answer} to DELETE {repository}@{digest}): "
                "enable them in its config.yml with `storage: delete: enabled: true` (the registry "
                f"`mirror registry up` runs has it){done}") from None
        raise


def _entry(prefix: str, repository: str, tag: str, digest: str, reason: str | None = None) -> TagEntry:
    name = source_name(repository, prefix)
    return TagEntry(repository, tag, digest, f"{name}:{tag}" if name else None, reason)
