"""Survey: what the target registry already holds, before any content is read.

``Presence`` is the ledger of one write into a registry: for every (digest,
repository) the plans need, whether it is there, or why it will not be. It
starts from HEAD requests; blobs present in one repository are mounted into
the others. Uploads and manifest pushes then settle the rest, and a manifest
waits on its children's entries before it goes up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Collection

import anyio

from ..errors import MirrorError
from ..registry.client import RegistryClient
from .plan import ImagePlan
from .tasks import each


@dataclass
class Outcome:
    """Whether one digest is present in one repository; settled once."""

    done: anyio.Event = field(default_factory=anyio.Event)
    error: MirrorError | None = None

    def succeed(self) -> None:
        self.done.set()

    def fail(self, error: MirrorError) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    @property
    def ok(self) -> bool:
        return self.done.is_set() and self.error is None


class Presence:
    def __init__(self, plans: list[ImagePlan]):
        self.outcomes: dict[tuple[str, str], Outcome] = defaultdict(Outcome)
        self.blob_repos: dict[str, list[str]] = defaultdict(list)
        self.manifest_repos: dict[str, list[str]] = defaultdict(list)
        for plan in plans:
            for digest in plan.blobs:
                if plan.repository not in self.blob_repos[digest]:
                    self.blob_repos[digest].append(plan.repository)
            for digest in plan.manifests:
                if plan.repository not in self.manifest_repos[digest]:
                    self.manifest_repos[digest].append(plan.repository)

    def __getitem__(self, key: tuple[str, str]) -> Outcome:
        return self.outcomes[key]

    def planned(self, digest: str, repository: str) -> bool:
        return repository in self.blob_repos.get(digest, ()) or repository in self.manifest_repos.get(digest, ())

    def blob_present_everywhere(self, digest: str) -> bool:
        return all(self.outcomes[digest, r].ok for r in self.blob_repos[digest])

    @property
    def missing_blobs(self) -> set[str]:
        return {digest for digest in self.blob_repos if not self.blob_present_everywhere(digest)}

    @property
    def missing_manifests(self) -> bool:
        return any(not self.outcomes[d, r].ok for d, repos in self.manifest_repos.items() for r in repos)

    def fail_blob(self, digest: str, error: MirrorError) -> None:
        for repository in self.blob_repos[digest]:
            self.outcomes[digest, repository].fail(error)

    def image_error(self, plan: ImagePlan) -> MirrorError | None:
        """Why the image is not complete in its repository; None when it is."""
        for digest in (*plan.blobs, *plan.manifests):
            outcome = self.outcomes[digest, plan.repository]
            if not outcome.ok:
                return outcome.error or MirrorError(f"{digest} did not reach {plan.repository}")
        return None

    async def survey(self, client: RegistryClient, jobs: int, skip: Collection[str] = ()) -> None:
        """HEAD every planned blob and manifest in its repository, but in ``skip``'s (left missing)."""
        wanted = [(d, r, False) for d, repos in self.blob_repos.items() for r in repos if r not in skip]
        wanted += [(d, r, True) for d, repos in self.manifest_repos.items() for r in repos if r not in skip]

        async def head(item: tuple[str, str, bool]) -> None:
            digest, repository, is_manifest = item
            if is_manifest:
                found = await client.head_manifest(repository, digest) is not None
            else:
                found = await client.blob_size(repository, digest) is not None
            if found:
                self.outcomes[digest, repository].succeed()

        await each(wanted, head, jobs)

    async def mount_known(self, client: RegistryClient, jobs: int, elsewhere: dict[str, str] | None = None) -> int:
        """Blobs present in some repository: mount them where missing, no bytes read. Returns the count.

        ``elsewhere`` names, for blobs in none of the planned repositories, another one that has them.
        """
        mounts = []
        for digest, repositories in self.blob_repos.items():
            have = [r for r in repositories if self.outcomes[digest, r].ok]
            have = have or ([elsewhere[digest]] if elsewhere and digest in elsewhere else [])
            mounts += [(digest, r, have[0]) for r in repositories if have and not self.outcomes[digest, r].ok]
        mounted = 0

        async def mount(item: tuple[str, str, str]) -> None:
            nonlocal mounted
            digest, repository, source = item
            if await client.mount_blob(repository, digest, source):
                self.outcomes[digest, repository].succeed()
                mounted += 1

        await each(mounts, mount, jobs)
        return mounted


async def tagged_in_place(client: RegistryClient, plans: list[ImagePlan], jobs: int) -> list[ImagePlan]:
    """The images whose tag already points at the plan's digest: one HEAD each, nothing else.

    Such an image is complete: a registry accepts a manifest only once
    everything it names is in the repository, so a re-push of an unchanged
    bundle costs a HEAD per image, whatever the bundle's size.
    """
    done: list[ImagePlan] = []

    async def head(plan: ImagePlan) -> None:
        if plan.tag is None:
            return
        current = await client.head_manifest(plan.repository, plan.tag)
        if current is not None and current.digest == plan.record.digest:
            done.append(plan)

    await each(plans, head, jobs)
    return done
