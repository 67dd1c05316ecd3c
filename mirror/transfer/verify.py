"""``mirror verify BUNDLE --registry``: is every image of a bundle in a registry, intact?

Reads only the bundle's first entry; asks the registry for each image's tag,
each manifest by digest and each blob, where ``mirror push`` put them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle.reader import BundleReader
from ..registry.client import RegistryClient
from .plan import ImagePlan, Target, plan_images
from .tasks import each


@dataclass
class RegistryCheck:
    registry: str
    verified: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # source -> what is missing or different

    def to_json(self) -> dict[str, Any]:
        return {"registry": self.registry, "verified": self.verified, "problems": self.problems}


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


async def verify_in_registry(bundle: Path, target: Target, jobs: int) -> RegistryCheck:
    with BundleReader(bundle) as reader:
        plans = plan_images(reader.manifest.images, target.prefix)
    check = RegistryCheck(registry=target.host)

    async def one(plan: ImagePlan) -> None:
        problem = await _check_image(client, plan)
        if problem:
            check.problems[plan.record.source] = problem
        else:
            check.verified.append(plan.record.source)

    async with RegistryClient(target.host, target.settings) as client:
        await client.ping()
        await each(plans, one, jobs)
    return check
