"""What a pull does at once: the kit downloads beside the images, and connections the images no longer need
help with their last large blob while the kit is still coming (through the fake registry)."""

from __future__ import annotations

import threading

import anyio
import httpx
import pytest

from mirror.bundle.reader import BundleReader
from mirror.bundle.store import BlobStore
from mirror.kit.items import FILE, KitItem
from mirror.model.oci import sha256_digest
from mirror.model.reference import Reference
from mirror.model.upstream import SourceMap
from mirror.progress import Progress
from mirror.registry.settings import RegistrySettings
from mirror.transfer.pull import PullRequest, pull
from support.fake_registry import LARGE_BLOB, FakeRegistry, Held
from support.images import image, seed

pytestmark = pytest.mark.anyio

KIT_FILE = b"a k3s binary" * 1000
PATIENCE = 10.0  # seconds the kit waits for a helper before it gives up waiting (the test then fails)


class SlowKit:
    """A kit fetcher whose one file comes only once a helper has asked for part of the image's large blob."""

    def __init__(self, helped: threading.Event):
        self.helped, self.saw_help = helped, []

    def download(self, url: str, what: str, store: BlobStore, cap: int, expected: str | None,
                 checked_by: str | None, sized=None) -> tuple[str, int]:
        self.saw_help.append(self.helped.wait(PATIENCE))
        digest = sha256_digest(KIT_FILE)
        store.put_bytes(digest, KIT_FILE)
        return digest, len(KIT_FILE)


async def test_idle_connections_help_with_the_last_large_blob_while_the_kit_still_downloads(tmp_path):
    large_digest = sha256_digest(LARGE_BLOB)
    held, helped = Held(LARGE_BLOB), threading.Event()

    def fault(request: httpx.Request):
        if not request.url.path.endswith(large_digest):
            return None
        if "range" not in request.headers:
            return httpx.Response(200, headers={"Content-Length": str(len(LARGE_BLOB))}, stream=held)
        helped.set()  # a helper's range: the registry answers it, and the first stream goes on
        held.go.set()
        return None

    registry = FakeRegistry(fault=fault)
    seed(registry, "lib/app", image("app", shared=[LARGE_BLOB]), "1.0")
    kit = SlowKit(helped)
    request = PullRequest(images=[Reference.parse("src.test/lib/app:1.0")], output=tmp_path / "b.tar.zst",
                          sources=SourceMap(), settings_for=lambda host: RegistrySettings(plain_http=True, retries=0),
                          http_transport=registry, space_check=False, kit_fetcher=kit,
                          kit=[KitItem(FILE, "k3s", "v1.0.0", "http://kit.test/k3s", "k3s")])
    result = await pull(request, Progress(quiet=True))
    assert kit.saw_help == [True]
    assert [r.source for r in result.images] == ["src.test/lib/app:1.0", "docker.io/files/k3s:v1.0.0"]
    assert large_digest in BundleReader(tmp_path / "b.tar.zst").manifest.blobs


class HeldSurvey(FakeRegistry):
    """A registry whose manifest HEADs (the rate limit survey's) wait until the kit download began."""

    def __init__(self, kit_began: threading.Event):
        super().__init__()
        self.kit_began, self.kit_first = kit_began, []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            self.kit_first.append(await anyio.to_thread.run_sync(self.kit_began.wait, PATIENCE))
        return await super().handle_async_request(request)


class NotedKit:
    def __init__(self, began: threading.Event):
        self.began = began

    def download(self, url: str, what: str, store: BlobStore, cap: int, expected: str | None,
                 checked_by: str | None, sized=None) -> tuple[str, int]:
        self.began.set()
        digest = sha256_digest(KIT_FILE)
        store.put_bytes(digest, KIT_FILE)
        return digest, len(KIT_FILE)


async def test_the_kit_downloads_while_the_sources_rate_limits_are_read(tmp_path):
    """The survey is round trips before any image can start: the link would idle through them."""
    began = threading.Event()
    registry = HeldSurvey(began)
    seed(registry, "lib/app", image("app"), "1.0")
    request = PullRequest(images=[Reference.parse("src.test/lib/app:1.0")], output=tmp_path / "b.tar.zst",
                          sources=SourceMap(), settings_for=lambda host: RegistrySettings(plain_http=True, retries=0),
                          http_transport=registry, space_check=False, kit_fetcher=NotedKit(began),
                          kit=[KitItem(FILE, "k3s", "v1.0.0", "http://kit.test/k3s", "k3s")])
    await pull(request, Progress(quiet=True))
    assert registry.kit_first and all(registry.kit_first)
