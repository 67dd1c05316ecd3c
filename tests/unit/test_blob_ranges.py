"""A large blob's last bytes as ranges on idle connections: resumable pieces, hashed in order, and sources
that ignore or lie about Range never corrupt the blob. Driven through the fake registry, step by step."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest

from mirror.errors import IntegrityError
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.unfinished import Unfinished
from mirror.registry.pieces import Pieces
from mirror.registry.settings import RegistrySettings
from support.fake_registry import LARGE_BLOB, MIB, FakeRegistry, Held, answer, digest_of

pytestmark = pytest.mark.anyio



def source(ranges: str = "honest") -> tuple[FakeRegistry, Held, list]:
    """A registry whose first GET of the blob is held after a MiB; ``ranges``: how it answers a Range."""
    held, asked = Held(LARGE_BLOB), []

    def fault(request: httpx.Request):
        if "/blobs/" not in request.url.path:
            return None
        wanted = request.headers.get("range")
        asked.append(wanted)
        if wanted is None:
            return httpx.Response(200, headers={"Content-Length": str(len(LARGE_BLOB))}, stream=held)
        start = int(wanted.split("=")[1].split("-")[0])
        if ranges == "ignored":  # the whole body, as if no Range was asked
            return answer(200, LARGE_BLOB)
        if ranges == "elsewhere":  # a 206, but of other bytes than asked, and it says so
            return answer(206, LARGE_BLOB[:len(LARGE_BLOB) - start],
                          {"Content-Range": f"bytes 0-{len(LARGE_BLOB) - start - 1}/{len(LARGE_BLOB)}"})
        if ranges == "lying":  # a 206 claiming the bytes asked for, holding others
            return answer(206, LARGE_BLOB[:len(LARGE_BLOB) - start],
                          {"Content-Range": f"bytes {start}-{len(LARGE_BLOB) - 1}/{len(LARGE_BLOB)}"})
        return None  # the registry's own answer

    registry = FakeRegistry(fault=fault)
    registry.add_blob("lib/app", LARGE_BLOB)
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
            await c.download_blob("lib/app", digest, partial, size=len(LARGE_BLOB), unfinished=unfinished)
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
    assert partial.read_bytes() == LARGE_BLOB
    middle = MIB + (len(LARGE_BLOB) - MIB) // 2
    assert asked == [None, f"bytes={middle}-"]  # the first stream stopped where the helper's range began
    assert not (tmp_path / "blob.partial.pieces").exists()


async def test_a_source_that_ignores_range_gets_one_stream_and_the_blob_is_intact(tmp_path):
    registry, held, asked = source("ignored")
    partial = tmp_path / "blob.partial"
    assert await download_with_a_helper(registry, held, partial) is None
    assert partial.read_bytes() == LARGE_BLOB
    assert asked[-1] is None  # after the refused range, the whole blob as one stream
    assert not (tmp_path / "blob.partial.pieces").exists()


async def test_a_range_answered_from_elsewhere_falls_back_to_one_stream(tmp_path):
    registry, held, _ = source("elsewhere")
    partial = tmp_path / "blob.partial"
    assert await download_with_a_helper(registry, held, partial) is None
    assert partial.read_bytes() == LARGE_BLOB


async def test_a_range_lying_about_its_bytes_fails_the_blob_and_leaves_nothing(tmp_path):
    registry, held, _ = source("lying")
    partial = tmp_path / "blob.partial"
    error = await download_with_a_helper(registry, held, partial)
    assert "hash to" in str(error)
    assert not partial.exists() and not (tmp_path / "blob.partial.pieces").exists()


async def test_pieces_left_by_a_run_that_stopped_are_resumed_each_from_its_end(tmp_path):
    registry, asked = FakeRegistry(fault=lambda r: asked.append(r.headers.get("range"))), []
    digest = registry.add_blob("lib/app", LARGE_BLOB)
    partial, cut = tmp_path / "blob.partial", 5 * MIB
    partial.write_bytes(LARGE_BLOB[:MIB])
    (tmp_path / "blob.partial.pieces").mkdir()
    (tmp_path / "blob.partial.pieces" / str(cut)).write_bytes(LARGE_BLOB[cut:cut + MIB])
    async with client(registry) as c:
        await c.download_blob("lib/app", digest, partial, size=len(LARGE_BLOB))
    assert sorted(asked) == [f"bytes={MIB}-{cut - 1}", f"bytes={cut + MIB}-"]
    assert partial.read_bytes() == LARGE_BLOB
    assert not (tmp_path / "blob.partial.pieces").exists()


async def test_a_download_waiting_to_start_lets_another_request_for_a_blob_go_first(tmp_path):
    """Downloads queue in line outside the registry's window of transfers: a request that needs a blob
    to go on (an image's config, while the pull's downloads wait) takes the next free place."""
    registry = FakeRegistry()
    held, waiting, asked = (registry.add_blob("lib/app", bytes([i]) * 1000) for i in range(3))
    other = registry.add_blob("lib/app", b"other" * 200)
    unfinished = Unfinished()
    settings = RegistrySettings(plain_http=True, retries=1, max_connections=1)  # two transfers at most

    async with RegistryClient("registry.test", settings, auth_files=AuthFiles([]), backoff_base=0.001,
                              http_transport=registry) as c, anyio.create_task_group() as group:
        places = contextlib.AsyncExitStack()
        for digest in (held, other):  # both places taken: the window has grown to its cap of two
            await places.enter_async_context(c.open_blob("lib/app", digest))
        group.start_soon(lambda: c.download_blob("lib/app", waiting, tmp_path / "waiting.partial",
                                                 size=1000, unfinished=unfinished))
        await anyio.wait_all_tasks_blocked()

        async def read() -> None:
            async with c.open_blob("lib/app", asked) as chunks:
                async for _ in chunks:
                    pass
        group.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        await places.aclose()
    blobs = [line.rsplit("/", 1)[1] for line in registry.requests if "/blobs/" in line]
    assert blobs == [held, other, asked, waiting]
    assert (tmp_path / "waiting.partial").read_bytes() == bytes([1]) * 1000


async def test_an_idle_connection_does_not_split_a_blob_while_a_download_waits_to_start(tmp_path):
    large, small = Held(LARGE_BLOB), Held(bytes(2 * MIB))  # each sends a MiB, then waits for its go

    def fault(request: httpx.Request):
        if request.url.path.endswith(digest_of(LARGE_BLOB)) and "range" not in request.headers:
            return httpx.Response(200, headers={"Content-Length": str(len(LARGE_BLOB))}, stream=large)
        if request.url.path.endswith(digest_of(small.data)):
            return httpx.Response(200, headers={"Content-Length": str(len(small.data))}, stream=small)
        return None

    registry = FakeRegistry(fault=fault)
    digests = [registry.add_blob("lib/app", data) for data in (LARGE_BLOB, small.data, b"waiting" * 100)]
    unfinished, helped = Unfinished(), []
    settings = RegistrySettings(plain_http=True, retries=1, max_connections=1)  # two transfers at most

    async def download(digest: str, size: int) -> None:
        await c.download_blob("lib/app", digest, tmp_path / digest, size=size, unfinished=unfinished)

    async def help() -> None:
        helped.append(await unfinished.help())

    async with RegistryClient("registry.test", settings, auth_files=AuthFiles([]), backoff_base=0.001,
                              http_transport=registry) as c, anyio.create_task_group() as group:
        group.start_soon(download, digests[0], len(LARGE_BLOB))
        await anyio.wait_all_tasks_blocked()  # its answer came: the window has grown to its cap of two
        group.start_soon(download, digests[1], len(small.data))
        await anyio.wait_all_tasks_blocked()
        group.start_soon(help)  # no place free: it waits for one
        await anyio.wait_all_tasks_blocked()
        group.start_soon(download, digests[2], 700)  # in line
        await anyio.wait_all_tasks_blocked()
        small.go.set()  # a place comes free: the download in line takes it, then the helper the next
        await anyio.wait_all_tasks_blocked()
        large.go.set()
    blobs = [line.rsplit("/", 1)[1] for line in registry.requests if "/blobs/" in line]
    assert blobs == [digests[0], digests[1], digests[2], digests[0]]  # the last: the helper's range
    assert helped == [True]
    assert (tmp_path / digests[0]).read_bytes() == LARGE_BLOB


async def test_of_the_downloads_waiting_to_start_the_largest_goes_first(tmp_path):
    """A large blob asked for late would otherwise arrive last, its join and its copy into the bundle
    after the link went quiet."""
    registry = FakeRegistry()
    held = [registry.add_blob("lib/app", bytes([i]) * 100) for i in range(2)]
    sizes = {"small": 1000, "large": 3000, "medium": 2000}
    waiting = {name: registry.add_blob("lib/app", name.encode() * size) for name, size in sizes.items()}
    unfinished = Unfinished()
    settings = RegistrySettings(plain_http=True, retries=1, max_connections=1)  # two transfers at most

    async with RegistryClient("registry.test", settings, auth_files=AuthFiles([]), backoff_base=0.001,
                              http_transport=registry) as c, anyio.create_task_group() as group:
        places = contextlib.AsyncExitStack()
        for digest in held:  # both places taken: the window has grown to its cap of two
            await places.enter_async_context(c.open_blob("lib/app", digest))
        for name, size in sizes.items():  # in line, in this order
            group.start_soon(lambda d=waiting[name], s=size * len(name): c.download_blob(
                "lib/app", d, tmp_path / d, size=s, unfinished=unfinished))
            await anyio.wait_all_tasks_blocked()
        await places.aclose()
    blobs = [line.rsplit("/", 1)[1] for line in registry.requests if "/blobs/" in line]
    assert blobs == [*held, waiting["large"], waiting["medium"], waiting["small"]]


async def test_no_more_downloads_are_in_progress_at_once_than_the_line_allows(tmp_path):
    held = Held(LARGE_BLOB)  # the large blob's body waits after its first MiB

    def fault(request: httpx.Request):
        if request.url.path.endswith(digest_of(LARGE_BLOB)):
            return httpx.Response(200, headers={"Content-Length": str(len(LARGE_BLOB))}, stream=held)
        return None

    registry = FakeRegistry(fault=fault)
    large, small = registry.add_blob("lib/app", LARGE_BLOB), registry.add_blob("lib/app", b"small" * 200)
    unfinished = Unfinished(at_once=1)  # whatever room the registry's window has

    async with client(registry) as c, anyio.create_task_group() as group:
        group.start_soon(lambda: c.download_blob("lib/app", large, tmp_path / "large", size=len(LARGE_BLOB),
                                                 unfinished=unfinished))
        await anyio.wait_all_tasks_blocked()
        group.start_soon(lambda: c.download_blob("lib/app", small, tmp_path / "small", size=1000,
                                                 unfinished=unfinished))
        await anyio.wait_all_tasks_blocked()
        assert [line.rsplit("/", 1)[1] for line in registry.requests if "/blobs/" in line] == [large]
        held.go.set()
    assert (tmp_path / "small").read_bytes() == b"small" * 200 and (tmp_path / "large").read_bytes() == LARGE_BLOB


def test_a_range_with_a_few_mib_left_is_split_for_an_idle_connection(tmp_path):
    """At the end of a pull a range with 3 MiB left takes 0.3 s on a connection capped at 10 MB/s while
    the others sit idle; halved, each half is done in about half that, a round trip later."""
    pieces = Pieces.resume(tmp_path / "blob.partial", 3 * MIB)
    later = pieces.split()
    assert later is not None and (later.start, later.end) == (3 * MIB // 2, 3 * MIB)
    assert pieces.pieces[0].end == 3 * MIB // 2
