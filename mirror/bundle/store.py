"""A content-addressed blob store: the pull's work dir and resume point.

Small content (manifests, and blobs of at most PACKED_MAX bytes) is appended
to one file, ``ROOT/blobs.pack``, a record each; larger blobs live at
``ROOT/blobs/sha256/<hex>`` (the OCI layout shape) once their bytes are
verified, a download in progress at ``<hex>.partial`` so a re-run can resume
it with a Range request. The bundle's own layout does not depend on this.

Why a pack: a file per blob cost a create, a rename, an open to read it back
and an unlink when the work dir went, each a few hundred microseconds of
system time on ext4: 0.9-2.2 CPU-s of a 4-5.4 CPU-s pull of 300 small images
(~3300 digests). A pack costs one write per record and one read.

A record is ``MAGIC``, the sha256 (32 bytes), the length (8 bytes, big
endian), then the bytes. Opening the store reads the pack once and hashes each
record: one whose bytes do not match its digest is left out, and from the first
one cut short or not a record at all (a kill -9 or a full disk mid-append) the
pack is cut off, so a resumed pull downloads again only what was lost. Records
are not synced, as the blob files are not. What the store holds is kept in
memory, built once when it is opened, so ``has`` and ``size`` cost no syscall;
a record enters it only once wholly written (the bundle writer's thread reads
while downloads append).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import weakref
from pathlib import Path
from typing import BinaryIO

from ..errors import DiskFull, IntegrityError, MirrorError
from ..model.oci import digest_hex, sha256_digest
from ..safefiles import write_file

# Blobs of at most this many bytes are packed, and come whole into memory (registry/download.py SmallDownload):
# memory in flight is then at most the downloads in progress times this (-j 8: 48 MiB, at most 96 MiB). At this
# size a blob's own bytes cost about as much to hash and copy as a file of its own cost the system; past it,
# blobs are few (layers), and a cut download resumes from its partial file instead of starting again.
PACKED_MAX = 1 << 20
MAGIC = b"MPK1"
HEADER = len(MAGIC) + 32 + 8
PACK = "blobs.pack"


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.pack_path = self.root / PACK
        self._packed: dict[str, tuple[int, int]] = {}  # digest -> where its bytes start in the pack, their length
        self._files: dict[str, int] = {}  # digest -> size, of blobs in files of their own
        self._fd: int | None = None  # the pack, read and written (opened when there is one)
        self._end = 0  # where the next record goes
        self._appending = threading.Lock()
        for entry in os.scandir(self.blob_dir):
            if len(entry.name) == 64 and entry.is_file(follow_symlinks=False):
                self._files[f"sha256:{entry.name}"] = entry.stat(follow_symlinks=False).st_size
        self._read_pack()

    def path(self, digest: str) -> Path:
        """Where a blob in a file of its own is (not a packed one)."""
        return self.blob_dir / digest_hex(digest)

    def partial_path(self, digest: str) -> Path:
        return self.blob_dir / f"{digest_hex(digest)}.partial"

    @staticmethod
    def packs(size: int) -> bool:
        """Whether a blob of ``size`` bytes goes into the pack (downloaded whole into memory)."""
        return size <= PACKED_MAX

    def has(self, digest: str) -> bool:
        return digest in self._packed or digest in self._files

    def empty(self) -> bool:
        """Nothing in it, not even a partial download: a first run's work dir."""
        return not self._packed and next(self.blob_dir.iterdir(), None) is None

    def missing_bytes(self, digest: str, size: int) -> int:
        """Bytes of a ``size``-byte blob still to be written here: none when it is in, else what its partial lacks."""
        if self.has(digest):
            return 0
        if self.packs(size):
            return size  # a packed blob has no partial: a cut one starts again
        try:
            return max(0, size - self.partial_path(digest).stat().st_size)
        except FileNotFoundError:
            return size

    def size(self, digest: str) -> int:
        if digest in self._packed:
            return self._packed[digest][1]
        if not self.has(digest):
            raise FileNotFoundError(f"blob {digest} is not in {self.root}")
        return self._files[digest]

    def read(self, digest: str) -> bytes:
        where = self._packed.get(digest)
        return self._pread(*where) if where else self.path(digest).read_bytes()

    def open(self, digest: str) -> BinaryIO:
        """The blob for reading as a stream: its file, or a packed one's bytes (at most PACKED_MAX)."""
        where = self._packed.get(digest)
        return io.BytesIO(self._pread(*where)) if where else open(self.path(digest), "rb")

    def upload_source(self, digest: str) -> bytes | Path:
        """The blob as an upload takes it (registry/upload.py BlobSource): a packed one's bytes, else its file."""
        where = self._packed.get(digest)
        return self._pread(*where) if where else self.path(digest)

    def put_bytes(self, digest: str, data: bytes) -> None:
        """Store content held in memory (manifests) after checking it hashes to ``digest``."""
        actual = sha256_digest(data)
        if actual != digest:
            raise IntegrityError(f"content for {digest} hashes to {actual}")
        self.put_checked(digest, data)

    def put_checked(self, digest: str, data: bytes) -> None:
        """Store content the caller already hashed to ``digest`` (a download): packed unless larger than
        PACKED_MAX. A write that fails leaves the pack as it was and raises ``write_failed``'s error."""
        if digest in self._packed or digest in self._files:
            return
        try:
            if self.packs(len(data)):
                self._append(digest, data)
            else:
                write_file(self.path(digest), data)
                self._files[digest] = len(data)
        except OSError as exc:
            raise self.write_failed(exc, digest) from None

    def write_failed(self, exc: OSError, digest: str) -> MirrorError:
        """The error for a write of ``digest`` into this work dir that failed: DiskFull when there is no room."""
        said = f"blob {digest}: cannot write to the work dir {self.root}: {exc}"
        return DiskFull.of(exc, said, str(self.root))

    def promote(self, digest: str) -> None:
        """Move a ``.partial`` whose hash the downloader already checked into place."""
        self.adopt(self.partial_path(digest), digest)

    def adopt(self, temp: str | Path, digest: str) -> None:
        """Move a file of this work dir whose hash the caller checked (a download) into place."""
        path = self.path(digest)
        os.replace(temp, path)
        self._files[digest] = os.stat(path).st_size

    # -- the pack ----------------------------------------------------------------------------------

    def _append(self, digest: str, data: bytes) -> None:
        header = MAGIC + bytes.fromhex(digest_hex(digest)) + len(data).to_bytes(8, "big")
        with self._appending:
            if self._fd is None:
                self._opened(os.open(self.pack_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
            start = self._end
            try:
                _write_at(self._fd, [header, data], start)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)  # the next append would write over it anyway
                raise
            self._end = start + HEADER + len(data)
            self._packed[digest] = (start + HEADER, len(data))  # readable from here on

    def _read_pack(self) -> None:
        """Note every sound record of the pack; cut off what follows the last (a torn or bad tail)."""
        try:
            fd = os.open(self.pack_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise MirrorError(f"cannot open the work dir's pack {self.pack_path}: {exc}") from None
        self._opened(fd)
        size = os.fstat(fd).st_size
        position = sound_end = 0
        with open(fd, "rb", buffering=1 << 20, closefd=False) as pack:
            while position + HEADER <= size:
                header = pack.read(HEADER)
                length = int.from_bytes(header[-8:], "big")
                if header[:len(MAGIC)] != MAGIC or length > PACKED_MAX or position + HEADER + length > size:
                    break  # not a record, or one cut short: nothing after it can be found
                data = pack.read(length)
                raw = header[len(MAGIC):-8]
                position += HEADER + length
                if hashlib.sha256(data).digest() == raw:
                    self._packed[f"sha256:{raw.hex()}"] = (position - length, length)
                    sound_end = position
        if sound_end < size:
            os.ftruncate(fd, sound_end)
        self._end = sound_end

    def _opened(self, fd: int) -> None:
        self._fd = fd
        weakref.finalize(self, os.close, fd)

    def _pread(self, offset: int, length: int) -> bytes:
        assert self._fd is not None
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise IntegrityError(f"the work dir's pack {self.pack_path} shrank while being read")
        return data


def _write_at(fd: int, parts: list[bytes], offset: int) -> None:
    """All of ``parts``, one after the other, at ``offset``: one syscall unless the kernel writes less."""
    written = os.pwritev(fd, parts, offset)
    if written == sum(map(len, parts)):
        return
    rest = memoryview(b"".join(parts))[written:]
    while rest:
        count = os.pwrite(fd, rest, offset + written)
        rest, written = rest[count:], written + count
