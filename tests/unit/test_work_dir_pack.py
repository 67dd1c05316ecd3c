"""The pull's work dir keeps small content in one pack file: a torn or bad record found on opening it is left
out, a failed append leaves it as it was, and a pull resumed from a torn pack still completes."""

from __future__ import annotations

import errno
import os

import httpx
import pytest

from mirror.bundle.reader import BundleReader
from mirror.bundle.store import HEADER, BlobStore
from mirror.errors import DiskFull, IntegrityError, RegistryError
from mirror.model.oci import sha256_digest
from mirror.model.reference import Reference
from mirror.model.upstream import SourceMap
from mirror.progress import Progress
from mirror.registry.client import RegistryClient
from mirror.registry.settings import RegistrySettings
from mirror.transfer.pull import PullRequest, pull
from support.fake_registry import FakeRegistry
from support.images import image, index, seed

CONTENTS = [b"first " * 100, b"second " * 200, b"third " * 300]


def records(pack) -> list[tuple[str, int, int]]:
    """(digest, where the record starts, where it ends) of each record, as the pack is laid out."""
    data, found, position = pack.read_bytes(), [], 0
    while position < len(data):
        length = int.from_bytes(data[position + HEADER - 8:position + HEADER], "big")
        end = position + HEADER + length
        found.append(("sha256:" + data[position + 4:position + 36].hex(), position, end))
        position = end
    return found


def filled(tmp_path) -> BlobStore:
    store = BlobStore(tmp_path / "work")
    for content in CONTENTS:
        store.put_bytes(sha256_digest(content), content)
    return store


def test_small_content_goes_into_the_pack_and_reads_back_in_a_reopened_store(tmp_path):
    store = filled(tmp_path)
    assert list(store.blob_dir.iterdir()) == []  # no file of its own for any of them
    again = BlobStore(tmp_path / "work")
    for content in CONTENTS:
        digest = sha256_digest(content)
        assert again.has(digest) and again.size(digest) == len(content) and again.read(digest) == content
        with again.open(digest) as handle:
            assert handle.read() == content


def test_a_torn_tail_is_cut_and_the_records_before_it_kept(tmp_path):
    """A kill -9 mid-append: the last record is cut short. The next append goes where the torn one began,
    so a store opened after it finds that one too."""
    store = filled(tmp_path)
    *kept, (torn, start, end) = records(store.pack_path)
    os.truncate(store.pack_path, end - 10)
    again = BlobStore(tmp_path / "work")
    assert [again.has(digest) for digest, _, _ in kept] == [True, True] and not again.has(torn)
    assert store.pack_path.stat().st_size == start
    later = b"after the cut"
    again.put_bytes(sha256_digest(later), later)
    assert BlobStore(tmp_path / "work").read(sha256_digest(later)) == later


@pytest.mark.parametrize("bad", [1, 2])
def test_a_record_whose_bytes_do_not_match_its_digest_is_dropped(tmp_path, bad):
    """One within the pack is left out (the records after it are still found); a bad last one is cut off."""
    store = filled(tmp_path)
    laid_out = records(store.pack_path)
    digest, start, end = laid_out[bad]
    with open(store.pack_path, "r+b") as pack:
        pack.seek(end - 1)
        pack.write(b"!")
    again = BlobStore(tmp_path / "work")
    assert [again.has(d) for d, _, _ in laid_out] == [i != bad for i in range(len(laid_out))]
    assert store.pack_path.stat().st_size == (start if bad == len(laid_out) - 1 else laid_out[-1][2])


