"""A kit file whose digest is published goes into the bundle's listing as soon as its size is known: the
bundle writer writes the images while its body still downloads, and takes it when it is in (through the
fake registry for the images; the kit from a loopback stand-in or a fake fetcher)."""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager

import pytest

from mirror.bundle.reader import BundleReader
from mirror.bundle.store import BlobStore
from mirror.errors import ImagesFailed
from mirror.kit.fetcher import KitFetcher
from mirror.kit.items import FILE, KitItem
from mirror.model.oci import sha256_digest
from mirror.model.reference import Reference
from mirror.model.upstream import SourceMap
from mirror.progress import Progress
from mirror.registry.settings import RegistrySettings
from mirror.transfer.pull import PullRequest, pull
from support.fake_registry import FakeRegistry
from support.images import image, seed
from support.kitbed import KitHost

pytestmark = pytest.mark.anyio

KIT_FILE = b"a k3s binary" * 1000
PATIENCE = 10.0  # seconds a held kit body waits for the writer before it gives up waiting (the test then fails)


class WriterWatch(Progress):
    """Sets ``wrote`` once the bundle writer has copied ``enough`` blob bytes."""

    def __init__(self, enough: int):
        super().__init__(quiet=True)
        self.enough, self.written, self.wrote = enough, 0, threading.Event()

    @contextmanager
    def bar(self, total, desc, unit="B"):
        with super().bar(total, desc, unit) as bar:
            if desc != "writing bundle":
                yield bar
                return
            watch = self

            class Counting:
                def update(self, n: int = 1) -> None:
                    watch.written += n
                    if watch.written >= watch.enough:
                        watch.wrote.set()

            yield Counting()


def image_pull(tmp_path, kit: KitItem, fetcher, **options) -> tuple[PullRequest, WriterWatch]:
    """A pull of one image and ``kit``; its watch is set once the writer copied the image's blobs."""
    registry = FakeRegistry()
    app = image("app", layers=3)
    seed(registry, "lib/app", app, "1.0")
    request = PullRequest(images=[Reference.parse("src.test/lib/app:1.0")], output=tmp_path / "b.tar.zst",
                          sources=SourceMap(), settings_for=lambda host: RegistrySettings(plain_http=True, retries=0),
                          http_transport=registry, space_check=False, kit_fetcher=fetcher, kit=[kit], **options)
    return request, WriterWatch(sum(len(data) for data in app.blobs.values()))


class HeldKit:
    """A kit fetcher that tells the file's size, then holds its body until the writer copied the image."""

    def __init__(self) -> None:
        self.watch: WriterWatch | None = None
        self.saw_writer: list[bool] = []

    def download(self, url: str, what: str, store: BlobStore, cap: int, expected: str | None,
                 checked_by: str | None, sized=None) -> tuple[str, int]:
        if sized is not None:  # a fetcher the pull gives no way to describe the file early: it waits below
            sized(len(KIT_FILE))
        self.saw_writer.append(self.watch.wrote.wait(PATIENCE))
        digest = sha256_digest(KIT_FILE)
        store.put_bytes(digest, KIT_FILE)
        return digest, len(KIT_FILE)


async def test_the_writer_writes_the_images_while_a_kit_file_still_downloads(tmp_path):
    fetcher = HeldKit()
    item = KitItem(FILE, "k3s", "v1.0.0", "http://kit.test/k3s", "k3s", hashlib.sha256(KIT_FILE).hexdigest(),
                   "sha256sum-amd64.txt")
    request, watch = image_pull(tmp_path, item, fetcher)
    fetcher.watch = watch
    result = await pull(request, watch)
    assert fetcher.saw_writer == [True]
    assert [r.source for r in result.images] == ["src.test/lib/app:1.0", "docker.io/files/k3s:v1.0.0"]
    with BundleReader(tmp_path / "b.tar.zst") as reader:
        assert sha256_digest(KIT_FILE) in reader.manifest.stored_blobs


@pytest.fixture
def kit_host():
    host = KitHost()
    yield host
    host.stop()


def held_tampered_file(kit_host: KitHost, tmp_path, monkeypatch, **options):
    """A pull whose kit file's body is held until the writer copied the image, then served other than published."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    genuine, tampered = b"a tool\n" * 1000, b"a trojan\n" * 1000
    kit_host.files["/other/tool"] = tampered
    item = KitItem(FILE, "tool", "latest", f"{kit_host.url}/other/tool", "files", hashlib.sha256(genuine).hexdigest(),
                   "--file")
    request, watch = image_pull(tmp_path, item, KitFetcher(), keep_going=options.get("keep_going", False))
    saw_writer: list[bool] = []
    kit_host.on_range = lambda start: saw_writer.append(watch.wrote.wait(PATIENCE))
    return request, watch, saw_writer, tampered


async def test_a_kit_file_tampered_after_the_writer_started_exits_4_and_writes_nothing(kit_host, tmp_path,
                                                                                       monkeypatch):
    request, watch, saw_writer, tampered = held_tampered_file(kit_host, tmp_path, monkeypatch)
    with pytest.raises(ImagesFailed) as failed:
        await pull(request, watch)
    assert saw_writer == [True]  # the bundle was being written, the file in its listing, when the body came
    assert failed.value.exit_code == 4
    assert f"{kit_host.url}/other/tool hashes to" in failed.value.failures["file tool latest"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.tar.zst.work"]  # no bundle, no temp of one
    kept = {p.name for p in (tmp_path / ".b.tar.zst.work" / "blobs" / "sha256").iterdir()}
    assert hashlib.sha256(tampered).hexdigest() not in kept and not [n for n in kept if n.startswith(".kit-")]


async def test_keep_going_writes_the_bundle_again_without_a_kit_file_tampered_after_the_writer_started(
        kit_host, tmp_path, monkeypatch):
    request, watch, saw_writer, _ = held_tampered_file(kit_host, tmp_path, monkeypatch, keep_going=True)
    result = await pull(request, watch)
    assert saw_writer == [True]
    assert result.exit_code == 4 and list(result.failures) == ["file tool latest"]
    with BundleReader(tmp_path / "b.tar.zst") as reader:
        assert [image.source for image in reader.manifest.images] == ["src.test/lib/app:1.0"]
