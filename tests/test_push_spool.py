"""push's temp-file spool: a blob's upload starts while the bundle is still being read into it."""

from __future__ import annotations

import hashlib
import time

import anyio
import httpx
import pytest
from faults import FaultProxy

from conftest import run_mirror
from mirror.bundle.reader import BlobCorrupt, BundleReader
from mirror.model.target import target_repository
from mirror.transfer.bundle_feed import FileSpool
from mirror.model.reference import Reference

CHUNK = 1 << 20


def write_slowly(spool: FileSpool, data: bytes, error: Exception | None = None) -> None:
    """The reader thread's side (run it in a worker thread): the file grows one chunk at a time."""
    for start in range(0, len(data), CHUNK):
        time.sleep(0.02)
        spool.write(data[start:start + CHUNK])
    spool.finish(error)


def test_every_attempt_reads_the_whole_blob_while_it_is_written(tmp_path):
    data = bytes(range(256)) * (5 * CHUNK // 256) + b"tail"
    spool = FileSpool(tmp_path / "blob", len(data))

    async def main() -> tuple[bytes, bytes]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, write_slowly, spool, data)
            first = spool.source()
            partial = await first.__anext__()  # an attempt that fails after its first chunk ...
            await first.aclose()
            retry = b"".join([chunk async for chunk in spool.source()])  # ... and a retry from the start
        return partial, retry

    partial, retry = anyio.run(main)
    assert partial == data[:len(partial)] and retry == data


def test_a_read_error_ends_the_upload_with_that_error(tmp_path):
    data = b"x" * (3 * CHUNK)
    spool = FileSpool(tmp_path / "blob", len(data) + 10)  # the bundle ends the blob early
    error = BlobCorrupt("blob sha256:abc in b.tar.zst is corrupt", "sha256:abc")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, write_slowly, spool, data, error)
            with pytest.raises(BlobCorrupt, match="is corrupt"):
                async for _ in spool.source():
                    pass

    anyio.run(main)


@pytest.fixture
def bundle(corpus_bundle):
    return corpus_bundle


def test_large_blob_whose_upload_fails_is_sent_again_in_full(bundle, registry):
    with BundleReader(bundle) as reader:
        sizes = reader.manifest.blobs
    large = max(sizes, key=sizes.get)
    assert sizes[large] > 2 * CHUNK  # spooled to a file, not memory
    with FaultProxy(registry.host) as proxy:
        proxy.fail(r"/blobs/uploads/.*digest=" + large.replace(":", "%3A"), 503, method="PUT")
        result = run_mirror("push", bundle, "--registry", proxy.host, "--plain-http", "-q")
        puts = proxy.requests("PUT", r"digest=" + large.replace(":", "%3A"))
    assert result.returncode == 0, result.stderr
    assert [p.status for p in puts][:2] == [503, 201]
    check = run_mirror("verify", bundle, "--registry", registry.host, "--plain-http")
    assert check.returncode == 0, check.stderr


def flip_last_byte_of(digest):
    """A ``rewrite_bundle`` edit: the damage is found only when the whole blob has been read."""

    def edit(member, data):
        if member.name.endswith(digest.split(":")[1]):
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return [(member, data)]

    return edit


@pytest.mark.parametrize("window", ["512M", "4M"])  # spooled to a temp file / streamed straight from the bundle
def test_corrupt_large_blob_never_reaches_the_registry(bundle, seeded_source, registry, tmp_path, window):
    from test_push import blobs_committed, rewrite_bundle, tags_sent

    sizes = seeded_source.corpus.sizes
    large = max(set().union(*(i.blob_digests for i in seeded_source.corpus.images)), key=sizes.get)
    assert sizes[large] > 4 << 20  # larger than the small window
    broken = tmp_path / "broken.tar.zst"
    rewrite_bundle(bundle, broken, flip_last_byte_of(large))
    with FaultProxy(registry.host) as proxy:
        result = run_mirror("push", broken, "--registry", proxy.host, "--plain-http", "--window", window, "-q")
        assert result.returncode == 4, result.stderr
        assert large in result.stderr
        assert large not in blobs_committed(proxy)  # push's own hash stopped it, not the registry's
        owners = [image for image in seeded_source.corpus.images if large in image.blob_digests]
        for image in owners:
            repository = target_repository(Reference.parse(image.source))
            assert tags_sent(proxy, repository) == []
            assert httpx.head(f"{registry.url}/v2/{repository}/blobs/{large}").status_code == 404
        assert len(tags_sent(proxy)) == len(seeded_source.corpus.images) - len(owners)


def test_blob_larger_than_the_window_is_streamed_and_every_image_arrives_intact(bundle, seeded_source, registry):
    from test_push import assert_manifests_follow_their_content, blobs_committed, tags_pointing_at_incomplete_images

    sizes = seeded_source.corpus.sizes
    large = max(set().union(*(i.blob_digests for i in seeded_source.corpus.images)), key=sizes.get)
    with FaultProxy(registry.host) as proxy:
        result = run_mirror("push", bundle, "--registry", proxy.host, "--plain-http", "--window", "4M", "-q")
        assert result.returncode == 0, result.stderr
        assert blobs_committed(proxy).count(large) == 1
        assert_manifests_follow_their_content(proxy, registry)
    for image in seeded_source.corpus.images:
        repository = target_repository(Reference.parse(image.source))
        served = httpx.get(f"{registry.url}/v2/{repository}/manifests/{image.tag}",
                           headers={"Accept": image.media_type})
        assert served.status_code == 200, image.source
        assert "sha256:" + hashlib.sha256(served.content).hexdigest() == image.digest
    assert tags_pointing_at_incomplete_images(registry) == []


def test_blob_larger_than_the_window_is_not_retried_in_the_same_pass(bundle, seeded_source, registry):
    """Streamed straight from the bundle, it cannot be sent twice: the image fails, saying what to do."""
    from test_push import tags_sent

    sizes = seeded_source.corpus.sizes
    large = max(set().union(*(i.blob_digests for i in seeded_source.corpus.images)), key=sizes.get)
    owners = [image for image in seeded_source.corpus.images if large in image.blob_digests]
    with FaultProxy(registry.host) as proxy:
        proxy.fail(r"/blobs/uploads/", 503, method="PATCH")  # the one blob over SMALL_UPLOAD goes as a PATCH
        result = run_mirror("push", bundle, "--registry", proxy.host, "--plain-http", "--window", "4M")
        assert [seen.status for seen in proxy.requests("PATCH")] == [503]
        for image in owners:
            assert tags_sent(proxy, target_repository(Reference.parse(image.source))) == []
    assert result.returncode == 1, result.stderr
    assert large in result.stderr and "raise --window" in result.stderr
    again = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "--window", "4M", "-q")
    assert again.returncode == 0, again.stderr
