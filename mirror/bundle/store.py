"""A content-addressed blob directory: the pull's work dir and resume point.

Blobs live at ``ROOT/blobs/sha256/<hex>`` (the OCI layout shape) only once
their bytes are verified; a download in progress lives at ``<hex>.partial``
so a re-run can resume it with a Range request. Manifests are blobs too.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DiskFull, IntegrityError, MirrorError
from ..model.oci import digest_hex, sha256_digest
from ..safefiles import write_file


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.blob_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blob_dir / digest_hex(digest)

    def partial_path(self, digest: str) -> Path:
        return self.blob_dir / f"{digest_hex(digest)}.partial"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def empty(self) -> bool:
        """Nothing in it, not even a partial download: a first run's work dir."""
        return next(self.blob_dir.iterdir(), None) is None

    def missing_bytes(self, digest: str, size: int) -> int:
        """Bytes of a ``size``-byte blob still to be written here: none when it is in, else what its partial lacks."""
        if self.has(digest):
            return 0
        try:
            return max(0, size - self.partial_path(digest).stat().st_size)
        except FileNotFoundError:
            return size

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def put_bytes(self, digest: str, data: bytes) -> None:
        """Store small content (manifests) after checking it hashes to ``digest``."""
        actual = sha256_digest(data)
        if actual != digest:
            raise IntegrityError(f"content for {digest} hashes to {actual}")
        try:
            write_file(self.path(digest), data)
        except OSError as exc:
            raise self.write_failed(exc, digest) from None

    def write_failed(self, exc: OSError, digest: str) -> MirrorError:
        """The error for a write of ``digest`` into this work dir that failed: DiskFull when there is no room."""
        said = f"blob {digest}: cannot write to the work dir {self.root}: {exc}"
        return DiskFull.of(exc, said, str(self.root))

    def promote(self, digest: str) -> None:
        """Move a ``.partial`` whose hash the downloader already checked into place."""
        os.replace(self.partial_path(digest), self.path(digest))

