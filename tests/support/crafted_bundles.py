"""Bundles made by hand with the standard library, not by mirror's writer: crafted, damaged or edited.

``good_members()`` is a well-formed one-image bundle (LAYER under TOP) to start a crafted one from."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import zstandard

from mirror.bundle.format import BundleManifest, ImageRecord
from mirror.bundle.reader import BundleReader

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_member(data: bytes, digest: str | None = None) -> tuple[tarfile.TarInfo, bytes]:
    return regular(f"blobs/sha256/{(digest or digest_of(data)).split(':')[1]}", data)


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def craft_bundle(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """Any tar we like, zstd-compressed, made with the standard library: no help from mirror's writer."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw.getvalue()))
    return path


def header_for(blobs: list[bytes]) -> tuple[tarfile.TarInfo, bytes]:
    """A valid mirror-bundle.json for one image made of ``blobs`` (the last one is the top manifest)."""
    top = blobs[-1]
    image = ImageRecord("docker.io/library/x:1", digest_of(top), OCI_MANIFEST, len(top), ["linux/amd64"],
                        [digest_of(b) for b in blobs[:-1]])
    manifest = BundleManifest([image], {digest_of(b): len(b) for b in blobs})
    return regular("mirror-bundle.json", manifest.to_json())


LAYER = os.urandom(200_000)
TOP = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                  "layers": [{"mediaType": "x", "digest": digest_of(LAYER), "size": len(LAYER)}]}).encode()
LAYOUT = regular("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
INDEX = regular("index.json", b'{"schemaVersion": 2, "manifests": []}')


def good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [header_for([LAYER, TOP]), LAYOUT, blob_member(LAYER), blob_member(TOP), INDEX]


def read_all(path: Path) -> list[str]:
    """Consume the whole bundle as push does; returns the names handed out before any error."""
    names = []
    with BundleReader(path) as reader:
        for entry in reader.entries():
            names.append(entry.name)
            for _ in entry.chunks():
                pass
    return names


def rewrite_bundle(source, target, edit):
    """Copy a bundle entry by entry; ``edit(member, data)`` returns the [(member, data)] to write."""
    with open(source, "rb") as raw, open(target, "wb") as out:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        writer = zstandard.ZstdCompressor().stream_writer(out)
        with tarfile.open(fileobj=reader, mode="r|") as tin, \
                tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tout:
            for member in tin:
                data = tin.extractfile(member).read() if member.isfile() else b""
                for new_member, new_data in edit(member, data):
                    new_member.size = len(new_data) if new_member.isfile() else 0
                    tout.addfile(new_member, io.BytesIO(new_data) if new_member.isfile() else None)
        writer.close()
