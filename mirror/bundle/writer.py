"""Write a bundle: blobs from a BlobStore into one zstd-compressed pax tar.

The tar is produced by hand (headers from ``tarfile.TarInfo``, content copied
straight into the compressor) because ``tarfile``'s stream writer re-buffers
every write in small blocks. The file appears under its final name only once
complete; until then it lives under a hidden temp name in the same directory,
``.NAME.tmp-PID-TOKEN``: a failed write removes its own, and the next write of
the same bundle removes those whose process is gone (killed).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import secrets
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Collection, Iterator

import zstandard

from ..errors import DiskFull, IntegrityError, MirrorError, UsageError
from ..model import graph
from ..model.oci import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
)
from ..safefiles import create_new
from .store import BlobStore
from .format import (
    BUNDLE_MANIFEST,
    INDEX_JSON,
    MAX_DOCUMENT_SIZE,
    OCI_LAYOUT,
    OCI_LAYOUT_DOC,
    BundleManifest,
    ImageRecord,
    blob_name,
)
from .parts import bundle_part_path, checksum_path, incomplete_marker, stray_parts

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
FAT32_MAX_FILE = (4 << 30) - 1  # split bundles are for size-capped media; FAT32 is the usual one
WRITTEN_BACK_EVERY = 64 << 20  # bytes: the bundle goes to disk as it is written, not all in the final fsync


@dataclass
class WrittenBundle:
    path: Path
    size: int  # compressed bytes, all parts together
    sha256: str  # hex digest of the compressed stream, as in NAME.sha256
    parts: list[Path] = field(default_factory=list)  # [path] when not split

    def to_json(self) -> dict:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256, "parts": [str(p) for p in self.parts]}


def write_bundle(
    path: Path,
    bundle: BundleManifest,
    store: BlobStore,
    *,
    level: int = 3,
    threads: int = 0,
    part_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    verified: Collection[str] = frozenset(),
    arrived: Callable[[set[str]], set[str]] | None = None,
) -> WrittenBundle:
    """Write ``bundle`` with its blobs from ``store``; ``progress`` gets blob bytes as they go.

    ``threads=0`` compresses in the calling thread: layers are already
    gzip'd, and zstd's worker mode was measured 3x slower and 5x larger in
    memory on such data. ``verified`` names blobs this process has already
    hashed (a fresh download); every other blob is re-hashed as it is copied.
    ``arrived(digests)``, when given, returns those of ``digests`` in ``store``
    now and not returned before, waiting for one at least (or raises to abandon
    the bundle): it lets a pull write the bundle while downloads are still going
    on, each blob as it arrives (``_as_they_arrive``). The compressed stream is hashed and written
    by a second thread, so that work overlaps with reading and compressing.
    """
    path = Path(path)
    if part_size is not None:
        part_size = capped_part_size(part_size)
    order = plan_blobs(bundle, store, pending=arrived is not None)
    sink = _Sink(path, part_size)
    try:
        compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        with _Background(sink) as background, compressor.stream_writer(background, closefd=False) as stream:
            tar = _TarWriter(stream, bundle.created_timestamp)
            tar.add_bytes(BUNDLE_MANIFEST, bundle.to_json())
            tar.add_bytes(OCI_LAYOUT, json.dumps(OCI_LAYOUT_DOC).encode())
            for digest, size in _as_they_arrive(order, _manifests(bundle), arrived) if arrived else order:
                tar.add_blob(digest, size, store, progress, rehash=digest not in verified)
            tar.add_bytes(INDEX_JSON, _index_json(bundle.images))
            tar.close()
        return sink.commit()
    except OSError as exc:  # disk full, permissions, a failing disk: one line, nothing left behind
        sink.discard()
        if exc.errno in DiskFull.ERRNOS:
            raise DiskFull(f"writing bundle {path} failed: {path.parent} is full ({exc.strerror})",
                           str(path.parent), exc.strerror) from exc
        raise MirrorError(f"writing bundle {path} failed: {exc}") from exc
    except BaseException:
        sink.discard()
        raise


def tar_size(size: int) -> int:
    """What an entry of ``size`` bytes takes in the bundle's tar before compression: its header and padding."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def capped_part_size(requested: int) -> int:
    """Parts never exceed FAT32's largest file, 4 GiB - 1: ``--split-size 4G`` means "fits FAT32"."""
    if requested <= 0:
        raise UsageError(f"part size must be positive, not {requested}")
    return min(requested, FAT32_MAX_FILE)


