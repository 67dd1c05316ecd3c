"""The fake registry against the real client: what the in-process tests rely on it to do as a registry does."""

from __future__ import annotations

import httpx
import pytest

from mirror.errors import AuthError, IntegrityError, NotFoundError, RegistryError, Unreachable
from mirror.model import oci
from mirror.registry import upload as upload_module
from mirror.registry import download as download_module
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.settings import Credentials, RegistrySettings
from support.fake_registry import FakeRegistry, answer, by_host, digest_of
from support.images import image, index, seed

pytestmark = pytest.mark.anyio

HOST = "registry.test:5000"
PLAIN = RegistrySettings(plain_http=True, retries=2)


def client(registry: httpx.AsyncBaseTransport, settings: RegistrySettings = PLAIN,
           host: str = HOST) -> RegistryClient:
    return RegistryClient(host, settings, auth_files=AuthFiles([]), backoff_base=0.001, http_transport=registry)


async def test_ping():
    registry = FakeRegistry()
    async with client(registry) as c:
        await c.ping()
    assert registry.requests == ["GET /v2/"]


async def test_a_small_blob_goes_up_in_one_put_and_comes_back_whole():
    registry, data = FakeRegistry(), b"layer bytes" * 100
    digest = digest_of(data)
    async with client(registry) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        assert await c.blob_size("lib/app", digest) == len(data)
        async with c.open_blob("lib/app", digest, len(data)) as chunks:
            assert b"".join([chunk async for chunk in chunks]) == data
    assert [line.split("?")[0] for line in registry.writes()] == ["POST /v2/lib/app/blobs/uploads/",
                                                                   "PUT /v2/lib/app/blobs/uploads/1"]


async def test_a_large_blob_goes_up_as_patch_then_put(monkeypatch):
    monkeypatch.setattr(upload_module, "SMALL_UPLOAD", 100)
    registry, data = FakeRegistry(), bytes(range(256)) * 10

    async def chunks():
        yield data[:1000]
        yield data[1000:]

    async with client(registry) as c:
        await c.upload_blob("lib/app", digest_of(data), len(data), chunks)
    assert [line.split(" ")[0] for line in registry.writes()] == ["POST", "PATCH", "PUT"]
    assert registry.blobs[digest_of(data)] == data


async def test_a_blob_whose_bytes_do_not_match_its_digest_is_refused_and_not_stored():
    registry = FakeRegistry()
    async with client(registry) as c:
        with pytest.raises(IntegrityError, match="DIGEST_INVALID"):
            await c.upload_blob("lib/app", digest_of(b"what was promised"), 7, b"a swap!")
    assert registry.blobs == {}


async def test_an_absent_blob_is_none_and_not_found():
    registry = FakeRegistry()
    async with client(registry) as c:
        assert await c.blob_size("lib/app", digest_of(b"x")) is None
        with pytest.raises(NotFoundError):
            async with c.open_blob("lib/app", digest_of(b"x")):
                pass


async def test_manifests_keep_their_bytes_and_content_type_by_tag_and_digest():
    registry, img = FakeRegistry(), image("app")
    async with client(registry) as c:
        for digest, data in img.blobs.items():
            await c.upload_blob("lib/app", digest, len(data), data)
        await c.put_manifest("lib/app", "1.0", img.top)
        by_tag = await c.get_manifest("lib/app", "1.0")
        by_digest = await c.get_manifest("lib/app", img.digest)
        head = await c.head_manifest("lib/app", "1.0")
    assert by_tag == by_digest == img.top
    assert head == img.top.descriptor
    assert registry.manifests[img.digest] == (img.top.data, oci.OCI_MANIFEST)


async def test_a_manifest_whose_blobs_are_missing_is_refused_like_distribution_does():
    registry, img = FakeRegistry(), image("app")
    async with client(registry) as c:
        with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN"):
            await c.put_manifest("lib/app", "1.0", img.top)
    assert registry.tags == {}


