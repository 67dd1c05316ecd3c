"""A fake source registry and a bundle pulled from it in-process: what push, sync and delta tests start from."""

from __future__ import annotations

import pytest

from mirror.model.reference import Reference
from mirror.model.upstream import SourceMap
from mirror.progress import Progress
from mirror.registry.settings import RegistrySettings
from mirror.transfer.pull import PullRequest, pull
from support.fake_registry import FakeRegistry
from support.images import image, index, seed

SOURCE = "src.test"
QUIET = Progress(quiet=True)


def plain(host: str) -> RegistrySettings:
    return RegistrySettings(plain_http=True, retries=0)


@pytest.fixture
def source():
    """A source registry holding lib/app:1.0 (two platforms) and lib/tool:2 (one image)."""
    registry = FakeRegistry()
    amd, arm = image("app", arch="amd64"), image("app", arch="arm64", shared=[b"common base " * 30])
    for child in (amd, arm):
        seed(registry, "lib/app", child)
    seed(registry, "lib/app", index(amd, arm), "1.0")
    seed(registry, "lib/tool", image("tool", shared=[b"common base " * 30]), "2")
    return registry


async def pulled(source: FakeRegistry, tmp_path, *refs: str, **options):
    request = PullRequest(images=[Reference.parse(f"{SOURCE}/{r}") for r in refs], output=tmp_path / "b.tar.zst",
                          sources=SourceMap(), settings_for=plain, http_transport=source, **options)
    return await pull(request, QUIET)