def test_a_failed_append_leaves_the_pack_as_it_was_and_raises_disk_full(tmp_path, monkeypatch):
    store = filled(tmp_path)
    before = store.pack_path.read_bytes()
    real = os.pwrite

    def half_then_full(fd, parts, offset):
        real(fd, b"".join(parts)[:HEADER + 10], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", half_then_full)
    content = b"does not fit " * 50
    with pytest.raises(DiskFull, match="No space left on device"):
        store.put_bytes(sha256_digest(content), content)
    monkeypatch.undo()
    assert store.pack_path.read_bytes() == before and not store.has(sha256_digest(content))
    assert [store.read(sha256_digest(c)) for c in CONTENTS] == CONTENTS
    store.put_bytes(sha256_digest(content), content)  # room again
    assert BlobStore(tmp_path / "work").read(sha256_digest(content)) == content


@pytest.mark.anyio
async def test_a_pull_resumed_after_its_pack_was_torn_completes_with_the_same_digests(tmp_path):
    """Killed mid-append, with a record gone bad besides: the next run downloads again only what was lost."""
    registry = FakeRegistry()
    seed(registry, "lib/app", index(image("app", layers=3), image("app", layers=2, arch="arm64")), "1.0")
    tool = image("tool", layers=2)
    seed(registry, "lib/tool", tool, "2.0")
    work = tmp_path / "work"

    async def run(output):
        images = [Reference.parse("src.test/lib/app:1.0"), Reference.parse("src.test/lib/tool:2.0")]
        request = PullRequest(images=images, output=output, sources=SourceMap(), work_dir=work,
                              http_transport=registry, space_check=False,
                              settings_for=lambda host: RegistrySettings(plain_http=True, retries=0))
        await pull(request, Progress(quiet=True))
        with BundleReader(output) as reader:
            return reader.manifest.images, reader.manifest.blobs

    first = await run(tmp_path / "first.tar.zst")
    # every blob is small: all in the pack, the config resolving fetched (transfer/resolve.py) too
    assert list((work / "blobs" / "sha256").iterdir()) == []
    laid_out = records(work / "blobs.pack")
    blobs = [d for d, _, _ in laid_out if d in registry.blobs]
    bad, torn = blobs[0], laid_out[-1]
    with open(work / "blobs.pack", "r+b") as pack:
        pack.seek(next(end for d, _, end in laid_out if d == bad) - 1)
        pack.write(b"!")
        pack.truncate(torn[2] - 1)
    asked = len(registry.requests)

    assert await run(tmp_path / "second.tar.zst") == first
    again = sorted(line.rsplit("/", 1)[1] for line in registry.requests[asked:] if "/blobs/" in line)
    assert again == sorted({bad, torn[0]} & set(registry.blobs))
    store = BlobStore(work)  # what the second run appended is found in the pack it cut
    assert all(store.has(digest) for digest in first[1])


# -- small blobs come whole into memory ------------------------------------------------------------

SMALL = b"a small layer " * 4000


async def download_small(registry: httpx.AsyncBaseTransport, size: int = len(SMALL)) -> bytes:
    async with RegistryClient("src.test", RegistrySettings(plain_http=True, retries=2), backoff_base=0.001,
                              http_transport=registry) as client:
        return await client.download_small_blob("lib/app", sha256_digest(SMALL), size=size)


class CutOnce(FakeRegistry):
    """Its first answer for a blob ends half way through the body."""

    def __init__(self):
        super().__init__()
        self.cut = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if "/blobs/" not in request.url.path or self.cut:
            return response
        self.cut = True
        body = await response.aread()

        class Cut(httpx.AsyncByteStream):
            async def __aiter__(self):
                yield body[:len(body) // 2]
                raise httpx.ReadError("connection reset")

        return httpx.Response(200, headers=response.headers, stream=Cut())


@pytest.mark.anyio
async def test_a_small_blob_cut_mid_way_is_asked_for_again_from_its_first_byte():
    registry = CutOnce()
    registry.add_blob("lib/app", SMALL)
    assert await download_small(registry) == SMALL
    blob_gets = [line for line in registry.requests if "/blobs/" in line]
    assert len(blob_gets) == 2 and registry.cut


@pytest.mark.anyio
async def test_a_small_blob_past_its_declared_size_or_not_matching_its_digest_is_refused():
    registry = FakeRegistry()
    registry.add_blob("lib/app", SMALL)
    with pytest.raises(IntegrityError, match=f"sent more than the {len(SMALL) - 1} bytes its descriptor declares"):
        await download_small(registry, len(SMALL) - 1)
    registry.blobs[sha256_digest(SMALL)] = SMALL[:-1] + b"!"
    with pytest.raises(IntegrityError, match="the downloaded bytes hash to sha256:"):
        await download_small(registry)


@pytest.mark.anyio
async def test_a_small_blob_whose_registry_keeps_cutting_it_gives_up_after_the_retries():
    class AlwaysCut(CutOnce):
        async def handle_async_request(self, request):
            self.cut = False
            return await super().handle_async_request(request)

    registry = AlwaysCut()
    registry.add_blob("lib/app", SMALL)
    with pytest.raises(RegistryError, match="kept failing mid-download .*; run again$"):
        await download_small(registry)