def plan_blobs(bundle: BundleManifest, store: BlobStore, pending: bool = False) -> list[tuple[str, int]]:
    """Every stored blob once, children before the manifest or index naming them.

    Reads only manifests; checks the plan against ``bundle.blobs`` so that
    ``mirror-bundle.json`` describes exactly what the tar holds. With
    ``pending``, layers and configs may still be on their way into ``store``.
    A delta leaves omitted digests to its base, but an omitted manifest at
    hand is still walked: whatever it names that the base lacks is stored.
    """
    omitted = set(bundle.omitted)
    stored = bundle.stored_blobs  # a property that builds a dict: once, not per blob
    order: dict[str, int] = {}
    walked: set[str] = set()
    for image in bundle.images:
        top = Descriptor(image.media_type, image.digest, image.size)
        for descriptor in graph.walk(top, lambda d: _manifest_at_hand(d, image, store, omitted), walked):
            digest = descriptor.digest
            if digest in omitted:
                continue
            if store.has(digest):
                order[digest] = store.size(digest)
            elif pending and not graph.is_manifest(descriptor):
                order[digest] = stored.get(digest, -1)
            else:
                raise MirrorError(
                    f"blob {digest} of {image.source} is not in the work directory {store.root}; re-run pull")
    for digest, size in order.items():
        if digest not in stored:
            raise MirrorError(f"bundle manifest does not list blob {digest}, which its images reference")
        if stored[digest] != size:
            raise IntegrityError(
                f"blob {digest} in {store.root} is {size} bytes but the bundle manifest says {stored[digest]}"
            )
    unreferenced = sorted(stored.keys() - order.keys())
    if unreferenced:
        raise MirrorError(f"bundle manifest lists blob {unreferenced[0]}, which no image references")
    return list(order.items())


def _as_they_arrive(order: list[tuple[str, int]], manifests: set[str],
                    arrived: Callable[[set[str]], set[str]]) -> Iterator[tuple[str, int]]:
    """``order``'s entries as a pull's downloads let the writer take them: each config or layer as soon
    as it is in the store, a manifest once every entry before it in ``order`` is taken, so it still
    follows all it names (docs/bundle-format.md, entry order).

    In ``order`` alone the writer would wait for the next blob while later ones
    pile up (blobs share a capped link: the first ones asked for are not the
    first in), and after the last blob arrived it would still have all of
    them to write, the link idle meanwhile.
    """
    place = {digest: index for index, (digest, _) in enumerate(order)}
    left = {digest for digest, _ in order if digest not in manifests}  # blobs not taken yet
    taken: set[str] = set()
    position = 0  # every entry before it is taken
    while True:
        while position < len(order) and (order[position][0] in taken or order[position][0] in manifests):
            if order[position][0] not in taken:
                yield order[position]
            position += 1
        if position == len(order):
            return
        for digest in sorted(arrived(left), key=place.__getitem__):
            left.discard(digest)
            taken.add(digest)
            yield order[place[digest]]


def _manifests(bundle: BundleManifest) -> set[str]:
    """The digests of every image's manifests: its top one and those below it."""
    return {digest for image in bundle.images for digest in (image.digest, *image.manifests)}


def _manifest_at_hand(descriptor: Descriptor, image: ImageRecord, store: BlobStore,
                      omitted: set[str]) -> Manifest | None:
    """The manifest in the work dir, checked; None for an omitted one that is not there."""
    digest = descriptor.digest
    if not store.has(digest):
        if digest in omitted:
            return None
        raise MirrorError(f"manifest {digest} of {image.source} is not in the work directory {store.root}; "
                          "re-run pull")
    size = store.size(digest)
    if size > MAX_DOCUMENT_SIZE:
        raise IntegrityError(f"manifest {digest} of {image.source} in {store.root} is {size} bytes; too large")
    manifest = Manifest.from_bytes(store.read(digest), descriptor.media_type)
    if manifest.digest != digest:
        raise IntegrityError(
            f"manifest {digest} of {image.source} in {store.root} is corrupt: "
            f"content hashes to {manifest.digest}; delete it and re-run pull"
        )
    return manifest


