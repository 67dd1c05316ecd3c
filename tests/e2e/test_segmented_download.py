"""Large blobs as parallel ranges: every byte verified, resumable per range, one stream where ranges are refused."""

from __future__ import annotations

import pytest

from mirror.errors import IntegrityError
from mirror.registry.download import SEGMENTED_MIN
from support.registry_client import blob, client

pytestmark = pytest.mark.anyio
SIZE = SEGMENTED_MIN + 5_000_000

async def test_a_large_blob_comes_as_parallel_ranges_joined_in_order(proxy, tmp_path):
    data, digest = blob(SIZE, seed=3)
    partial = tmp_path / "blob.partial"
    seen: list[int] = []
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        await c.download_blob("lib/app", digest, partial, size=len(data), segments=4, progress=seen.append)
    assert partial.read_bytes() == data and sum(seen) == len(data)
    gets = proxy.requests("GET", "/blobs/")
    assert len(gets) == 4 and all(g.status == 206 for g in gets)
    assert proxy.max_in_flight >= 2  # the ranges were in flight together
    assert not list(tmp_path.glob("*.pieces"))


async def test_ranges_resume_each_from_its_own_file(proxy, tmp_path):
    data, digest = blob(SIZE, seed=5)
    partial = tmp_path / "blob.partial"
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        proxy.drop("/blobs/sha256:", after=3_000_000, times=2)  # two ranges cut mid-way
        await c.download_blob("lib/app", digest, partial, size=len(data), segments=4)
    assert partial.read_bytes() == data
    gets = proxy.requests("GET", "/blobs/")
    assert len(gets) == 6  # four ranges, two of them resumed once
    resumed = [g.headers["range"] for g in gets[4:]]
    assert all(int(r.split("=")[1].split("-")[0]) % (1 << 20) == 3_000_000 % (1 << 20) for r in resumed), resumed


async def test_a_registry_without_ranges_gets_one_stream(proxy, tmp_path):
    data, digest = blob(SIZE, seed=7)
    partial = tmp_path / "blob.partial"
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        proxy.strip("/blobs/sha256:", "Range", times=None)
        await c.download_blob("lib/app", digest, partial, size=len(data), segments=4)
    assert partial.read_bytes() == data
    assert not list(tmp_path.glob("*.pieces"))


async def test_a_corrupt_range_fails_the_blob_and_leaves_nothing(proxy, tmp_path):
    data, digest = blob(SIZE, seed=9)
    partial = tmp_path / "blob.partial"
    async with client(proxy.host) as c:
        await c.upload_blob("lib/app", digest, len(data), data)
        proxy.corrupt("/blobs/sha256:")
        with pytest.raises(IntegrityError, match="hash to"):
            await c.download_blob("lib/app", digest, partial, size=len(data), segments=4)
    assert not partial.exists() and not list(tmp_path.glob("*.pieces"))
