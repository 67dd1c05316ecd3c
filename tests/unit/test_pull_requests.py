"""What a pull asks a source registry, by kind: over a real link every request is a round trip, and
Docker Hub bills each manifest GET (transfer/budget.py counts them the same way)."""

from __future__ import annotations

from collections import Counter

import pytest

SCOPES_PER_TOKEN = 16  # registry/auth.py's: the scopes one shared token request asks for
from support.fake_registry import FakeRegistry
from support.images import image, index, seed
from support.pulled import SOURCE, pulled

pytestmark = pytest.mark.anyio

BASE = b"common base " * 30


def app(registry: FakeRegistry, repository: str = "lib/app") -> None:
    """A two-platform index: three manifests, two configs, a layer of its own both platforms share, and
    the base layer (lib/tool's too)."""
    amd, arm = image(repository, arch="amd64"), image(repository, arch="arm64", shared=[BASE])
    for child in (amd, arm):
        seed(registry, repository, child)
    seed(registry, repository, index(amd, arm), "1.0")


# What every pull adds once per source registry: the budget's HEAD (its first try answered 401 with
# the challenge), one token, one referrers request (answered as a registry without the API does).
ONCE = Counter(HEAD=2, token=1, referrers=1)


async def test_a_simple_image_costs_its_manifest_its_blobs_once_and_one_tag_listing(tmp_path):
    registry = FakeRegistry(auth="bearer")
    seed(registry, "lib/tool", image("tool", layers=2, shared=[BASE]), "2")
    result = await pulled(registry, tmp_path, "lib/tool:2")
    assert result.failures == {}
    assert registry.kinds() == ONCE + Counter(manifest=1, blob=4, tags=1)  # config + 3 layers


async def test_a_multi_arch_index_costs_a_manifest_get_per_platform_and_each_blob_once(tmp_path):
    registry = FakeRegistry(auth="bearer")
    app(registry)
    result = await pulled(registry, tmp_path, "lib/app:1.0")
    assert result.failures == {}
    # the index and its two platform manifests: the three pulls the rate-limit budget charges
    assert registry.kinds() == ONCE + Counter(manifest=3, blob=4, tags=1)


async def test_many_repositories_share_tokens_and_each_is_listed_once(tmp_path):
    registry = FakeRegistry(auth="bearer")
    repositories = [f"lib/app{i}" for i in range(SCOPES_PER_TOKEN + 4)]
    for repository in repositories:
        app(registry, repository)
    result = await pulled(registry, tmp_path, *(f"{r}:1.0" for r in repositories))
    assert result.failures == {}
    images = len(repositories)
    # the shared base layer once, each image's own two configs and layer
    assert registry.kinds() == ONCE + Counter(token=1, manifest=3 * images, blob=1 + 3 * images, tags=images)
    assert sorted(len(scopes) for scopes in registry.token_requests) == [4, SCOPES_PER_TOKEN]


async def test_a_token_server_granting_one_scope_per_token_still_opens_every_repository(tmp_path):
    registry = FakeRegistry(auth="bearer", scopes_per_token=1)
    for repository in ("lib/a", "lib/b", "lib/c"):
        app(registry, repository)
    result = await pulled(registry, tmp_path, "lib/a:1.0", "lib/b:1.0", "lib/c:1.0")
    assert result.failures == {}
    shared, *alone = registry.token_requests
    assert len(shared) == 3 and sorted(alone) == [["repository:lib/b:pull"], ["repository:lib/c:pull"]]


@pytest.mark.parametrize("page_size, tags_asked", [(100, 1), (1, 4)])
async def test_only_listed_tags_are_asked_for_and_a_long_listing_falls_back_to_asking_each(
        tmp_path, page_size, tags_asked):
    registry = FakeRegistry(page_size=page_size)
    tool = image("tool")
    seed(registry, "lib/tool", tool, "2")
    for tag in ("1", "3", "4"):  # a listing of more than three one-tag pages is not read to its end
        seed(registry, "lib/tool", tool, tag)
    signature = image("signature")
    seed(registry, "lib/tool", signature, "sha256-" + tool.digest.split(":")[1] + ".sig")
    result = await pulled(registry, tmp_path, "lib/tool:2")
    assert [r.digest for r in result.images if r.attached_to] == [signature.digest]
    asked = [line for line in registry.requests if "/manifests/sha256-" in line]  # by tag, HEAD or GET
    assert len(asked) == tags_asked  # listed: the .sig tag alone; unlisted: .att, .sbom and the referrers tag too


def metered(registry: FakeRegistry) -> None:
    """The registry states a rate limit on every manifest HEAD, as Docker Hub does (HEADs are free)."""
    def stated(request):
        if request.method != "HEAD" or "/manifests/" not in request.url.path:
            return None
        name, _, reference = request.url.path.removeprefix("/v2/").rpartition("/manifests/")
        served = registry._manifest(request, b"", name, reference)
        served.headers.update({"RateLimit-Remaining": "100;w=21600", "RateLimit-Limit": "100;w=21600"})
        return served
    registry.fault = stated


async def test_a_first_run_against_a_metered_registry_heads_no_tag_and_pays_a_pull_per_manifest_get(tmp_path):
    registry = FakeRegistry()
    app(registry)
    seed(registry, "lib/tool", image("tool", shared=[BASE]), "2")
    metered(registry)
    result = await pulled(registry, tmp_path, "lib/app:1.0", "lib/tool:2")
    assert result.failures == {}
    kinds = registry.kinds()
    assert kinds["HEAD"] == 1  # the budget's survey; an empty work dir has no manifest a tag's HEAD could find
    assert result.ratelimits[SOURCE]["spent"] == kinds["manifest"] == 3 + 1
