"""``mirror push``: stream a bundle into a registry in one pass, never unpacked.

The plan comes from ``mirror-bundle.json`` (the bundle's first entry): which
repository each image goes to and which blobs and manifests it needs. Before
reading any content the registry is asked what it already has; blobs present
in one repository are mounted into the others. Then the tar is read once:

- a blob still missing is re-hashed while it is spooled (memory for small
  ones, a temp file otherwise, all within a byte window so disk and memory
  stay bounded) and uploaded by a worker while reading goes on; a temp
  file's upload starts with its first bytes and follows the writing; one
  larger than the window is streamed straight from the bundle;
- a manifest is pushed by digest as soon as everything it references is
  in its repository;
- tags go last, and only for images whose every blob and manifest made it.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import anyio.from_thread
import anyio.to_thread

from .bundle.format import BundleManifest, ImageRecord
from .bundle.reader import BundleEntry, BundleReader
from .errors import ExitCode, IntegrityError, MirrorError, RegistryError, UsageError, worst_exit_code
from .layout import target_repository
from .oci import Manifest
from .progress import Progress
from .reference import HOST_PATTERN, REPOSITORY_PATTERN, Reference
from .registry.client import CHUNK_SIZE as CHUNK, BlobSource, RegistryClient
from .registry.settings import RegistrySettings

MIB = 1 << 20
IN_MEMORY_LIMIT = 1 * MIB  # blobs up to this size are spooled in memory ...
MEMORY_BUDGET = 64 * MIB  # ... while the in-memory spool stays under this


@dataclass(frozen=True)
class Target:
    host: str
    prefix: str = ""
    settings: RegistrySettings = field(default_factory=RegistrySettings)

    @classmethod
    def parse(cls, text: str, settings: RegistrySettings) -> "Target":
        """``HOST[:PORT][/PREFIX]``; the prefix must be valid in a repository name (lowercase)."""
        host, _, prefix = text.removeprefix("https://").removeprefix("http://").partition("/")
        prefix = prefix.strip("/")
        if not HOST_PATTERN.match(host) or (prefix and not REPOSITORY_PATTERN.match(prefix)):
            raise UsageError(f"--registry {text!r}: expected HOST[:PORT][/PREFIX] with a lowercase prefix")
        return cls(host, prefix, settings)


@dataclass
class PushRequest:
    bundle: Path
    target: Target
    jobs: int = 8
    window: int = 512 * MIB  # bytes of spool (memory + temp disk) at most
    spool_dir: Path | None = None
    dry_run: bool = False


@dataclass
class ImagePlan:
    record: ImageRecord
    repository: str
    tag: str | None
    manifests: set[str]  # the top manifest and its children
    blobs: set[str]  # configs and layers

    @classmethod
    def of(cls, record: ImageRecord, prefix: str) -> "ImagePlan":
        ref = Reference.parse(record.source)
        manifests = {record.digest, *record.manifests}
        return cls(record, target_repository(ref, prefix), ref.tag, manifests, set(record.blobs) - manifests)

    @property
    def target(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.record.digest}"


@dataclass
class PushResult:
    registry: str
    images: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    mounted_blobs: int = 0
    present_blobs: int = 0
    manifests_pushed: int = 0
    tags_pushed: int = 0
    exit_code: ExitCode = ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {key: (int(value) if key == "exit_code" else value) for key, value in self.__dict__.items()}


class ByteWindow:
    """A weighted semaphore over bytes: spooling waits until there is room."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._condition = anyio.Condition()

    async def acquire(self, amount: int) -> None:
        async with self._condition:
            while self.used and self.used + amount > self.capacity:
                await self._condition.wait()
            self.used += amount

    async def release(self, amount: int) -> None:
        async with self._condition:
            self.used -= amount
            self._condition.notify_all()


@dataclass
class _Outcome:
    """Whether one digest is present in one repository; set once."""

    done: anyio.Event = field(default_factory=anyio.Event)
    error: MirrorError | None = None

    def succeed(self) -> None:
        self.done.set()

    def fail(self, error: MirrorError) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    @property
    def ok(self) -> bool:
        return self.done.is_set() and self.error is None


