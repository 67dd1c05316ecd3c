"""Resolve: references to the manifests their source serves; indexes narrowed by --platform."""

from __future__ import annotations

import pytest

from mirror.bundle.store import BlobStore
from mirror.errors import NotFoundError, UsageError
from mirror.model.oci import Manifest, Platform
from mirror.model.reference import Reference
from mirror.model.upstream import SourceMap
from mirror.progress import Progress
from mirror.registry.pool import ClientPool
from mirror.registry.settings import RegistrySettings
from mirror.transfer.resolve import Resolver
from support.fake_registry import FakeRegistry
from support.images import image, index, seed

pytestmark = pytest.mark.anyio

SOURCE = "src.test"


def plain(host: str) -> RegistrySettings:
    return RegistrySettings(plain_http=True, retries=0)


async def resolve(registry: FakeRegistry, reference: str, platforms: tuple[str, ...] = (), store=None):
    async with ClientPool(plain, registry) as pool:
        resolver = Resolver(pool, SourceMap(), [Platform.parse(p) for p in platforms], 4, store)
        return await resolver.resolve(Reference.parse(reference))


@pytest.fixture
def multiarch():
    registry = FakeRegistry()
    amd, arm = image("app", arch="amd64"), image("app", arch="arm64")
    app = index(amd, arm)
    seed(registry, "lib/app", amd)
    seed(registry, "lib/app", arm)
    seed(registry, "lib/app", app, "1.0")
    return registry, app, amd, arm


async def test_a_tag_resolves_to_the_digest_the_source_serves():
    registry, app = FakeRegistry(), image("app", layers=2)
    seed(registry, "lib/app", app, "1.0")
    resolved = await resolve(registry, f"{SOURCE}/lib/app:1.0")
    assert resolved.top == app.top and resolved.children == [] and resolved.narrowed_from is None
    assert resolved.blobs == {d.digest: d.size for d in app.top.children()}
    record = resolved.record()
    assert (record.source, record.digest, record.blobs) == (f"{SOURCE}/lib/app:1.0", app.digest, list(resolved.blobs))
    assert registry.requests == ["GET /v2/lib/app/manifests/1.0"]


async def test_an_index_keeps_every_platform_without_a_platform_asked_for(multiarch):
    registry, app, amd, arm = multiarch
    resolved = await resolve(registry, f"{SOURCE}/lib/app:1.0")
    assert resolved.top == app.top and resolved.children == [amd.top, arm.top]
    assert resolved.platforms == ["linux/amd64", "linux/arm64"] and resolved.narrowed_from is None
    assert resolved.record().manifests == [amd.digest, arm.digest]


async def test_an_index_narrowed_by_platform_gets_a_new_digest_and_records_the_original(multiarch):
    registry, app, amd, arm = multiarch
    resolved = await resolve(registry, f"{SOURCE}/lib/app:1.0", ("linux/arm64",))
    assert resolved.narrowed_from == app.digest and resolved.top.digest != app.digest
    assert resolved.children == [arm.top]  # the kept manifest keeps its bytes and digest
    assert [d.digest for d in resolved.top.children()] == [arm.digest]
    assert resolved.top == Manifest.from_bytes(resolved.top.data)  # the new digest is of the bytes
    assert resolved.blobs == {d.digest: d.size for d in arm.top.children()}
    record = resolved.record()
    assert (record.digest, record.narrowed_from, record.platforms) == (resolved.top.digest, app.digest,
                                                                       ["linux/arm64"])
    assert f"GET /v2/lib/app/manifests/{amd.digest}" not in registry.requests


async def test_narrowing_to_every_platform_the_index_has_keeps_its_digest(multiarch):
    registry, app, _, _ = multiarch
    resolved = await resolve(registry, f"{SOURCE}/lib/app:1.0", ("linux/arm64", "linux/amd64"))
    assert resolved.top == app.top and resolved.narrowed_from is None


async def test_an_index_named_by_digest_is_never_narrowed(multiarch):
    registry, app, _, _ = multiarch
    resolved = await resolve(registry, f"{SOURCE}/lib/app@{app.digest}", ("linux/arm64",))
    assert resolved.top == app.top and len(resolved.children) == 2 and resolved.narrowed_from is None


async def test_a_platform_the_index_lacks_is_a_usage_error_naming_what_it_has(multiarch):
    registry, _, _, _ = multiarch
    with pytest.raises(UsageError, match=r"no manifest for platform linux/s390x \(the image has: "
                                         r"linux/amd64, linux/arm64\)"):
        await resolve(registry, f"{SOURCE}/lib/app:1.0", ("linux/s390x",))


async def test_an_index_whose_platform_manifest_is_missing_fails_that_image_alone(multiarch):
    registry, app, amd, _ = multiarch
    registry.repositories["lib/app"].discard(amd.digest)
    seed(registry, "lib/other", image("other"), "1.0")
    refs = [Reference.parse(f"{SOURCE}/lib/app:1.0"), Reference.parse(f"{SOURCE}/lib/other:1.0")]
    async with ClientPool(plain, registry) as pool:
        resolution = await Resolver(pool, SourceMap(), [], 4).resolve_all(refs, Progress(quiet=True))
    assert list(resolution.failures) == [f"{SOURCE}/lib/app:1.0"]
    assert [str(image.ref) for image in resolution.images] == [f"{SOURCE}/lib/other:1.0"]


async def test_a_single_image_learns_its_platform_from_its_config_into_the_store(tmp_path):
    registry, app = FakeRegistry(), image("app", arch="arm64")
    seed(registry, "lib/app", app, "1.0")
    store = BlobStore(tmp_path / "work")
    resolved = await resolve(registry, f"{SOURCE}/lib/app:1.0", store=store)
    config = app.top.children()[0].digest
    assert resolved.platforms == ["linux/arm64"] and resolved.fetched == {config: len(app.blobs[config])}
    assert store.has(config) and store.has(app.digest)


async def test_a_single_image_of_another_platform_is_refused(tmp_path):
    registry, app = FakeRegistry(), image("app", arch="arm64")
    seed(registry, "lib/app", app, "1.0")
    with pytest.raises(UsageError, match=r"the image is only linux/arm64"):
        await resolve(registry, f"{SOURCE}/lib/app:1.0", ("linux/amd64",), store=BlobStore(tmp_path / "work"))


async def test_resolve_all_keeps_the_order_asked_and_names_each_failure():
    registry = FakeRegistry()
    for name in ("a", "b", "c"):
        seed(registry, f"lib/{name}", image(name), "1")
    refs = [Reference.parse(f"{SOURCE}/lib/{name}:1") for name in ("c", "missing", "a", "b")]
    heard = []
    async with ClientPool(plain, registry) as pool:
        resolution = await Resolver(pool, SourceMap(), [], 4).resolve_all(refs, Progress(quiet=True),
                                                                           heard.append)
    assert [str(image.ref) for image in resolution.images] == [str(refs[i]) for i in (0, 2, 3)]
    assert list(resolution.failures) == [f"{SOURCE}/lib/missing:1"]
    assert isinstance(resolution.causes[f"{SOURCE}/lib/missing:1"], NotFoundError)
    assert sorted(str(image.ref) for image in heard) == sorted(str(image.ref) for image in resolution.images)
