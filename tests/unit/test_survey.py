"""Presence: what the target holds before anything is read, mounts across repositories, tags in place."""

from __future__ import annotations

import pytest

from mirror.errors import MirrorError
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.settings import RegistrySettings
from mirror.transfer.plan import ImagePlan, plan_images
from mirror.transfer.survey import Presence, tagged_in_place
from support.fake_registry import FakeRegistry
from support.images import image, seed

pytestmark = pytest.mark.anyio


def client(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient("target.test", RegistrySettings(plain_http=True), auth_files=AuthFiles([]),
                          http_transport=registry)


def plan(source: str, img, prefix: str = "") -> ImagePlan:
    return ImagePlan.of(img.record(source), prefix)


def test_a_plan_names_the_target_repository_and_what_the_image_needs_there():
    app = image("app", layers=2)
    tagged, pinned = plan("docker.io/rancher/app:v1", app, "mirror"), plan(f"quay.io/x/app@{app.digest}", app)
    assert (tagged.repository, tagged.tag, tagged.target) == ("mirror/rancher/app", "v1", "mirror/rancher/app:v1")
    assert (pinned.repository, pinned.tag, pinned.target) == ("quay.io/x/app", None, f"quay.io/x/app@{app.digest}")
    assert tagged.manifests == {app.digest} and tagged.blobs == set(app.blobs)
    assert [p.repository for p in plan_images([app.record("a/b:1"), app.record("c/d:2")], "")] == ["a/b", "c/d"]


def test_presence_lists_each_repository_once_per_digest():
    shared = b"shared layer"
    one, two = image("one", shared=[shared]), image("two", shared=[shared])
    presence = Presence([plan("lib/one:1", one), plan("lib/one:2", one), plan("lib/two:1", two)])
    shared_digest = one.top.children()[-1].digest
    assert presence.blob_repos[shared_digest] == ["lib/one", "lib/two"]
    assert presence.manifest_repos[one.digest] == ["lib/one"]
    assert presence.planned(shared_digest, "lib/two") and not presence.planned(one.digest, "lib/two")


async def test_the_survey_finds_what_each_repository_already_holds():
    registry, app = FakeRegistry(), image("app", layers=2)
    config, first, second = (d.digest for d in app.top.children())
    registry.add_blob("lib/app", app.blobs[first])
    registry.add_blob("lib/other", app.blobs[second])  # elsewhere: not in lib/app
    presence = Presence([plan("lib/app:1", app)])
    async with client(registry) as c:
        await presence.survey(c, jobs=4)
    assert presence.missing_blobs == {config, second} and presence.missing_manifests
    assert presence[first, "lib/app"].ok and not presence[second, "lib/app"].done.is_set()
    assert registry.writes() == []


async def test_a_complete_image_is_all_present_and_needs_nothing():
    registry, app = FakeRegistry(), image("app")
    seed(registry, "lib/app", app, "1")
    presence = Presence([plan("lib/app:1", app)])
    async with client(registry) as c:
        await presence.survey(c, jobs=4)
    assert presence.missing_blobs == set() and not presence.missing_manifests
    assert presence.image_error(plan("lib/app:1", app)) is None


async def test_a_blob_in_another_planned_repository_is_mounted_not_uploaded():
    registry, shared = FakeRegistry(), b"base layer"
    one, two = image("one", shared=[shared]), image("two", shared=[shared])
    seed(registry, "lib/one", one, "1")
    presence = Presence([plan("lib/one:1", one), plan("lib/two:1", two)])
    async with client(registry) as c:
        await presence.survey(c, jobs=4)
        mounted = await presence.mount_known(c, jobs=4)
    digest = one.top.children()[-1].digest
    assert mounted == 1 and presence[digest, "lib/two"].ok and registry.has("lib/two", digest)
    assert registry.writes() == [f"POST /v2/lib/two/blobs/uploads/?mount={digest.replace(':', '%3A')}&from=lib%2Fone"]
    assert digest not in presence.missing_blobs


async def test_a_blob_known_elsewhere_in_the_registry_is_mounted_from_there():
    registry, app = FakeRegistry(), image("app")
    layer = app.top.children()[1].digest
    registry.add_blob("base/image", app.blobs[layer])
    presence = Presence([plan("lib/app:1", app)])
    async with client(registry) as c:
        await presence.survey(c, jobs=4)
        assert await presence.mount_known(c, jobs=4, elsewhere={layer: "base/image"}) == 1
    assert registry.has("lib/app", layer) and presence[layer, "lib/app"].ok


async def test_a_refused_mount_leaves_the_blob_to_upload():
    registry, app = FakeRegistry(), image("app")
    layer = app.top.children()[1].digest
    presence = Presence([plan("lib/app:1", app)])
    async with client(registry) as c:
        await presence.survey(c, jobs=4)
        assert await presence.mount_known(c, jobs=4, elsewhere={layer: "gone/away"}) == 0
    assert layer in presence.missing_blobs and registry.uploads == {}


async def test_an_image_whose_tag_already_has_the_digest_is_done_with_one_head():
    registry, app, other = FakeRegistry(), image("app"), image("other")
    seed(registry, "lib/app", app, "1")
    seed(registry, "lib/moved", other, "1")
    plans = [plan("lib/app:1", app), plan("lib/moved:1", app), plan(f"lib/app@{app.digest}", app)]
    async with client(registry) as c:
        done = await tagged_in_place(c, plans, jobs=4)
    assert done == [plans[0]]
    assert sorted(registry.requests) == ["HEAD /v2/lib/app/manifests/1", "HEAD /v2/lib/moved/manifests/1"]


def test_an_image_is_complete_only_once_every_blob_and_manifest_arrived():
    app = image("app")
    presence = Presence([plan("lib/app:1", app)])
    for digest in app.blobs:
        presence[digest, "lib/app"].succeed()
    assert str(presence.image_error(plan("lib/app:1", app))) == f"{app.digest} did not reach lib/app"
    presence[app.digest, "lib/app"].succeed()
    assert presence.image_error(plan("lib/app:1", app)) is None


def test_a_failure_settles_an_outcome_for_good():
    app = image("app")
    presence = Presence([plan("lib/app:1", app)])
    config = app.top.children()[0].digest
    presence.fail_blob(config, MirrorError("refused"))
    for digest in [*app.blobs, app.digest]:
        presence[digest, "lib/app"].succeed()
        presence[digest, "lib/app"].fail(MirrorError("too late"))
    assert str(presence.image_error(plan("lib/app:1", app))) == "refused"
    assert presence.missing_blobs == {config}