class _FileSpool:
    """A blob's temp file, uploaded while the reader thread is still writing it.

    The reader thread creates it, then calls ``write`` and ``finish``. Every
    upload attempt reads the file from its start and waits for bytes not
    written yet, so a retry still sends the whole blob; if reading the blob
    failed (a corrupt blob), the attempt raises that error.
    """

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        self.abandoned = False  # the uploads are over: the reader can stop writing
        self._lock = threading.Lock()
        self._written = 0
        self._error: MirrorError | None = None
        self._waiter: anyio.Event | None = None
        self._handle = open(path, "wb")  # exists before any upload opens it

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self._handle.flush()
        self._advance(len(chunk))

    def finish(self, error: MirrorError | None = None) -> None:
        self._handle.close()
        if error is not None:
            self._advance(error=error)

    def _advance(self, written: int = 0, error: MirrorError | None = None) -> None:
        with self._lock:
            self._written += written
            self._error = self._error or error
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            anyio.from_thread.run_sync(waiter.set)

    async def _available(self, offset: int) -> int:
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                if self._written > offset or self._written == self.size:
                    return self._written
                self._waiter = waiter = self._waiter or anyio.Event()
            await waiter.wait()

    async def _chunks(self) -> AsyncIterator[bytes]:
        with open(self.path, "rb") as handle:
            offset = 0
            while offset < self.size:
                available = await self._available(offset)
                chunk = handle.read(min(CHUNK, available - offset))
                offset += len(chunk)
                yield chunk

    @property
    def source(self) -> BlobSource:
        return self._chunks

    def discard(self) -> None:
        self.abandoned = True
        self.path.unlink(missing_ok=True)


def plan_push(manifest: BundleManifest, prefix: str) -> list[ImagePlan]:
    return [ImagePlan.of(record, prefix) for record in manifest.images]


