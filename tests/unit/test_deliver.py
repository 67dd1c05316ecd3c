"""Delivery's rules, in-process against the fake registry: blobs once, manifests after their children,
tags last, and never a tag on an incomplete image."""

from __future__ import annotations

import anyio
import pytest

from mirror.errors import ExitCode, IntegrityError, MirrorError
from mirror.model.target import RegistryAddress
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.settings import RegistrySettings
from mirror.transfer import deliver as deliver_module
from mirror.transfer.deliver import Delivery
from mirror.transfer.plan import ImagePlan, Target
from mirror.transfer.survey import Presence
from support.fake_registry import FakeRegistry, answer, error
from support.images import Image, image, index, seed

pytestmark = pytest.mark.anyio

HOST = "target.test"
TARGET = Target(RegistryAddress.parse(HOST), RegistrySettings(plain_http=True, retries=0))


def client(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient(HOST, TARGET.settings, auth_files=AuthFiles([]), backoff_base=0.001,
                          http_transport=registry)


async def deliver(registry: FakeRegistry, images: list[tuple[str, Image]], *, jobs: int = 4,
                  corrupt: frozenset[str] = frozenset(), withheld: frozenset[str] = frozenset()) -> Delivery:
    """What push and sync do with a Delivery: survey, mounts, every manifest handed over and every missing
    blob placed (``corrupt`` ones with wrong bytes; ``withheld`` ones never), then the tags."""
    plans = [ImagePlan.of(img.record(source), "") for source, img in images]
    blobs = {digest: data for _, img in images for digest, data in img.blobs.items()}
    async with client(registry) as c:
        presence = Presence(plans)
        await presence.survey(c, jobs)
        delivery = Delivery(TARGET, c, plans, presence, jobs)
        delivery.report.mounted_blobs = await presence.mount_known(c, jobs)
        async with anyio.create_task_group() as group:
            for manifest in {m.digest: m for _, img in images for m in img.manifests}.values():  # each once
                delivery.manifest_arrived(manifest, group)
            for digest in sorted(presence.missing_blobs - withheld):
                data = b"not the blob" if digest in corrupt else blobs[digest]
                delivery.claim(digest)
                group.start_soon(delivery.place_blob, digest, len(blobs[digest]), data)
            delivery.fail_unreached(lambda digest: MirrorError(f"{digest} never came"))
        await delivery.tag_all()
    return delivery


def tag_puts(registry: FakeRegistry) -> list[str]:
    return [line for line in registry.writes() if "/manifests/" in line and "/manifests/sha256:" not in line]


def manifest_puts(registry: FakeRegistry, img: Image) -> list[str]:
    return [line for line in registry.writes() if line.endswith(f"/manifests/{img.digest}")]


def assert_tags_last(registry: FakeRegistry) -> None:
    writes = registry.writes()
    tags = tag_puts(registry)
    assert tags and writes[-len(tags):] == tags, writes


async def test_an_image_arrives_whole_and_tagged():
    registry, app = FakeRegistry(), image("app", layers=2)
    delivery = await deliver(registry, [("lib/app:1.0", app)])
    assert registry.tags == {"lib/app": {"1.0": app.digest}}
    assert all(registry.has("lib/app", digest) for digest in app.blobs)
    report = delivery.report
    assert (report.uploaded_blobs, report.manifests_pushed, report.tags_pushed, report.failures) == (3, 1, 1, {})
    assert report.images == [{"source": "lib/app:1.0", "target": f"{HOST}/lib/app:1.0",
                               "digest": app.digest, "change": "added"}]
    assert report.exit_code == ExitCode.OK


async def test_tags_go_last_after_every_blob_and_manifest():
    registry = FakeRegistry()
    await deliver(registry, [("lib/a:1", image("a")), ("lib/b:1", image("b")), ("lib/c:1", image("c"))])
    assert len(tag_puts(registry)) == 3
    assert_tags_last(registry)


async def test_manifests_go_up_after_their_children_even_when_handed_over_first():
    registry = FakeRegistry()
    app = index(image("app", arch="amd64"), image("app", arch="arm64"))
    delivery = await deliver(registry, [("lib/app:1.0", app)])
    writes = registry.writes()
    for manifest in app.manifests:
        put = writes.index(f"PUT /v2/lib/app/manifests/{manifest.digest}")
        for child in manifest.children():
            done = [i for i, line in enumerate(writes) if child.digest in line.replace("%3A", ":")]
            assert done and max(done) < put, (manifest.digest, child.digest, writes)
    assert delivery.report.manifests_pushed == 3 and registry.tags["lib/app"]["1.0"] == app.digest


async def test_a_blob_is_uploaded_once_and_mounted_into_the_other_repositories():
    registry, shared = FakeRegistry(), b"a base layer " * 50
    one, two = image("one", shared=[shared]), image("two", shared=[shared])
    delivery = await deliver(registry, [("lib/one:1", one), ("lib/two:1", two)])
    digest = [d for d, data in one.blobs.items() if data == shared][0]
    quoted = digest.replace(":", "%3A")
    uploads = [line for line in registry.writes() if line.startswith("PUT") and f"digest={quoted}" in line]
    mounts = [line for line in registry.writes() if f"mount={quoted}" in line]
    assert len(uploads) == 1 and len(mounts) == 1
    assert registry.has("lib/one", digest) and registry.has("lib/two", digest)
    assert delivery.report.mounted_blobs == 1 and delivery.report.uploaded_blobs == 5  # 2 configs, 3 layers


async def test_a_blob_the_repository_has_is_not_sent_again():
    registry, app = FakeRegistry(), image("app", layers=2)
    layer = app.top.children()[1].digest
    registry.add_blob("lib/app", app.blobs[layer])
    delivery = await deliver(registry, [("lib/app:1.0", app)])
    assert not any(f"digest={layer.replace(':', '%3A')}" in line for line in registry.writes())
    assert delivery.report.uploaded_blobs == 2 and registry.tags["lib/app"]["1.0"] == app.digest


async def test_a_failed_blob_upload_leaves_no_manifest_and_no_tag():
    registry, bad, good = FakeRegistry(), image("bad"), image("good")
    layer = bad.top.children()[1].digest
    delivery = await deliver(registry, [("lib/bad:1", bad), ("lib/good:1", good)], corrupt=frozenset({layer}))
    assert manifest_puts(registry, bad) == [] and "lib/bad" not in registry.tags
    assert tag_puts(registry) == ["PUT /v2/lib/good/manifests/1"]
    failure = delivery.report.failures["lib/bad:1"]
    assert failure.startswith(f"to {HOST}/lib/bad:1: ") and "DIGEST_INVALID" in failure
    assert delivery.report.exit_code == ExitCode.INTEGRITY


async def test_a_blob_that_never_comes_leaves_its_image_untagged():
    registry, app = FakeRegistry(), image("app", layers=2)
    layer = app.top.children()[2].digest
    delivery = await deliver(registry, [("lib/app:1.0", app)], withheld=frozenset({layer}))
    assert registry.tags == {} and manifest_puts(registry, app) == []
    assert f"{layer} never came" in delivery.report.failures["lib/app:1.0"]


async def test_a_platform_manifest_that_fails_leaves_the_index_untagged():
    amd, arm = image("app", arch="amd64"), image("app", arch="arm64")
    app = index(amd, arm)
    registry = FakeRegistry(fault=lambda request: error(400, "MANIFEST_INVALID") if (
        request.method == "PUT" and request.url.path.endswith(arm.digest)) else None)
    delivery = await deliver(registry, [("lib/app:1.0", app)])
    assert registry.has("lib/app", amd.digest)
    assert manifest_puts(registry, app) == [] and registry.tags == {}
    assert "MANIFEST_INVALID" in delivery.report.failures["lib/app:1.0"]


async def test_a_refused_manifest_leaves_its_image_untagged():
    bad, good = image("bad"), image("good")
    registry = FakeRegistry(fault=lambda request: error(400, "MANIFEST_INVALID") if (
        request.method == "PUT" and request.url.path.endswith(bad.digest)) else None)
    delivery = await deliver(registry, [("lib/bad:1", bad), ("lib/good:1", good)])
    assert tag_puts(registry) == ["PUT /v2/lib/good/manifests/1"]
    assert list(delivery.report.failures) == ["lib/bad:1"]


async def test_a_registry_that_stops_answering_stops_the_write():
    registry = FakeRegistry(fault=lambda request: answer(503) if request.method == "POST" else None)
    images = [(f"lib/app{i}:1", image(f"app{i}")) for i in range(6)]
    delivery = await deliver(registry, images, jobs=2)
    assert len(delivery.report.failures) == 6 and delivery.fatal is not None
    assert all(line.startswith("POST") for line in registry.writes())
    assert len(registry.writes()) <= 2  # one failure per slot at most, then no more attempts
    assert "stopped answering" in delivery.report.failures["lib/app0:1"]


async def test_an_unchanged_image_costs_no_write_the_second_time():
    registry, app = FakeRegistry(), image("app")
    await deliver(registry, [("lib/app:1.0", app)])
    before = len(registry.writes())
    delivery = await deliver(registry, [("lib/app:1.0", app)])
    assert len(registry.writes()) == before
    assert delivery.report.images[0]["change"] == "unchanged" and delivery.report.tags_pushed == 0


async def test_a_moved_tag_is_updated_and_says_from_what():
    registry, old, new = FakeRegistry(), image("old"), image("new")
    seed(registry, "lib/app", old, "1.0")
    delivery = await deliver(registry, [("lib/app:1.0", new)])
    assert registry.tags["lib/app"]["1.0"] == new.digest
    assert delivery.report.images[0] == {"source": "lib/app:1.0", "target": f"{HOST}/lib/app:1.0",
                                               "digest": new.digest, "change": "updated", "previous": old.digest}


async def test_an_image_named_by_digest_gets_no_tag():
    registry, app = FakeRegistry(), image("app")
    delivery = await deliver(registry, [(f"lib/app@{app.digest}", app)])
    assert tag_puts(registry) == [] and registry.has("lib/app", app.digest)
    assert delivery.report.images[0]["change"] == "added"


async def test_a_manifest_refused_as_a_race_is_put_again(monkeypatch):
    monkeypatch.setattr(deliver_module, "MANIFEST_RACE_PAUSE", (0, 0))
    app, refusals = image("app"), [error(400, "DIGEST_INVALID")]
    registry = FakeRegistry(fault=lambda request: refusals.pop() if (
        refusals and request.method == "PUT" and request.url.path.endswith(app.digest)) else None)
    delivery = await deliver(registry, [("lib/app:1.0", app)])
    assert len(manifest_puts(registry, app)) == 2 and registry.tags["lib/app"]["1.0"] == app.digest
    assert delivery.report.failures == {}


async def test_a_manifest_refused_every_time_fails_after_the_race_retries(monkeypatch):
    monkeypatch.setattr(deliver_module, "MANIFEST_RACE_PAUSE", (0, 0))
    app = image("app")
    registry = FakeRegistry(fault=lambda request: error(400, "DIGEST_INVALID") if (
        request.method == "PUT" and request.url.path.endswith(app.digest)) else None)
    delivery = await deliver(registry, [("lib/app:1.0", app)])
    assert len(manifest_puts(registry, app)) == deliver_module.MANIFEST_RACE_RETRIES + 1
    assert registry.tags == {} and delivery.report.exit_code == ExitCode.INTEGRITY


async def test_a_manifest_naming_a_child_the_plan_lacks_fails_at_once():
    registry, app = FakeRegistry(), image("app", layers=2)
    plan = ImagePlan.of(app.record("lib/app:1.0"), "")
    forgotten = app.top.children()[2].digest
    plan.blobs.discard(forgotten)  # the record lists every blob but one
    async with client(registry) as c:
        presence = Presence([plan])
        delivery = Delivery(TARGET, c, [plan], presence, 2)
        for digest in plan.blobs:
            await delivery.place_blob(digest, len(app.blobs[digest]), app.blobs[digest])
        async with anyio.create_task_group() as group:
            delivery.manifest_arrived(app.top, group)
        await delivery.tag_all()
    error_text = delivery.report.failures["lib/app:1.0"]
    assert f"references {forgotten}, which the plan does not list" in error_text
    assert manifest_puts(registry, app) == [] and tag_puts(registry) == []
    assert isinstance(delivery.errors[0], IntegrityError)


async def test_two_tags_of_one_image_are_both_tagged_and_its_manifest_put_once():
    registry, app = FakeRegistry(), image("app")
    delivery = await deliver(registry, [("lib/app:1.0", app), ("lib/app:latest", app)])
    assert len(manifest_puts(registry, app)) == 1
    assert registry.tags["lib/app"] == {"1.0": app.digest, "latest": app.digest}
    assert delivery.report.tags_pushed == 2
    assert_tags_last(registry)


async def test_progress_hears_of_every_uploaded_byte():
    registry, app, heard = FakeRegistry(), image("app", layers=3), []
    plans = [ImagePlan.of(app.record("lib/app:1.0"), "")]
    async with client(registry) as c:
        presence = Presence(plans)
        delivery = Delivery(TARGET, c, plans, presence, 2, progress=heard.append)
        for digest, data in app.blobs.items():
            await delivery.place_blob(digest, len(data), data)
    assert sum(heard) == sum(len(data) for data in app.blobs.values()) == delivery.report.uploaded_bytes
