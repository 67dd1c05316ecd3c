"""RegistryClient against a real docker-registry: blobs, manifests, mounts, faults.

Faults (drops, corruption, 5xx/429, odd answers) come from tests/support/faults.py,
a proxy in front of the real registry.
"""

from __future__ import annotations

import email.utils
import json
import subprocess
import time

import anyio
import httpx
import pytest

from mirror.model import oci
from mirror.errors import IntegrityError, NotFoundError, RegistryError
from mirror.model.reference import endpoint_host
from mirror.registry.answers import retry_after
from mirror.registry.client import RegistryClient
from mirror.registry.upload import SMALL_UPLOAD
from mirror.registry.transport import RETRY_AFTER_CAP
from mirror.registry.settings import RegistrySettings, transfers_window
from support.faults import FaultProxy
from support.registry_client import PLAIN, blob, client

pytestmark = pytest.mark.anyio

async def push_image(c: RegistryClient, repository: str, tag: str, layer: bytes,
                     media_type: str = oci.DOCKER_MANIFEST) -> oci.Manifest:
    """Config + one layer + a manifest in an unusual JSON layout (to prove bytes are kept)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    for data in (config, layer):
        await c.upload_blob(repository, oci.sha256_digest(data), len(data), data)
    oci_types = media_type == oci.OCI_MANIFEST
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json" if oci_types
                   else "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": oci.sha256_digest(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip" if oci_types
                    else "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer), "digest": oci.sha256_digest(layer)}],
    }
    manifest = oci.Manifest.from_bytes(json.dumps(doc, indent=7, sort_keys=True).encode() + b"\n")
    await c.put_manifest(repository, tag, manifest)
    return manifest


def index_of(media_type: str, children: list[oci.Manifest]) -> oci.Manifest:
    doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": [
        dict(c.descriptor.to_json(), platform={"architecture": arch, "os": "linux"})
        for c, arch in zip(children, ("amd64", "arm64"))]}
    return oci.Manifest.from_bytes(json.dumps(doc, separators=(",", ":")).encode())


def test_endpoint_host_maps_docker_hub_only():
    assert endpoint_host("docker.io") == "registry-1.docker.io"
    assert endpoint_host("quay.io") == "quay.io"
    assert endpoint_host("127.0.0.1:5000") == "127.0.0.1:5000"


async def test_blob_round_trip_small_and_large_streamed(proxy, tmp_path):
    small, small_digest = blob(300_000)
    large, large_digest = blob(SMALL_UPLOAD + 3_000_000)
    large_file = tmp_path / "large"
    large_file.write_bytes(large)
    generated, generated_digest = blob(SMALL_UPLOAD + 1_000_000, seed=7)

    async def generate():
        for start in range(0, len(generated), 1 << 20):
            yield generated[start:start + (1 << 20)]

    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", small_digest, len(small), small)
        await c.upload_blob("lib/app", large_digest, len(large), large_file)
        await c.upload_blob("lib/app", generated_digest, len(generated), generate)
        for data, digest in ((small, small_digest), (large, large_digest), (generated, generated_digest)):
            assert await c.blob_size("lib/app", digest) == len(data)
            target = tmp_path / f"{digest[7:]}.partial"
            seen: list[int] = []
            await c.download_blob("lib/app", digest, target, progress=seen.append)
            assert target.read_bytes() == data
            assert sum(seen) == len(data)
    # Large sources went up with PATCH, then an empty PUT: streamed, never one buffered PUT body.
    patches = proxy.requests("PATCH")
    assert len(patches) == 2
    assert patches[0].headers.get("content-length") == str(len(large))
    assert patches[1].headers.get("content-length") == str(len(generated))  # a generator: the given size
    assert [p.headers.get("content-length") for p in proxy.requests("PUT")].count(str(len(small))) == 1


async def test_download_resumes_with_range_from_partial_file(proxy, tmp_path):
    data, digest = blob(2_500_000)
    partial = tmp_path / "blob.partial"
    partial.write_bytes(data[:1_000_000])
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        await c.download_blob("lib/app", digest, partial)
    gets = proxy.requests("GET", "/blobs/")
    assert [g.headers.get("range") for g in gets] == ["bytes=1000000-"]
    assert gets[0].status == 206 and gets[0].body_bytes == 1_500_000
    assert partial.read_bytes() == data


async def test_download_starts_over_when_the_server_ignores_range(proxy, tmp_path):
    data, digest = blob(1_200_000)
    partial = tmp_path / "blob.partial"
    partial.write_bytes(data[:400_000])
    proxy.strip("/blobs/sha256:", "Range")
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        await c.download_blob("lib/app", digest, partial)
    assert [(g.headers.get("range"), g.status) for g in proxy.requests("GET", "/blobs/")] == [("bytes=400000-", 200)]
    assert partial.read_bytes() == data


async def test_a_206_from_another_offset_is_never_appended(proxy, tmp_path):
    """A server answering a resume from the wrong byte: refused as it stands, the partial file kept."""
    data, digest = blob(1_500_000)
    partial = tmp_path / "blob.partial"
    partial.write_bytes(data[:600_000])
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        proxy.serve("/blobs/sha256:", data, status=206, times=1,
                    headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})  # asked for 600000-
        with pytest.raises(RegistryError, match="answered 206"):  # the server is at fault, not the blob
            await c.download_blob("lib/app", digest, partial)
        assert partial.read_bytes() == data[:600_000]  # nothing of the wrong answer was written
        await c.download_blob("lib/app", digest, partial)  # the next run resumes where it was
    gets = proxy.requests("GET", "/blobs/")
    assert [g.headers.get("range") for g in gets] == ["bytes=600000-", "bytes=600000-"]
    assert partial.read_bytes() == data


async def test_download_resumes_after_connection_drop(proxy, tmp_path):
    data, digest = blob(3_000_000)
    proxy.drop("/blobs/sha256:", after=700_000)
    partial = tmp_path / "blob.partial"
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        await c.download_blob("lib/app", digest, partial)
    gets = proxy.requests("GET", "/blobs/")
    assert [g.headers.get("range") for g in gets] == [None, "bytes=700000-"]
    assert partial.read_bytes() == data


async def test_corrupt_partial_is_detected_then_clean_download_works(proxy, tmp_path):
    data, digest = blob(1_500_000)
    partial = tmp_path / "blob.partial"
    partial.write_bytes(b"\0" * 500_000)
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        with pytest.raises(IntegrityError) as caught:
            await c.download_blob("lib/app", digest, partial)
        message = str(caught.value)
        assert digest in message and f"{proxy.host}/lib/app" in message
        assert not partial.exists()
        await c.download_blob("lib/app", digest, partial)
    assert partial.read_bytes() == data


async def test_source_serving_wrong_bytes_is_an_integrity_error(proxy, tmp_path):
    data, digest = blob(1_000_000)
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        proxy.corrupt("/blobs/sha256:")
        with pytest.raises(IntegrityError, match=digest):
            await c.download_blob("lib/app", digest, tmp_path / "blob.partial")
        assert not (tmp_path / "blob.partial").exists()
        async with c.open_blob("lib/app", digest) as chunks:  # raw stream: unchecked, caller hashes
            assert b"".join([chunk async for chunk in chunks]) == data


async def test_manifests_round_trip_byte_for_byte_in_all_four_media_types(registry):
    layer, _ = blob(4096)
    async with client(registry.host) as c:
        docker = await push_image(c, "lib/app", "docker", layer, oci.DOCKER_MANIFEST)
        image = await push_image(c, "lib/app", "oci", layer, oci.OCI_MANIFEST)
        docker_list = index_of(oci.DOCKER_LIST, [docker, image])
        oci_index = index_of(oci.OCI_INDEX, [image, docker])
        await c.put_manifest("lib/app", "list", docker_list)
        await c.put_manifest("lib/app", oci_index.digest, oci_index)  # by digest, no tag
        for tag, manifest in (("docker", docker), ("oci", image), ("list", docker_list),
                              (oci_index.digest, oci_index)):
            by_tag = await c.get_manifest("lib/app", tag)
            by_digest = await c.get_manifest("lib/app", manifest.digest)
            assert by_tag == by_digest == manifest
            assert await c.head_manifest("lib/app", tag) == manifest.descriptor
        assert sorted(await c.list_tags("lib/app")) == ["docker", "list", "oci"]
    # An independent reader sees exactly the bytes we sent.
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.host}/lib/app:list"], capture_output=True, check=True).stdout
    assert raw == docker_list.data


async def test_missing_things(registry):
    _, digest = blob(10)
    async with client(registry.host) as c:
        with pytest.raises(NotFoundError, match=f"{registry.host}/lib/none:v1"):
            await c.get_manifest("lib/none", "v1")
        assert await c.head_manifest("lib/none", "v1") is None
        assert await c.blob_size("lib/none", digest) is None
        assert await c.list_tags("lib/none") == []
        with pytest.raises(NotFoundError, match=digest):
            async with c.open_blob("lib/none", digest):
                pass


async def test_schema1_and_altered_manifests_are_refused(proxy):
    layer, _ = blob(1000)
    schema1 = json.dumps({"schemaVersion": 1, "name": "lib/old", "tag": "v1", "fsLayers": []}).encode()
    proxy.serve(r"/manifests/old$", schema1,
                headers={"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"})
    async with client(proxy.host) as c:
        manifest = await push_image(c, "lib/app", "v1", layer)
        with pytest.raises(RegistryError, match=r"lib/app:old: image uses Docker schema1"):
            await c.get_manifest("lib/app", "old")
        altered = manifest.data + b" "  # still valid JSON, other bytes
        proxy.serve(r"/manifests/sha256:", altered, headers={"Content-Type": oci.DOCKER_MANIFEST}, times=1)
        with pytest.raises(IntegrityError, match=manifest.digest):
            await c.get_manifest("lib/app", manifest.digest)


async def test_mount_between_repositories(proxy):
    layer, digest = blob(200_000)
    async with client(proxy.host) as c:
        await c.upload_blob("team/a", digest, len(layer), layer)
        assert await c.mount_blob("team/b", digest, "team/a") is True
        assert await c.blob_size("team/b", digest) == len(layer)
        # Unknown source repository: the registry starts an upload instead; we cancel it and say so.
        assert await c.mount_blob("team/c", digest, "team/nowhere") is False
        assert len(proxy.requests("DELETE", "/v2/team/c/blobs/uploads/")) == 1
        assert await c.blob_size("team/c", digest) is None
        await c.upload_blob("team/c", digest, len(layer), layer)
        assert await c.blob_size("team/c", digest) == len(layer)


@pytest.mark.parametrize("size", [1000, SMALL_UPLOAD + 1])
async def test_failing_upload_source_cancels_and_propagates(proxy, size):
    data, digest = blob(size)
    calls = []

    async def lying_source():  # fails before its last byte, as a bundle entry that does not verify does
        calls.append(1)
        yield data[:size // 2]
        raise IntegrityError("source bytes do not hash to the digest")

    async with client(proxy.host) as c:
        with pytest.raises(IntegrityError, match="source bytes do not hash"):
            await c.upload_blob("lib/app", digest, size, lying_source)
        assert await c.blob_size("lib/app", digest) is None
    assert calls == [1]  # not retried: only transient failures are
    assert len(proxy.requests("DELETE", "/blobs/uploads/")) == 1
    assert not [r for r in proxy.requests("PUT") if r.status == 201]


async def test_large_upload_retried_with_a_fresh_stream_after_a_transient_failure(proxy):
    data, digest = blob(SMALL_UPLOAD + 100)
    calls = []

    def source():
        calls.append(1)
        return _chunks(data)

    proxy.fail("/blobs/uploads/", 502, method="PATCH")
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), source)
        assert await c.blob_size("lib/app", digest) == len(data)
    assert len(calls) == 2
    assert [r.status for r in proxy.requests("PATCH")] == [502, 202]
    assert len(proxy.requests("DELETE", "/blobs/uploads/")) == 1  # the broken session was cancelled


async def test_bare_async_iterator_source_gets_one_attempt(proxy):
    data, digest = blob(SMALL_UPLOAD + 100)
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), _chunks(data))
        assert await c.blob_size("lib/app", digest) == len(data)
        proxy.fail("/blobs/uploads/", 503, method="PATCH")
        with pytest.raises(RegistryError, match="answered 503, 1 attempt"):
            await c.upload_blob("lib/other", digest, len(data), _chunks(data))
    assert len(proxy.requests("POST", "/v2/lib/other/")) == 1


async def test_429_waits_forretry_after(proxy):
    proxy.fail("/manifests/", 429, headers={"Retry-After": "1"})
    async with client(proxy.host) as c:
        started = time.monotonic()
        assert await c.head_manifest("lib/app", "v1") is None
        waited = time.monotonic() - started
    assert 0.9 <= waited < 5
    assert [r.status for r in proxy.requests("HEAD")] == [429, 404]


async def test_transient_5xx_then_success_and_bounded_give_up(proxy):
    layer, digest = blob(5000)
    proxy.fail("/blobs/uploads/", 503, times=2)
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(layer), layer)
        assert await c.blob_size("lib/app", digest) == len(layer)
        assert [r.status for r in proxy.requests("POST")][:3] == [503, 503, 202]
        proxy.fail("/manifests/", 500, times=None)
        with pytest.raises(RegistryError, match=r"answered 500, 4 attempt") as caught:
            await c.get_manifest("lib/app", "v1")
        assert caught.value.status == 500
    assert len(proxy.requests("GET", "/manifests/")) == PLAIN.retries + 1


def test_retry_after_takes_seconds_or_an_http_date_and_is_capped():
    assert retry_after("7") == 7.0
    assert 25 < retry_after(email.utils.formatdate(time.time() + 30, usegmt=True)) <= 30
    assert retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None
    assert client("127.0.0.1:1")._transport.delay(0, 3600) == RETRY_AFTER_CAP


async def test_unreachable_registry_gives_up_after_bounded_retries(registry):
    registry.stop()
    async with client(registry.host) as c:
        with pytest.raises(RegistryError, match=f"{registry.host} could not be reached"):
            await c.ping()
        # Every later request fails at once with the same reason instead of its own retry cycle.
        started = time.monotonic()
        with pytest.raises(RegistryError, match=f"{registry.host} could not be reached"):
            await c.get_manifest("lib/app", "v1")
        assert time.monotonic() - started < 0.05


async def test_pagination_follows_link_headers(proxy):
    layer, _ = blob(100)
    async with client(proxy.host) as c:
        for repository in ("lib/app", "lib/other", "lib/third"):
            await push_image(c, repository, "x", layer)
        # distribution 2.8 never pages tags, so the proxy serves both pages; it does page the
        # catalog: the proxy serves page one, the registry's own Link headers lead on from there.
        proxy.serve(r"/tags/list$", json.dumps({"name": "lib/app", "tags": ["a", "b"]}).encode(),
                    headers={"Link": '</v2/lib/app/tags/list?n=2&last=b>; rel="next"'})
        proxy.serve(r"/tags/list\?n=2&last=b$", json.dumps({"name": "lib/app", "tags": ["c"]}).encode())
        proxy.serve(r"/_catalog$", json.dumps({"repositories": []}).encode(),
                    headers={"Link": '</v2/_catalog?n=1>; rel="next"'})
        assert await c.list_tags("lib/app") == ["a", "b", "c"]
        assert await c.catalog() == ["lib/app", "lib/other", "lib/third"]
    assert len(proxy.requests("GET", r"/_catalog\?last=")) == 2  # the registry's own next pages


async def test_concurrency_is_limited_per_registry(proxy, tmp_path):
    data, digest = blob(2_000_000)
    settings = RegistrySettings(plain_http=True, max_connections=2)
    async with client(proxy.host, settings) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        async with anyio.create_task_group() as group:
            for n in range(6):
                group.start_soon(c.download_blob, "lib/app", digest, tmp_path / f"{n}.partial")
    assert len(proxy.requests("GET", "/blobs/")) == 6
    assert proxy.max_in_flight <= transfers_window(2)[1] < 6  # the window's cap: 2 at first, 4 at most
    assert all((tmp_path / f"{n}.partial").read_bytes() == data for n in range(6))


async def test_small_requests_do_not_wait_behind_blob_transfers(registry):
    """Every transfer slot held by an open blob body: manifests still resolve (over a long link,
    hundreds of images resolve while their downloads run)."""
    data, digest = blob(2_000_000)
    settings = RegistrySettings(plain_http=True, max_connections=2)
    async with client(registry.host, settings) as c:
        manifest = await push_image(c, "lib/app", "v1", data)
        async with c.open_blob("lib/app", digest) as first, c.open_blob("lib/app", digest) as second:
            with anyio.fail_after(60):  # a bound on a hang, not a timing assertion
                found = await c.head_manifest("lib/app", "v1")
                fetched = await c.get_manifest("lib/app", manifest.digest)
            assert b"".join([chunk async for chunk in first]) == data
            assert b"".join([chunk async for chunk in second]) == data
    assert found.digest == fetched.digest == manifest.digest


async def test_raw_reader_agrees_with_uploaded_blob(registry):
    """A second, independent reader (plain httpx) sees the bytes we uploaded."""
    data, digest = blob(SMALL_UPLOAD + 10)
    async with client(registry.host) as c:
        await c.upload_blob("lib/app", digest, len(data), lambda: _chunks(data))
    served = httpx.get(f"{registry.url}/v2/lib/app/blobs/{digest}").content
    assert oci.sha256_digest(served) == digest


async def _chunks(data: bytes):
    for start in range(0, len(data), 1 << 20):
        yield data[start:start + (1 << 20)]


async def test_http_proxy_from_environment_and_no_proxy(registry, monkeypatch):
    """The connected side often sits behind a corporate proxy: HTTP(S)_PROXY and NO_PROXY are honoured."""
    with FaultProxy(registry.host) as forward_proxy:  # it forwards absolute-form requests too
        monkeypatch.setenv("HTTP_PROXY", f"http://{forward_proxy.host}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with client(registry.host) as c:
            await c.ping()
        assert [r.path for r in forward_proxy.seen] == [f"http://{registry.host}/v2/"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with client(registry.host) as c:
            await c.ping()
        assert len(forward_proxy.seen) == 1
