"""A large blob's last bytes as ranges on idle connections: resumable pieces, hashed in order, and sources
that ignore or lie about Range never corrupt the blob. Driven through the fake registry, step by step."""

from __future__ import annotations

import anyio
import httpx
import pytest

from mirror.errors import IntegrityError
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.download import Unfinished
from mirror.registry.settings import RegistrySettings
from support.fake_registry import FakeRegistry, answer

pytestmark = pytest.mark.anyio

MIB = 1 << 20
DATA = bytes(range(251)) * (9 * MIB // 251)  # ~9 MiB: a range of 4 MiB or more left is worth splitting


class Held(httpx.AsyncByteStream):
    """A body that sends its first MiB, then waits until ``go`` is set to send the rest."""

    def __init__(self, data: bytes):
        self.data, self.go = data, anyio.Event()

    async def __aiter__(self):
        yield self.data[:MIB]
        await self.go.wait()
        for start in range(MIB, len(self.data), MIB):
            yield self.data[start:start + MIB]


def source(ranges: str = "honest") -> tuple[FakeRegistry, Held, list]:
    """A registry whose first GET of the blob is held after a MiB; ``ranges``: how it answers a Range."""
    held, asked = Held(DATA), []

    def fault(request: httpx.Request):
        if "/blobs/" not in request.url.path:
            return None
        wanted = request.headers.get("range")
        asked.append(wanted)
        if wanted is None:
            return httpx.Response(200, headers={"Content-Length": str(len(DATA))}, stream=held)
        start = int(wanted.split("=")[1].split("-")[0])
        if ranges == "ignored":  # the whole body, as if no Range was asked
            return answer(200, DATA)
        if ranges == "elsewhere":  # a 206, but of other bytes than asked, and it says so
            return answer(206, DATA[:len(DATA) - start], {"Content-Range": f"bytes 0-{len(DATA) - start - 1}/{len(DATA)}"})
        if ranges == "lying":  # a 206 claiming the bytes asked for, holding others
            return answer(206, DATA[:len(DATA) - start],
                          {"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"})
        return None  # the registry's own answer

    registry = FakeRegistry(fault=fault)
    registry.add_blob("lib/app", DATA)
    return registry, held, asked


def client(registry: FakeRegistry) -> RegistryClient:
    return RegistryClient("registry.test", RegistrySettings(plain_http=True, retries=1), auth_files=AuthFiles([]),
                          backoff_base=0.001, http_transport=registry)


async def download_with_a_helper(registry: FakeRegistry, held: Held, partial) -> BaseException | None:
    """The blob downloads on one connection; once its first MiB is in, an idle connection helps; then the
    first connection goes on. The download's error, if any."""
    digest = next(iter(registry.blobs))
    unfinished, failed = Unfinished(), []

    async def download(c: RegistryClient) -> None:
        try:
            await c.download_blob("lib/app", digest, partial, size=len(DATA), unfinished=unfinished)
        except IntegrityError as exc:
            failed.append(exc)

    async with client(registry) as c, anyio.create_task_group() as group:
        group.start_soon(download, c)
        await anyio.wait_all_tasks_blocked()
        assert await unfinished.help()
        held.go.set()
    return failed[0] if failed else None


async def test_an_idle_connection_takes_over_half_of_what_a_large_blob_has_left(tmp_path):
    registry, held, asked = source()
    partial = tmp_path / "blob.partial"
    assert await download_with_a_helper(registry, held, partial) is None
    assert partial.read_bytes() == DATA
    middle = MIB + (len(DATA) - MIB) // 2
    assert asked == [None, f"bytes={middle}-"]  # the first stream stopped where the helper's range began
    assert not (tmp_path / "blob.partial.pieces").exists()


async def test_a_source_that_ignores_range_gets_one_stream_and_the_blob_is_intact(tmp_path):
    registry, held, asked = source("ignored")
    partial = tmp_path / "blob.partial"
    assert await download_with_a_helper(registry, held, partial) is None
    assert partial.read_bytes() == DATA
    assert asked[-1] is None  # after the refused range, the whole blob as one stream
    assert not (tmp_path / "blob.partial.pieces").exists()


async def test_a_range_answered_from_elsewhere_falls_back_to_one_stream(tmp_path):
    registry, held, _ = source("elsewhere")
    partial = tmp_path / "blob.partial"
    assert await download_with_a_helper(registry, held, partial) is None
    assert partial.read_bytes() == DATA


async def test_a_range_lying_about_its_bytes_fails_the_blob_and_leaves_nothing(tmp_path):
    registry, held, _ = source("lying")
    partial = tmp_path / "blob.partial"
    error = await download_with_a_helper(registry, held, partial)
    assert "hash to" in str(error)
    assert not partial.exists() and not (tmp_path / "blob.partial.pieces").exists()


async def test_pieces_left_by_a_run_that_stopped_are_resumed_each_from_its_end(tmp_path):
    registry, asked = FakeRegistry(fault=lambda r: asked.append(r.headers.get("range"))), []
    digest = registry.add_blob("lib/app", DATA)
    partial, cut = tmp_path / "blob.partial", 5 * MIB
    partial.write_bytes(DATA[:MIB])
    (tmp_path / "blob.partial.pieces").mkdir()
    (tmp_path / "blob.partial.pieces" / str(cut)).write_bytes(DATA[cut:cut + MIB])
    async with client(registry) as c:
        await c.download_blob("lib/app", digest, partial, size=len(DATA))
    assert sorted(asked) == [f"bytes={MIB}-{cut - 1}", f"bytes={cut + MIB}-"]
    assert partial.read_bytes() == DATA
    assert not (tmp_path / "blob.partial.pieces").exists()