def index_media_type(media_type: str) -> str:
    """The type index.json gives an image: OCI's equivalent of a Docker type.

    The manifest bytes keep their Docker type (mirror-bundle.json records it
    too); only the index.json descriptor says OCI, because skopeo's OCI
    layout reader skips descriptors of any other type when looking up a name.
    """
    return {DOCKER_LIST: OCI_INDEX, DOCKER_MANIFEST: OCI_MANIFEST}.get(media_type, media_type)


def _index_json(images: list[ImageRecord]) -> bytes:
    manifests = []
    for image in images:
        annotations = {ANNOTATION_IMAGE_NAME: image.source}
        if image.tag:
            annotations[ANNOTATION_REF_NAME] = image.tag
        manifests.append(Descriptor(index_media_type(image.media_type), image.digest, image.size, annotations=annotations).to_json())
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(doc, indent=2).encode() + b"\n"


class _TarWriter:
    """Regular files only, mode 0644, owner 0:0 without names, one fixed mtime."""

    def __init__(self, out: BinaryIO, mtime: int):
        self.out = out
        self.mtime = mtime
        self.size = 0

    def _header(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self) -> None:
        if self.size % BLOCK:
            self._write(b"\0" * (BLOCK - self.size % BLOCK))

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.size += len(data)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self._write(data)
        self._pad()

    def add_blob(self, digest: str, size: int, store: BlobStore, progress: Callable[[int], None] | None,
                 rehash: bool = True) -> None:
        """Copy one blob in chunks, re-hashing it: a work dir gone bad must not cross the air gap."""
        self._header(blob_name(digest), size)
        hasher = hashlib.sha256() if rehash else None
        remaining = size
        with store.open(digest) as handle:
            while remaining:
                chunk = handle.read(min(CHUNK, remaining))
                if not chunk:
                    raise IntegrityError(f"blob {digest} in {store.root} shrank while being written")
                if hasher:
                    hasher.update(chunk)
                self._write(chunk)
                remaining -= len(chunk)
                if progress:
                    progress(len(chunk))
        actual = "sha256:" + hasher.hexdigest() if hasher else digest
        if actual != digest:
            raise IntegrityError(
                f"blob {digest} in {store.root} is corrupt: content hashes to {actual}; delete it and re-run pull"
            )
        self._pad()

    def close(self) -> None:
        """End-of-archive (two zero blocks), padded to a whole tar record as tar(1) does."""
        self._write(b"\0" * (2 * BLOCK))
        if self.size % tarfile.RECORDSIZE:
            self._write(b"\0" * (tarfile.RECORDSIZE - self.size % tarfile.RECORDSIZE))


class _Background:
    """Hands writes to a thread (hashing and disk writes overlap compression); bounded queue."""

    _DONE = object()

    def __init__(self, target: "_Sink", depth: int = 16):
        self.target = target
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bundle-writer", daemon=True)

    def _run(self) -> None:
        while (item := self.queue.get()) is not self._DONE:
            if self.error is None:
                try:
                    self.target.write(item)
                except BaseException as exc:  # re-raised in the producing thread
                    self.error = exc

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        self.queue.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "_Background":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.queue.put(self._DONE)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error


