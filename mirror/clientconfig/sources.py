"""Which source registries the nodes must mirror: from a bundle, a registry's catalog, or the manifests.

docker.io always comes first: Rancher and every K3s/RKE2 system image live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import anyio

from .. import lists
from ..model.reference import DOCKER_HUB, Reference
from ..model.target import source_name
from ..registry.settings import RegistrySettings


def ordered(registries: Iterable[str]) -> tuple[str, ...]:
    """docker.io first, then the others sorted, each once."""
    rest = sorted(set(registries) - {DOCKER_HUB})
    return (DOCKER_HUB, *rest)


def from_references(references: Iterable[Reference]) -> tuple[str, ...]:
    return ordered(ref.registry for ref in references)


def from_manifests() -> tuple[str, ...]:
    """Every registry named by any topology at its default versions (when no bundle is given)."""
    return from_references(ref for mode in lists.topologies() for ref in lists.resolve_images(mode)[0])


def bundle_images(path: Path) -> list[Reference]:
    """The images a bundle holds, by their source references."""
    from ..bundle.reader import BundleReader

    with BundleReader(path) as reader:
        return [Reference.parse(image.source) for image in reader.manifest.subjects]


def from_repositories(repositories: Iterable[str], prefix: str = "") -> tuple[str, ...]:
    """The source registries of a target's repositories, read back through the target layout's inverse."""
    names = (source_name(repository, prefix) for repository in repositories)
    return ordered(Reference.parse(name).registry for name in names if name is not None)


def from_registry(registry: str, settings: RegistrySettings, prefix: str = "") -> tuple[str, ...]:
    from ..registry.client import RegistryClient

    async def catalog() -> list[str]:
        async with RegistryClient(registry, settings) as client:
            return await client.catalog()

    return from_repositories(anyio.run(catalog), prefix)
