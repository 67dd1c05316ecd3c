"""``mirror verify BUNDLE --registry``: is every image of a bundle in a registry, intact?

Reads only the bundle's first entry; asks the registry for each image's tag,
each manifest by digest and each blob, where ``mirror push`` put them. Several
registries are checked concurrently, each on its own: one that cannot be
reached or refuses the credentials ends its own check, not the others'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..bundle.format import ImageRecord
from ..bundle.reader import BundleReader
from ..errors import ExitCode, MirrorError
from ..registry.client import RegistryClient
from .plan import ImagePlan, Target, plan_images
from .tasks import each


@dataclass
class RegistryCheck:
    registry: str
    verified: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # source -> what is missing or different
    error: MirrorError | None = None  # the registry could not be checked at all (unreachable, credentials)

    @property
    def exit_code(self) -> ExitCode:
        return self.error.exit_code if self.error else ExitCode.FAILED if self.problems else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {"registry": self.registry, "verified": self.verified, "problems": self.problems,
                "exit_code": int(self.exit_code), **({"error": str(self.error)} if self.error else {})}


async def _check_image(client: RegistryClient, plan: ImagePlan) -> str | None:
    where = f"{client.host}/{plan.repository}"
    if plan.tag:
        tagged = await client.head_manifest(plan.repository, plan.tag)
        if tagged is None:
            return f"tag {where}:{plan.tag} is missing"
        if tagged.digest != plan.record.digest:
            return f"tag {where}:{plan.tag} points at {tagged.digest}, the bundle has {plan.record.digest}"
    for digest in sorted(plan.manifests):
        if await client.head_manifest(plan.repository, digest) is None:
            return f"manifest {digest} is missing from {where}"
    for digest in sorted(plan.blobs):
        if await client.blob_size(plan.repository, digest) is None:
            return f"blob {digest} is missing from {where}"
    return None


async def verify_in_registries(bundle: Path, targets: list[Target], jobs: int,
                               http_transport: httpx.AsyncBaseTransport | None = None) -> list[RegistryCheck]:
    """A check per target, in order, all at once. With one target, an error that stops its check (refused
    login, unreachable registry) raises; with several, it ends that target's check and the others go on."""
    with BundleReader(bundle) as reader:
        images = reader.manifest.images
    checks = [RegistryCheck(registry=target.host) for target in targets]

    async def check(index: int) -> None:
        try:
            await _verify(images, targets[index], checks[index], jobs, http_transport)
        except MirrorError as exc:
            if len(targets) == 1:
                raise
            checks[index].error = exc

    await each(range(len(targets)), check, len(targets))
    return checks


async def _verify(images: list[ImageRecord], target: Target, check: RegistryCheck, jobs: int,
                  http_transport: httpx.AsyncBaseTransport | None) -> None:
    async def one(plan: ImagePlan) -> None:
        problem = await _check_image(client, plan)
        if problem:
            check.problems[plan.record.source] = problem
        else:
            check.verified.append(plan.record.source)

    async with RegistryClient(target.host, target.settings, http_transport=http_transport) as client:
        await client.ping()
        await each(plan_images(images, target.prefix), one, jobs)