async def test_an_index_needs_its_platform_manifests_in_the_repository():
    registry, amd, arm = FakeRegistry(), image("app", arch="amd64"), image("app", arch="arm64")
    seed(registry, "lib/app", amd)
    async with client(registry) as c:
        with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN"):
            await c.put_manifest("lib/app", "1.0", index(amd, arm).top)
        seed(registry, "lib/app", arm)
        await c.put_manifest("lib/app", "1.0", index(amd, arm).top)
    assert registry.tags["lib/app"]["1.0"] == index(amd, arm).digest


async def test_a_manifest_in_another_repository_is_not_found_in_this_one():
    registry, img = FakeRegistry(), image("app")
    seed(registry, "lib/app", img, "1.0")
    async with client(registry) as c:
        assert await c.head_manifest("lib/other", img.digest) is None
        assert await c.head_manifest("lib/app", img.digest) == img.top.descriptor


async def test_a_mount_links_a_blob_from_another_repository_without_its_bytes():
    registry = FakeRegistry()
    digest = registry.add_blob("lib/a", b"shared layer")
    async with client(registry) as c:
        assert await c.mount_blob("lib/b", digest, "lib/a") is True
        assert await c.blob_size("lib/b", digest) == len(b"shared layer")
    assert registry.writes() == [f"POST /v2/lib/b/blobs/uploads/?mount={digest.replace(':', '%3A')}&from=lib%2Fa"]


async def test_a_refused_mount_says_false_and_cancels_the_upload_it_started():
    registry = FakeRegistry()
    async with client(registry) as c:
        assert await c.mount_blob("lib/b", digest_of(b"nowhere"), "lib/a") is False
    assert registry.writes()[-1] == "DELETE /v2/lib/b/blobs/uploads/1"
    assert registry.uploads == {} and not registry.has("lib/b", digest_of(b"nowhere"))


async def test_tags_and_catalog_are_read_across_pages():
    registry, img = FakeRegistry(page_size=2), image("app")
    for repository in ("a/one", "b/two", "c/three"):
        seed(registry, repository, img)
    for tag in ("1", "2", "3", "4", "5"):
        seed(registry, "a/one", img, tag)
    async with client(registry) as c:
        assert await c.list_tags("a/one") == ["1", "2", "3", "4", "5"]
        assert await c.catalog() == ["a/one", "b/two", "c/three"]
        assert await c.list_tags("no/such") == []
    assert sum(line.startswith("GET /v2/a/one/tags/list") for line in registry.requests) == 3


async def test_a_download_resumes_a_partial_file_with_a_range(tmp_path):
    ranges = []
    registry = FakeRegistry(fault=lambda request: ranges.append(request.headers.get("range")))
    data = bytes(range(256)) * 64
    digest = registry.add_blob("lib/app", data)
    partial = tmp_path / "blob.partial"
    partial.write_bytes(data[:1000])
    async with client(registry) as c:
        await c.download_blob("lib/app", digest, partial, size=len(data))
    assert partial.read_bytes() == data
    assert ranges == ["bytes=1000-"]


async def test_a_download_in_parallel_ranges_joins_them_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "SEGMENTED_MIN", 1024)
    monkeypatch.setattr(download_module, "RANGE_SIZE", 1 << 20)
    ranges = []
    registry = FakeRegistry(fault=lambda request: ranges.append(request.headers.get("range")))
    data = bytes(range(251)) * (4 << 12)  # 4 MiB and more: ranges are cut on MiB boundaries
    digest = registry.add_blob("lib/app", data)
    async with client(registry) as c:
        await c.download_blob("lib/app", digest, tmp_path / "blob", size=len(data), segments=4)
    assert (tmp_path / "blob").read_bytes() == data
    assert len([r for r in ranges if r]) == 4


