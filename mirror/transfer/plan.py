"""Plan: which repository of the target each image goes to, and what it needs there.

Push, verify and sync all start from these plans; the layout itself
(``docker.io/rancher/x`` -> ``REG/rancher/x``) is ``model.target``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bundle.format import ImageRecord
from ..model.reference import Reference
from ..model.target import RegistryAddress, target_repository
from ..registry.settings import RegistrySettings


@dataclass(frozen=True)
class Target:
    """The registry images are written to or checked in, and how to reach it."""

    address: RegistryAddress
    settings: RegistrySettings = field(default_factory=RegistrySettings)

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def prefix(self) -> str:
        return self.address.prefix


@dataclass
class ImagePlan:
    record: ImageRecord
    repository: str
    tag: str | None
    manifests: set[str]  # the top manifest and its children
    blobs: set[str]  # configs and layers

    @classmethod
    def of(cls, record: ImageRecord, prefix: str) -> "ImagePlan":
        ref = Reference.parse(record.source)
        manifests = {record.digest, *record.manifests}
        return cls(record, target_repository(ref, prefix), ref.tag, manifests, set(record.blobs) - manifests)

    @property
    def target(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.record.digest}"


def plan_images(records: list[ImageRecord], prefix: str) -> list[ImagePlan]:
    return [ImagePlan.of(record, prefix) for record in records]
