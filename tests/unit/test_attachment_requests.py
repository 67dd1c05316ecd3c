"""Finding an image's attachments costs a few requests, not several per platform: over a WAN each one
queues with the images' own requests (docs/signatures.md, the attachments benchmark)."""

from __future__ import annotations

import json

import anyio
import pytest

from mirror.attach.discover import Listings, find
from mirror.model import oci
from mirror.model.oci import Manifest
from mirror.registry.pool import ClientPool
from mirror.registry.settings import RegistrySettings
from support.fake_registry import FakeRegistry, answer, error
from support.images import Image, image, index, seed

pytestmark = pytest.mark.anyio


def plain(host: str) -> RegistrySettings:
    return RegistrySettings(plain_http=True, retries=0)


def multiarch(registry: FakeRegistry, repository: str) -> Image:
    app = index(image(repository, arch="amd64"), image(repository, arch="arm64"))
    for child in app.children:
        seed(registry, repository, Image(child, [], {}))
    seed(registry, repository, app, "1.0")
    return app


def attach(registry: FakeRegistry, repository: str, subject: Image) -> dict[str, str]:
    """cosign's .sig, .att and .sbom of ``subject``, and an OCI 1.1 referrer in the referrers tag schema."""
    hex_ = subject.digest.split(":")[1]
    made = {}
    for suffix in ("sig", "att", "sbom"):
        seed(registry, repository, attachment := image(f"{repository} {suffix}"), f"sha256-{hex_}.{suffix}")
        made[suffix] = attachment.digest
    scan = image(f"{repository} scan")
    document = {**scan.top.document, "artifactType": "application/vnd.example.scan+json",
                "subject": subject.top.descriptor.to_json()}
    referrer = Manifest.from_bytes(json.dumps(document).encode(), oci.OCI_MANIFEST)
    seed(registry, repository, Image(referrer, [], scan.blobs))
    listing = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [referrer.descriptor.to_json()]}
    registry.add_manifest(repository, json.dumps(listing).encode(), oci.OCI_INDEX, f"sha256-{hex_}")
    made["referrer"] = referrer.digest
    return made


async def find_all(registry: FakeRegistry, images: dict[str, Image]) -> dict[str, list]:
    """Each repository's image looked up at once, as a pull does, sharing one run's Listings."""
    found: dict[str, list] = {}
    listings = Listings()
    async with ClientPool(plain, registry) as pool:
        client = await pool.get("src.test")

        async def one(repository: str) -> None:
            app = images[repository]
            subjects = [app.digest, *(child.digest for child in app.children)]
            found[repository] = await find(client, repository, subjects, listings=listings)

        async with anyio.create_task_group() as group:
            for repository in images:
                group.start_soon(one, repository)
    return found


async def test_images_with_nothing_attached_cost_a_tag_list_each_and_one_referrers_request():
    registry = FakeRegistry()
    images = {f"lib/app{i}": multiarch(registry, f"lib/app{i}") for i in range(3)}
    found = await find_all(registry, images)
    assert found == {repository: [] for repository in images}
    assert sorted(r for r in registry.requests if "/tags/list" in r) == [
        f"GET /v2/{repository}/tags/list" for repository in sorted(images)]
    assert len([r for r in registry.requests if "/referrers/" in r]) == 1  # 404: no API here, for any image
    assert len(registry.requests) == 3 + 1  # no HEAD of a tag that is not there


async def test_each_attachment_is_one_get_and_nothing_is_asked_twice():
    registry = FakeRegistry()
    images = {f"lib/app{i}": multiarch(registry, f"lib/app{i}") for i in range(2)}
    made = {repository: attach(registry, repository, app) for repository, app in images.items()}
    found = await find_all(registry, images)
    for repository, app in images.items():
        assert sorted(f.manifest.digest for f in found[repository]) == sorted(made[repository].values())
        assert {f.kind for f in found[repository]} == {"signature", "attestation", "sbom", "referrer"}
    hexes = {repository: app.digest.split(":")[1] for repository, app in images.items()}
    expected = sorted([f"GET /v2/{repository}/tags/list" for repository in images]
                      + [f"GET /v2/{repository}/manifests/sha256-{hexes[repository]}{suffix}"
                         for repository in images for suffix in (".sig", ".att", ".sbom", "")]
                      + [f"GET /v2/{repository}/manifests/{made[repository]['referrer']}" for repository in images])
    lookups = sorted(r for r in registry.requests if "/referrers/" not in r)
    assert lookups == expected  # per image: its tag list, then a GET of each attachment, no HEAD
    assert len([r for r in registry.requests if "/referrers/" in r]) == 1


async def test_a_registry_that_will_not_list_tags_is_asked_tag_by_tag():
    def refuse_listing(request):
        return error(405, "UNSUPPORTED", "no tag listing here") if request.url.path.endswith("/tags/list") else None

    registry = FakeRegistry(fault=refuse_listing)
    app = multiarch(registry, "lib/app")
    made = attach(registry, "lib/app", app)
    found = (await find_all(registry, {"lib/app": app}))["lib/app"]
    assert sorted(f.manifest.digest for f in found) == sorted(made.values())
    heads = [r for r in registry.requests if r.startswith("HEAD ")]
    assert len(heads) == 3 * (3 + 1)  # cosign's three tags and the tag schema's: the index, each platform


async def test_a_registry_serving_the_referrers_api_is_asked_for_every_subject():
    def referrers_api(request):
        if "/referrers/" in request.url.path:
            return answer(200, document={"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []},
                          headers={"Content-Type": oci.OCI_INDEX})
        return None

    registry = FakeRegistry(fault=referrers_api)
    images = {f"lib/app{i}": multiarch(registry, f"lib/app{i}") for i in range(2)}
    await find_all(registry, images)
    asked = sorted(r.rsplit("/", 1)[1] for r in registry.requests if "/referrers/" in r)
    assert asked == sorted(d for app in images.values() for d in [app.digest, *(c.digest for c in app.children)])