class _Sink:
    """The compressed stream's destination: hashes it, cuts it into parts, commits them.

    Parts are written under hidden temp names. The commit then swaps the old
    bundle for the new one under the final names, which takes one rename per
    part and so cannot be a single atomic step. ``NAME.incomplete`` is created
    (and synced) before the first old file goes, and removed only after the new
    ``NAME.sha256`` is in place; the reader refuses a bundle while it is there.
    So after a crash at any point the final names hold the old complete bundle,
    or the new one, or a bundle the reader reports as incomplete, never a mix
    of old and new parts passed off as one bundle.

    ``NAME.sha256`` works with ``sha256sum -c``: one line per file (each part of
    a split bundle), and for a split bundle the digest of the whole stream on a
    ``#`` line, which ``sha256sum -c`` skips.
    """

    def __init__(self, path: Path, part_size: int | None):
        self.path = path
        self.part_size = part_size
        self.token = secrets.token_hex(4)
        self.hasher = hashlib.sha256()
        self.part_hasher = hashlib.sha256() if part_size else None  # a whole bundle's is ``hasher``
        self.part_digests: list[str] = []
        self.size = 0
        self.temps: list[Path] = []
        self.handle: BinaryIO | None = None
        self.room = 0  # bytes the open part may still take
        self.unsynced = 0  # bytes written to the open part since it was last synced
        if not path.parent.is_dir():
            raise UsageError(f"cannot write {path}: directory {path.parent} does not exist")
        _remove_dead_temps(path)

    def _final(self, index: int) -> Path:
        return bundle_part_path(self.path, index) if self.part_size else self.path

    def _temp_name(self, final: Path) -> Path:
        return final.with_name(f".{final.name}.tmp-{os.getpid()}-{self.token}")

    def _temp(self, final: Path) -> Path:
        temp = self._temp_name(final)
        self.temps.append(temp)
        return temp

    def _open_next(self) -> None:
        self._close_current()
        self.handle = create_new(self._temp(self._final(len(self.temps))))
        self.room = self.part_size or -1

    def _close_current(self) -> None:
        if self.handle is not None:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            self.handle = None
            self.unsynced = 0
            if self.part_hasher:
                self.part_digests.append(self.part_hasher.hexdigest())
                self.part_hasher = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            if self.handle is None or self.room == 0:
                self._open_next()
            take = len(view) if self.room < 0 else min(self.room, len(view))
            self.handle.write(view[:take])
            if self.part_hasher:
                self.part_hasher.update(view[:take])
            view = view[take:]
            if self.room > 0:
                self.room -= take
            self.unsynced += take
            if self.unsynced >= WRITTEN_BACK_EVERY:
                self._sync()
        return len(data)

    def _sync(self) -> None:
        """The open part onto the disk so far. On this thread, while the compressor goes on: with every
        byte left to the commit's fsync, a bundle of GBs written at a link's pace would sit in the page
        cache and reach the disk only after the last blob arrived, the pull waiting for it."""
        self.handle.flush()
        os.fdatasync(self.handle.fileno())
        self.unsynced = 0

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()

    def _checksum_text(self, parts: list[Path]) -> str:
        digest = self.hasher.hexdigest()
        if not self.part_size:
            return f"{digest}  {self.path.name}\n"
        lines = [f"# {digest}  {self.path.name} (the parts joined: cat {self.path.name}.part-* | sha256sum)"]
        lines += [f"{part_digest}  {part.name}" for part_digest, part in zip(self.part_digests, parts)]
        return "\n".join(lines) + "\n"

    def commit(self) -> WrittenBundle:
        if self.handle is None:
            self._open_next()  # an empty stream still gets its (empty) file
        self._close_current()
        parts = [self._final(i) for i in range(len(self.temps))]
        checksum = checksum_path(self.path)
        _write_synced(self._temp(checksum), self._checksum_text(parts))
        marker = incomplete_marker(self.path)
        marker_temp = self._temp_name(marker)
        _write_synced(marker_temp, f"{self.path.name} is being replaced; if this stays, the write was interrupted\n")
        os.replace(marker_temp, marker)
        _fsync_dir(self.path.parent)
        # From here until the marker goes, readers refuse the bundle as incomplete.
        checksum.unlink(missing_ok=True)
        # Leftovers of an earlier bundle of the same name would be read as part of this one.
        stale = stray_parts(self.path, keep=len(parts) if self.part_size else 0)
        if self.part_size:
            stale.append(self.path)
        for leftover in stale:
            leftover.unlink(missing_ok=True)
        for temp, final in zip(self.temps, parts + [checksum]):
            os.replace(temp, final)
        self.temps = []
        _fsync_dir(self.path.parent)
        marker.unlink()
        _fsync_dir(self.path.parent)
        return WrittenBundle(self.path, self.size, self.hasher.hexdigest(), parts)

    def discard(self) -> None:
        """Remove every temp file, whatever closing the open one raises (on a full disk its flush fails)."""
        handle, self.handle = self.handle, None
        try:
            if handle is not None:
                handle.close()
        except OSError:
            pass
        finally:
            for temp in self.temps:
                temp.unlink(missing_ok=True)
            self.temps = []


def _remove_dead_temps(path: Path) -> None:
    """Temp files of ``path`` (whole, parts, checksum, marker) left by writers that were killed."""
    pattern = re.compile(r"\." + re.escape(path.name)
                         + r"(?:\.part-\d{3,}|\.sha256|\.incomplete)?\.tmp-(\d+)-[0-9a-f]+")
    for candidate in path.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match and not _process_alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OverflowError:
        return False
    return True


def _write_synced(path: Path, text: str) -> None:
    with create_new(path) as handle:
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
