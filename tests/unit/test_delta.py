"""A delta's check before any write: what it leaves to its base must be in the target, or exit 5."""

from __future__ import annotations

import pytest

from mirror.bundle.format import BundleManifest
from mirror.errors import DeltaBaseMissing, ExitCode
from mirror.model.target import RegistryAddress
from mirror.progress import Progress
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.settings import RegistrySettings
from mirror.transfer.delta import base_warnings, require_base
from mirror.transfer.plan import ImagePlan, Target
from mirror.transfer.survey import Presence
from support.fake_registry import FakeRegistry, answer
from support.images import Image, image, seed

pytestmark = pytest.mark.anyio

HOST = "target.test"


def delta(images: list[tuple[str, Image]], omitted: set[str]) -> BundleManifest:
    blobs = {d: len(data) for _, img in images for d, data in img.blobs.items()}
    blobs.update({m.digest: len(m.data) for _, img in images for m in img.manifests})
    return BundleManifest([img.record(source) for source, img in images], blobs, base=["sha256:" + "b" * 64],
                          omitted=sorted(omitted))


async def check(registry: FakeRegistry, bundle: BundleManifest):
    """Plan, survey and require the base, as push does before writing; the plans' presence too."""
    plans = [ImagePlan.of(record, "") for record in bundle.images]
    presence = Presence(plans)
    async with RegistryClient(HOST, RegistrySettings(plain_http=True, retries=0), auth_files=AuthFiles([]),
                              http_transport=registry) as c:
        await presence.survey(c, 4)
        return await require_base(c, bundle, plans, presence, 4, Progress(quiet=True)), presence


async def test_a_base_blob_missing_at_the_target_stops_the_push_before_any_write():
    registry, app = FakeRegistry(), image("app", layers=2)
    base_layer = app.top.children()[1].digest
    with pytest.raises(DeltaBaseMissing) as refused:
        await check(registry, delta([("lib/app:2", app)], {base_layer}))
    assert refused.value.exit_code == ExitCode.DELTA_BASE_MISSING
    assert list(refused.value.missing) == [base_layer] and "lib/app:2" in refused.value.missing[base_layer]
    assert f"are not in {HOST}: nothing was written" in str(refused.value)
    assert registry.writes() == []


async def test_a_base_blob_in_the_planned_repository_needs_nothing():
    registry, app = FakeRegistry(), image("app", layers=2)
    base_layer = app.top.children()[1].digest
    registry.add_blob("lib/app", app.blobs[base_layer])
    sources, presence = await check(registry, delta([("lib/app:2", app)], {base_layer}))
    assert (sources.blobs, sources.manifests) == ({}, {}) and presence[base_layer, "lib/app"].ok
    assert not any(line.startswith("GET /v2/_catalog") for line in registry.requests)


async def test_a_base_blob_in_another_repository_of_the_target_is_found_through_the_catalog():
    registry, app = FakeRegistry(), image("app", layers=2)
    base_layer = app.top.children()[1].digest
    registry.add_blob("lib/base", app.blobs[base_layer])
    sources, _ = await check(registry, delta([("lib/app:2", app)], {base_layer}))
    assert sources.blobs == {base_layer: "lib/base"}
    assert registry.writes() == []


async def test_a_base_manifest_in_one_planned_repository_is_copied_to_the_others():
    registry, app = FakeRegistry(), image("app")
    seed(registry, "lib/one", app, "1")
    bundle = delta([("lib/one:1", app), ("lib/two:1", app)], {app.digest, *app.blobs})
    sources, _ = await check(registry, bundle)
    assert sources.manifests == {app.digest: "lib/one"}


async def test_a_registry_that_refuses_its_catalog_counts_only_the_planned_repositories():
    registry, app = FakeRegistry(), image("app", layers=2)
    base_layer = app.top.children()[1].digest
    registry.add_blob("lib/base", app.blobs[base_layer])
    registry.fault = lambda request: answer(403) if request.url.path == "/v2/_catalog" else None
    with pytest.raises(DeltaBaseMissing):
        await check(registry, delta([("lib/app:2", app)], {base_layer}))


def test_a_base_taken_of_another_registry_is_warned_about():
    bundle = BundleManifest([], {}, base=["inv-1"], base_registry={"inv-1": "other.test/prefix"})
    target = Target(RegistryAddress.parse(HOST))
    assert base_warnings(bundle, target) == [
        f"this delta's base inventory inv-1 was taken of other.test/prefix, not {HOST}: "
        "it may lack what the bundle leaves out"]
    same = BundleManifest([], {}, base=["inv-1"], base_registry={"inv-1": HOST})
    assert base_warnings(same, target) == []
