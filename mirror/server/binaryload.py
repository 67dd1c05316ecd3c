"""The registry binary out of the registry image in a bundle, for a bastion without one.

The distribution image holds a static Go binary at /bin/registry. We take
the host platform's image out of the bundle (every blob is re-hashed as it
is read), walk its layers from the top down and copy that one regular file
out; the layer holding it must also match its diff_id in the image config.
The tar walker is our own and small: it follows no links, writes nothing
but that one file, and bounds every header it reads, so a hostile layer
cannot make it allocate or write more than MAX_BINARY.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

import zstandard

from ..bundle.reader import BundleReader
from ..errors import IntegrityError, UsageError
from ..model.numbers import ascii_int
from ..model.oci import Platform
from ..bundle.store import BlobStore
from ..safefiles import Replacement
from .imageload import copy_image_blobs, find_registry_image, select_manifest

BINARY_PATH = "bin/registry"  # in the image
MAX_BINARY = 512 << 20
MAX_HEADER = 1 << 20  # a pax or GNU long-name header larger than this is refused
BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 20
# platform.machine() -> the OCI architecture name (and variant)
_ARCHITECTURES = {"x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", None),
                  "arm64": ("arm64", None), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
                  "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None)}


def host_platform() -> Platform:
    machine = platform.machine()
    architecture, variant = _ARCHITECTURES.get(machine, (machine, None))
    return Platform("linux", architecture, variant)


def extract_registry_binary(bundle: Path, registry_image: str | None, target: Path) -> Path:
    """Write the host platform's /bin/registry of the bundle's registry image to ``target`` (mode 0755)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    wanted = host_platform()
    with BundleReader(bundle) as reader, \
            tempfile.TemporaryDirectory(prefix="image-", dir=target.parent) as spool_dir:
        record = find_registry_image(reader.manifest, bundle, registry_image)
        spool = BlobStore(Path(spool_dir))
        copy_image_blobs(reader, record, spool)
        manifest = select_manifest(spool, record, wanted)
        config = json.loads(spool.read(manifest.document["config"]["digest"]))
        layers = manifest.document.get("layers") or []
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            raise IntegrityError(f"registry image {record.source} ({wanted}): its config lists "
                                 f"{len(diff_ids)} layers, its manifest {len(layers)}")
        for layer, diff_id in reversed(list(zip(layers, diff_ids))):  # the top layer wins
            with Replacement(target, mode=0o755) as binary, open(spool.path(layer["digest"]), "rb") as raw:
                if not _copy_from_layer(_decompressed(raw, layer.get("mediaType", "")), diff_id,
                                        layer["digest"], binary.file):
                    binary.discard()
                    continue
            return target
    raise UsageError(f"registry image {record.source} ({wanted}) in {bundle} has no /{BINARY_PATH}: "
                     "install the registry binary, or use --engine docker")


def _decompressed(raw: BinaryIO, media_type: str) -> BinaryIO:
    if media_type.endswith("gzip"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if media_type.endswith("zstd"):
        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


class _Hashing:
    """Reads exactly what is asked (or up to the end), hashing everything read."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.hasher = hashlib.sha256()

    def read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.stream.read(min(CHUNK, size - len(data)))
            if not chunk:
                break
            data += chunk
        self.hasher.update(data)
        return data

    def skip(self, size: int) -> None:
        while size > 0:
            chunk = self.read(min(CHUNK, size))
            if not chunk:
                raise IntegrityError("layer tar ends inside an entry")
            size -= len(chunk)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _copy_from_layer(stream: BinaryIO, diff_id: str, layer: str, out: BinaryIO) -> bool:
    """Copy BINARY_PATH (a regular file) out of one layer tar into ``out``; False if absent."""
    tar = _Hashing(stream)
    try:
        found = _walk(tar, layer, out)
        tar.drain()
        if "sha256:" + tar.hasher.hexdigest() != diff_id:
            raise IntegrityError(f"layer {layer} does not unpack to {diff_id}, the diff_id its image config names")
    except (OSError, EOFError, zlib.error, zstandard.ZstdError, tarfile.HeaderError) as exc:
        raise IntegrityError(f"layer {layer} is not a readable tar: {exc}") from None
    return found


def _walk(tar: _Hashing, layer: str, out: BinaryIO) -> bool:
    found = False
    long_name: str | None = None
    while True:
        header = tar.read(BLOCK)
        if len(header) < BLOCK or header == b"\0" * BLOCK:
            return found
        size = tarfile.nti(header[124:136])
        if size < 0:
            raise IntegrityError(f"layer {layer}: a tar header claims a negative size")
        kind = header[156:157]
        padded = -(-size // BLOCK) * BLOCK
        if kind in (b"x", b"L"):  # pax extended header, GNU long name: they name the next entry
            if size > MAX_HEADER:
                raise IntegrityError(f"layer {layer}: a {size}-byte tar header; refusing over {MAX_HEADER}")
            data = tar.read(padded)[:size]
            long_name = _pax_path(data) if kind == b"x" else data.rstrip(b"\0").decode("utf-8", "replace")
            continue
        name = long_name or _ustar_name(header)
        long_name = None
        if not found and kind in (b"0", b"\0") and _normalized(name) == BINARY_PATH:
            if size > MAX_BINARY:
                raise IntegrityError(f"layer {layer}: /{BINARY_PATH} is {size} bytes; refusing over {MAX_BINARY}")
            _write(tar, size, out)
            tar.skip(padded - size)
            found = True
        else:
            tar.skip(padded)


def _write(tar: _Hashing, size: int, out: BinaryIO) -> None:
    remaining = size
    while remaining:
        chunk = tar.read(min(CHUNK, remaining))
        if not chunk:
            raise IntegrityError(f"layer tar ends inside /{BINARY_PATH}")
        out.write(chunk)
        remaining -= len(chunk)


def _ustar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
    return (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a pax header (records are "LENGTH key=value\\n", LENGTH counting all)."""
    at = 0
    while at < len(data):
        space = data.find(b" ", at)
        length = ascii_int(data[at:space]) if space > at else None
        if length is None or length <= space - at + 1:
            return None
        key, _, value = data[space + 1:at + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "replace")
        at += length
    return None


def _normalized(name: str) -> str:
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name