class _Pusher:
    def __init__(self, request: PushRequest, client: RegistryClient, reader: BundleReader,
                 plans: list[ImagePlan], progress: Progress):
        self.request, self.client, self.reader, self.plans = request, client, reader, plans
        self.progress = progress
        self.result = PushResult(registry=request.target.host)
        self.limiter = anyio.CapacityLimiter(request.jobs)
        self.window = ByteWindow(request.window)
        self.memory = ByteWindow(MEMORY_BUDGET)
        self.outcomes: dict[tuple[str, str], _Outcome] = defaultdict(_Outcome)
        self.blob_repos: dict[str, list[str]] = defaultdict(list)
        self.manifest_repos: dict[str, list[str]] = defaultdict(list)
        self.manifests: dict[str, Manifest] = {}
        self.fatal: MirrorError | None = None
        for plan in plans:
            for digest in plan.blobs:
                if plan.repository not in self.blob_repos[digest]:
                    self.blob_repos[digest].append(plan.repository)
            for digest in plan.manifests:
                if plan.repository not in self.manifest_repos[digest]:
                    self.manifest_repos[digest].append(plan.repository)
        self.to_upload: set[str] = set()  # blobs whose content the stream must provide
        self.uploading: set[str] = set()
        self.errors: list[MirrorError] = []
        self.spool_dir = Path()
        self.tg: Any = None
        self.bar: Any = None

    # -- phase 1: what does the registry already have? -----------------------

    async def survey(self) -> None:
        async def blob(digest: str, repository: str) -> None:
            async with self.limiter:
                if await self.client.blob_size(repository, digest) is not None:
                    self.outcomes[digest, repository].succeed()

        async def manifest(digest: str, repository: str) -> None:
            async with self.limiter:
                if await self.client.head_manifest(repository, digest) is not None:
                    self.outcomes[digest, repository].succeed()

        async with anyio.create_task_group() as tg:
            for digest, repositories in self.blob_repos.items():
                for repository in repositories:
                    tg.start_soon(blob, digest, repository)
            for digest, repositories in self.manifest_repos.items():
                for repository in repositories:
                    tg.start_soon(manifest, digest, repository)
        self.result.present_blobs = sum(
            1 for digest, repos in self.blob_repos.items() if all(self.outcomes[digest, r].ok for r in repos)
        )

    async def mount_known(self) -> None:
        """Blobs present in some repository: mount them where missing, no bytes read."""

        async def mount(digest: str, repository: str, source: str) -> None:
            async with self.limiter:
                if await self.client.mount_blob(repository, digest, source):
                    self.outcomes[digest, repository].succeed()
                    self.result.mounted_blobs += 1

        async with anyio.create_task_group() as tg:
            for digest, repositories in self.blob_repos.items():
                have = [r for r in repositories if self.outcomes[digest, r].ok]
                for repository in repositories:
                    if have and not self.outcomes[digest, repository].ok:
                        tg.start_soon(mount, digest, repository, have[0])
        self.to_upload = {
            digest for digest, repos in self.blob_repos.items()
            if not all(self.outcomes[digest, r].ok for r in repos)
        }

    def _omitted_missing(self) -> None:
        omitted = set(self.reader.manifest.omitted)
        for digest in self.to_upload & omitted:
            error = MirrorError(
                f"blob {digest} is left out of this delta bundle (its base is "
                f"{self.reader.manifest.base}) but {self.request.target.host} does not have it: "
                "push the base bundle first"
            )
            for repository in self.blob_repos[digest]:
                self.outcomes[digest, repository].fail(error)
        self.to_upload -= omitted

    # -- phase 2: one pass over the bundle ------------------------------------

    async def stream(self, bar: Any) -> None:
        async with anyio.create_task_group() as tg:
            self.tg = tg
            self.bar = bar
            try:
                await anyio.to_thread.run_sync(self._read_all)
            except MirrorError as exc:
                self.fatal = exc
            self._fail_unreached()

    def _read_all(self) -> None:
        """Runs in a worker thread: the tar is read sequentially, work goes to the loop."""
        for entry in self.reader.entries():
            if self.fatal is not None:
                return  # the registry is gone: reading on would only queue more failures
            digest = entry.digest
            if digest is None:
                continue
            if digest in self.manifest_repos:
                manifest = Manifest.from_bytes(entry.read(), None)
                anyio.from_thread.run_sync(self._manifest_arrived, manifest)
            elif digest in self.to_upload:
                self._take_blob(entry)

    def _take_blob(self, entry: BundleEntry) -> None:
        digest, size = entry.digest, entry.size
        assert digest is not None
        if size > self.request.window:
            self._stream_through(entry)
            return
        anyio.from_thread.run(self.window.acquire, size)
        if size <= IN_MEMORY_LIMIT and self.memory.used + size <= MEMORY_BUDGET:
            self._spool_in_memory(entry)
        else:
            self._spool_to_file(entry)

    def _spool_in_memory(self, entry: BundleEntry) -> None:
        """Copy a small blob out of the stream, verified, then hand it to an upload."""
        digest, size = entry.digest, entry.size
        assert digest is not None
        anyio.from_thread.run(self.memory.acquire, size)
        try:
            data = b"".join(entry.chunks())
        except MirrorError as exc:
            anyio.from_thread.run(self.memory.release, size)
            anyio.from_thread.run(self.window.release, size)
            anyio.from_thread.run_sync(self._blob_failed, digest, exc)
            return
        self.uploading.add(digest)
        anyio.from_thread.run_sync(self.tg.start_soon, self._upload, digest, data)

    def _spool_to_file(self, entry: BundleEntry) -> None:
        """Copy a blob into a temp file, verifying its digest as it goes; its upload starts at once."""
        digest = entry.digest
        assert digest is not None
        try:
            spool = _FileSpool(self.spool_dir / digest.split(":", 1)[1], entry.size)
        except OSError as exc:
            anyio.from_thread.run(self.window.release, entry.size)
            raise self._spool_error(exc) from None
        self.uploading.add(digest)
        anyio.from_thread.run_sync(self.tg.start_soon, self._upload, digest, spool)
        error: MirrorError | None = None
        try:
            for chunk in entry.chunks():
                if spool.abandoned:
                    break  # the upload is over (it failed): the reader skips the rest
                spool.write(chunk)
        except MirrorError as exc:
            error = exc
        except OSError as exc:
            error = self._spool_error(exc)
            raise error from None
        except BaseException:
            error = MirrorError(f"blob {digest}: reading the bundle was interrupted")
            raise
        finally:
            spool.finish(error)

    def _spool_error(self, exc: OSError) -> MirrorError:
        return MirrorError(f"cannot write the push spool in {self.spool_dir} ({exc}); free some space "
                           "there, or pass --spool-dir elsewhere or a smaller --window")

    def _stream_through(self, entry: BundleEntry) -> None:
        """A blob larger than the window: upload straight from the tar, one attempt."""
        digest = entry.digest
        assert digest is not None
        send, receive = anyio.create_memory_object_stream[Any](4)
        self.uploading.add(digest)
        anyio.from_thread.run_sync(self.tg.start_soon, self._upload_streamed, digest, entry.size, receive)
        with send:
            try:
                for chunk in entry.chunks():
                    anyio.from_thread.run(send.send, chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the upload gave up; the reader skips the rest of the entry
            except MirrorError as exc:
                try:
                    anyio.from_thread.run(send.send, exc)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass

    # -- uploads and manifests (event loop) -----------------------------------

    async def _upload(self, digest: str, spool: bytes | _FileSpool) -> None:
        """Upload a spooled blob, then give its room in the window (and memory) back."""
        size, source = (len(spool), spool) if isinstance(spool, bytes) else (spool.size, spool.source)
        try:
            await self._place_blob(digest, size, source)
        finally:
            if isinstance(spool, bytes):
                await self.memory.release(size)
            else:
                spool.discard()
            await self.window.release(size)

    async def _upload_streamed(self, digest: str, size: int, receive: Any) -> None:
        used = False

        def source() -> AsyncIterator[bytes]:
            nonlocal used
            if used:
                raise MirrorError(f"blob {digest} is larger than the spool window and cannot be "
                                  "retried in this pass; re-run push (or raise --window)")
            used = True
            return _chunks_from(receive)

        with receive:
            await self._place_blob(digest, size, source)

    async def _place_blob(self, digest: str, size: int, source: BlobSource) -> None:
        """Upload once into the first repository missing it, mount into the rest."""
        missing = [r for r in self.blob_repos[digest] if not self.outcomes[digest, r].ok]
        first, rest = missing[0], missing[1:]
        try:
            async with self._slot():
                await self.client.upload_blob(first, digest, size, source)
            self.outcomes[digest, first].succeed()
            self.result.uploaded_blobs += 1
            self.result.uploaded_bytes += size
            self.bar.update(size)
            for repository in rest:
                async with self._slot():
                    if await self.client.mount_blob(repository, digest, first):
                        self.result.mounted_blobs += 1
                    else:
                        await self.client.upload_blob(repository, digest, size, source)
                        self.result.uploaded_blobs += 1
                        self.result.uploaded_bytes += size
                self.outcomes[digest, repository].succeed()
        except MirrorError as exc:
            self._blob_failed(digest, exc)
            if _registry_unwell(exc) and self.fatal is None:
                self.fatal = RegistryError(f"not sent: {self.request.target.host} stopped answering "
                                           f"(first failure: {exc})", exc.status)
        finally:
            self.uploading.discard(digest)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A concurrency slot for one request; refused once the registry is known to be down."""
        async with self.limiter:
            if self.fatal is not None:
                raise self.fatal
            yield

    def _blob_failed(self, digest: str, error: MirrorError) -> None:
        for repository in self.blob_repos[digest]:
            self.outcomes[digest, repository].fail(error)

    def _manifest_arrived(self, manifest: Manifest) -> None:
        self.manifests[manifest.digest] = manifest
        for repository in self.manifest_repos[manifest.digest]:
            if not self.outcomes[manifest.digest, repository].done.is_set():
                self.tg.start_soon(self._push_manifest, manifest, repository)

    async def _push_manifest(self, manifest: Manifest, repository: str) -> None:
        outcome = self.outcomes[manifest.digest, repository]
        for child in manifest.children():
            if not self._planned(child.digest, repository):
                # mirror-bundle.json is input too: a manifest must not wait for what nothing will send.
                outcome.fail(IntegrityError(
                    f"manifest {manifest.digest} references {child.digest}, which {self.request.bundle}'s "
                    f"mirror-bundle.json does not list for {repository}: the bundle is inconsistent"))
                return
            dependency = self.outcomes[child.digest, repository]
            await dependency.done.wait()
            if dependency.error is not None:
                outcome.fail(dependency.error)  # the child's own error: it names what is wrong, keeps its kind
                return
        try:
            async with self._slot():
                await self.client.put_manifest(repository, manifest.digest, manifest)
            outcome.succeed()
            self.result.manifests_pushed += 1
        except MirrorError as exc:
            outcome.fail(exc)

    def _planned(self, digest: str, repository: str) -> bool:
        return repository in self.blob_repos.get(digest, ()) or repository in self.manifest_repos.get(digest, ())

    def _fail_unreached(self) -> None:
        """After the pass: whatever the bundle never delivered cannot arrive any more."""

        def reason(digest: str) -> MirrorError:
            return self.fatal or IntegrityError(f"{digest} is not in {self.request.bundle} (truncated or incomplete)")

        for (digest, repository), outcome in list(self.outcomes.items()):
            if not outcome.done.is_set() and digest not in self.uploading and digest not in self.manifests:
                outcome.fail(reason(digest))
        for digest, repositories in self.manifest_repos.items():
            for repository in repositories:
                if digest not in self.manifests and not self.outcomes[digest, repository].done.is_set():
                    self.outcomes[digest, repository].fail(reason(digest))

    # -- phase 3: tags ----------------------------------------------------------

    def image_error(self, plan: ImagePlan) -> MirrorError | None:
        for digest in (*plan.blobs, *plan.manifests):
            outcome = self.outcomes[digest, plan.repository]
            if not outcome.ok:
                return outcome.error or MirrorError(f"{digest} did not reach {plan.repository}")
        return None

    async def tag_all(self) -> None:
        async def tag(plan: ImagePlan) -> None:
            if plan.tag is None:
                return
            current = await self.client.head_manifest(plan.repository, plan.tag)
            if current is not None and current.digest == plan.record.digest:
                return
            manifest = self.manifests.get(plan.record.digest) or await self.client.get_manifest(
                plan.repository, plan.record.digest)
            async with self.limiter:
                await self.client.put_manifest(plan.repository, plan.tag, manifest)
            self.result.tags_pushed += 1

        async def one(plan: ImagePlan) -> None:
            error = self.image_error(plan)
            if error is None and self.fatal is None:
                try:
                    await tag(plan)
                    self.result.images.append(
                        {"source": plan.record.source, "target": f"{self.request.target.host}/{plan.target}",
                         "digest": plan.record.digest})
                    return
                except MirrorError as exc:
                    error = exc
            error = error or self.fatal
            assert error is not None
            self.result.failures[plan.record.source] = f"to {self.request.target.host}/{plan.target}: {error}"
            self.errors.append(error)

        async with anyio.create_task_group() as tg:
            for plan in self.plans:
                tg.start_soon(one, plan)
        if self.result.failures:
            self.result.exit_code = worst_exit_code(self.errors)

    async def run(self) -> PushResult:
        await self.client.ping()
        await self.survey()
        await self.mount_known()
        self._omitted_missing()
        pending_bytes = sum(self.reader.manifest.blobs.get(d, 0) for d in self.to_upload)
        missing_manifests = any(
            not self.outcomes[d, r].ok for d, repos in self.manifest_repos.items() for r in repos)
        if self.to_upload or missing_manifests:
            self.spool_dir = Path(tempfile.mkdtemp(prefix="mirror-push-", dir=self.request.spool_dir))
            try:
                with self.progress.bar(pending_bytes, "uploading") as bar:
                    await self.stream(bar)
            finally:
                shutil.rmtree(self.spool_dir, ignore_errors=True)
        await self.tag_all()
        return self.result


async def _chunks_from(receive: Any) -> AsyncIterator[bytes]:
    async for item in receive:
        if isinstance(item, BaseException):
            raise item
        yield item


def _registry_unwell(error: MirrorError) -> bool:
    """The registry stopped answering (or keeps failing) after the client's own retries.

    Then the push stops instead of retrying every remaining blob in turn.
    """
    return type(error) is RegistryError and (error.status is None or error.status == 429 or error.status >= 500)


def dry_run(request: PushRequest) -> PushResult:
    """What would go where, from the bundle's first entry alone; nothing is contacted."""
    with BundleReader(request.bundle) as reader:
        plans = plan_push(reader.manifest, request.target.prefix)
    result = PushResult(registry=request.target.host)
    result.images = [{"source": p.record.source, "target": f"{request.target.host}/{p.target}",
                      "digest": p.record.digest} for p in plans]
    return result


async def push(request: PushRequest, progress: Progress) -> PushResult:
    """Push a whole bundle. Per-image failures are in the result; setup errors raise."""
    if request.dry_run:
        return dry_run(request)
    # What exists by now (imported modules, mostly) lives to the end: the collector need not walk it
    # again each time the many short-lived request objects of a push trigger a full collection.
    gc.freeze()
    reader = await anyio.to_thread.run_sync(BundleReader, request.bundle)
    try:
        plans = plan_push(reader.manifest, request.target.prefix)
        async with RegistryClient(request.target.host, request.target.settings) as client:
            return await _Pusher(request, client, reader, plans, progress).run()
    finally:
        reader.close()