async def test_basic_auth_sends_the_credentials_and_refuses_without_them():
    registry = FakeRegistry(auth="basic", credentials=("user", "secret"))
    async with client(registry, RegistrySettings(plain_http=True, credentials=Credentials("user", "secret"))) as c:
        await c.ping()
    async with client(registry) as c:
        with pytest.raises(AuthError, match="requires authentication"):
            await c.ping()
    async with client(registry, RegistrySettings(plain_http=True, credentials=Credentials("user", "wrong"))) as c:
        with pytest.raises(AuthError, match="refused"):
            await c.ping()


async def test_bearer_tokens_are_fetched_for_the_scopes_a_request_needs():
    registry, img = FakeRegistry(auth="bearer", credentials=("user", "secret")), image("app")
    seed(registry, "lib/app", img, "1.0")
    async with client(registry, RegistrySettings(plain_http=True, credentials=Credentials("user", "secret"))) as c:
        assert (await c.get_manifest("lib/app", "1.0")).digest == img.digest
    assert registry.scopes == ["repository:lib/app:pull"]
    async with client(registry, RegistrySettings(plain_http=True, credentials=Credentials("user", "wrong"))) as c:
        with pytest.raises(AuthError, match="refused"):
            await c.get_manifest("lib/app", "1.0")


async def test_5xx_and_429_are_retried_until_the_registry_answers():
    answers = [answer(503), answer(429, headers={"Retry-After": "0"})]
    registry = FakeRegistry(fault=lambda request: answers.pop(0) if answers else None)
    async with client(registry) as c:
        await c.ping()
    assert registry.requests == ["GET /v2/"] * 3


async def test_a_registry_that_keeps_failing_ends_in_a_registry_error_after_the_retries():
    registry = FakeRegistry(fault=lambda request: answer(500))
    async with client(registry) as c:
        with pytest.raises(RegistryError, match="answered 500, 3 attempt"):
            await c.ping()


async def test_a_dropped_connection_is_retried_then_reported_unreachable():
    def drop(request):
        raise httpx.ConnectError("connection refused", request=request)

    registry = FakeRegistry(fault=drop)
    async with client(registry) as c:
        with pytest.raises(Unreachable):
            await c.ping()
    assert len(registry.requests) == 3


async def test_a_manifest_altered_on_the_way_is_refused():
    registry, img = FakeRegistry(), image("app")
    seed(registry, "lib/app", img, "1.0")

    def alter(request):
        if request.method == "GET" and "/manifests/" in request.url.path:
            return answer(200, img.top.data + b" ", {"Content-Type": oci.OCI_MANIFEST})
        return None

    registry.fault = alter
    async with client(registry) as c:
        with pytest.raises(IntegrityError, match="hash to"):
            await c.get_manifest("lib/app", img.digest)


async def test_a_monolithic_upload_and_range_reads_on_the_raw_api():
    registry, data = FakeRegistry(), b"0123456789"
    async with httpx.AsyncClient(transport=registry, base_url=f"http://{HOST}") as http:
        stored = await http.post("/v2/lib/app/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
        part = await http.get(f"/v2/lib/app/blobs/{digest_of(data)}", headers={"Range": "bytes=2-4"})
        bad = await http.post("/v2/lib/app/blobs/uploads/", params={"digest": digest_of(b"x")}, content=data)
    assert stored.status_code == 201 and stored.headers["docker-content-digest"] == digest_of(data)
    assert (part.status_code, part.content, part.headers["content-range"]) == (206, b"234", "bytes 2-4/10")
    assert bad.status_code == 400


async def test_by_host_puts_several_registries_behind_one_transport():
    one, two = FakeRegistry(), FakeRegistry()
    routed = by_host({"one.test": one, "two.test": two})
    async with client(routed, host="one.test") as a, client(routed, host="two.test") as b:
        await a.ping()
        await b.ping()
        await b.ping()
    assert (len(one.requests), len(two.requests)) == (1, 2)
