"""``mirror verify BUNDLE``: one full pass re-hashing every blob and checking every record."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import IntegrityError, MirrorError
from ..attach.keys import VERIFIED, Verifier, judge, verdict_reason
from ..model import graph
from ..model.reference import Reference
from ..model.oci import ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, Manifest
from .format import (
    INDEX_JSON, MAX_DOCUMENT_SIZE, OCI_LAYOUT, OCI_LAYOUT_DOC, BundleManifest, ImageRecord, is_cosign_signature,
)
from .reader import BlobCorrupt, BundleReader
from .writer import index_media_type

MAX_LISTED_PROBLEMS = 3


class VerificationFailed(IntegrityError):
    """Every problem found, so ``--json`` can list them; the message names the first few."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        suffix = f"; and {more} more" if more > 0 else ""
        super().__init__(f"bundle {path} failed verification ({len(problems)} problem(s)): {shown}{suffix}")


@dataclass
class VerifyReport:
    path: Path
    id: str
    images: int
    blobs: int  # blob entries read and re-hashed
    bytes: int  # their uncompressed size
    kind: str = "full"
    base: list[str] = field(default_factory=list)  # for a delta: the ids of what it builds on
    omitted: int = 0  # digests left to the base (not in the bundle, not checked here)
    attachments: int = 0  # signatures, attestations, SBOMs and referrers, besides the images
    signatures: dict[str, str] = field(default_factory=dict)  # image source -> verified|present|absent|invalid

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "id": self.id, "ok": True, "images": self.images,
                "attachments": self.attachments, "blobs": self.blobs, "bytes": self.bytes, "kind": self.kind,
                "base": list(self.base), "omitted": self.omitted, "signatures": dict(self.signatures)}


def verify_bundle(path: Path, progress: Callable[[int], None] | None = None,
                  keys: Sequence[Verifier] | None = None) -> VerifyReport:
    """Read every entry once; raise VerificationFailed listing all problems found.

    With ``keys`` (--verify-key) an image none of whose cosign signatures verifies is a problem too.
    """
    path = Path(path)
    with BundleReader(path) as reader:
        check = _Check(reader.manifest)
        payloads = {digest for record in reader.manifest.images if is_cosign_signature(record)
                    for digest in record.blobs}
        kept: dict[str, bytes] = {}
        try:
            for entry in reader.entries():
                if entry.digest is None:
                    check.document(entry.name, entry.read())
                    continue
                keep = entry.size <= MAX_DOCUMENT_SIZE
                content = bytearray()
                try:
                    for chunk in entry.chunks():
                        if keep:
                            content += chunk
                        if progress:
                            progress(len(chunk))
                except BlobCorrupt as exc:
                    check.problems.append(f"{exc} ({check.users(exc.digest)})")
                    continue
                check.blob(entry.digest, entry.size, bytes(content) if keep else None)
                if keep and entry.digest in payloads:
                    kept[entry.digest] = bytes(content)
        except IntegrityError as exc:  # the stream itself is unreadable from here on
            check.problems.append(str(exc))
        else:
            check.finish()
    manifest = reader.manifest
    signatures = {}
    for image in manifest.subjects:
        records = [r for r in manifest.attachments_of(image) if is_cosign_signature(r)]
        found = [(check.manifests[r.digest], kept) for r in records if r.digest in check.manifests]
        verdict = judge({image.narrowed_from or image.digest}, Reference.parse(image.source).name, found, keys or [])
        signatures[image.source] = verdict.status
        if keys and verdict.status != VERIFIED:
            check.problems.append(f"image {image.source}: no valid signature: {verdict_reason(verdict)}")
    if check.problems:
        raise VerificationFailed(path, check.problems)
    return VerifyReport(path, manifest.id, len(manifest.subjects), len(check.seen), sum(check.seen.values()),
                        manifest.kind, list(manifest.base), len(manifest.omitted),
                        len(manifest.images) - len(manifest.subjects), signatures)


class _Check:
    """The state of one verify pass: what has been seen, and what is wrong."""

    def __init__(self, manifest: BundleManifest):
        self.manifest = manifest
        self.omitted = set(manifest.omitted)
        self.problems: list[str] = []
        self.seen: dict[str, int] = {}
        self.manifests: dict[str, Manifest] = {}  # parsed manifests and indexes
        self.media_types: dict[str, str] = {}
        self.forward: list[tuple[str, Descriptor]] = []  # (manifest, child not yet seen)
        self.index: dict[str, Any] | None = None
        self._users: dict[str, list[str]] = {}
        for image in manifest.images:
            for digest in {image.digest, *image.blobs}:
                self._users.setdefault(digest, []).append(image.source)

    def users(self, digest: str) -> str:
        names = self._users.get(digest)
        return f"used by {', '.join(sorted(names))}" if names else "used by no image"

    def document(self, name: str, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.problems.append(f"{name} is not a JSON object")
        elif name == OCI_LAYOUT and doc.get("imageLayoutVersion") != OCI_LAYOUT_DOC["imageLayoutVersion"]:
            self.problems.append(f"{OCI_LAYOUT} has unsupported imageLayoutVersion {doc.get('imageLayoutVersion')!r}")
        elif name == INDEX_JSON:
            self.index = doc

    def blob(self, digest: str, size: int, content: bytes | None) -> None:
        self.seen[digest] = size
        manifest = _as_manifest(content) if content is not None else None
        if manifest is None:
            return
        try:
            children = manifest.children()
        except IntegrityError as exc:
            self.problems.append(f"manifest {digest} ({self.users(digest)}) is malformed: {exc}")
            return
        self.manifests[digest] = manifest
        self.media_types[digest] = manifest.media_type
        for child in children:
            if child.digest in self.omitted:
                continue
            if child.digest not in self.seen:
                self.forward.append((digest, child))
            elif self.seen[child.digest] != child.size:
                self.problems.append(
                    f"manifest {digest} ({self.users(digest)}) says blob {child.digest} is {child.size} bytes, "
                    f"the bundle holds {self.seen[child.digest]}"
                )

    def finish(self) -> None:
        for parent, child in self.forward:
            where = "comes after the manifest" if child.digest in self.seen else "is missing from the bundle"
            self.problems.append(
                f"blob {child.digest} ({self.users(child.digest)}) {where}: manifest {parent} references it"
            )
        listed = self.manifest.stored_blobs
        for digest, size in listed.items():
            if digest not in self.seen:
                self.problems.append(f"blob {digest} ({self.users(digest)}) is listed but missing from the bundle")
            elif self.seen[digest] != size:
                self.problems.append(
                    f"blob {digest} ({self.users(digest)}) is {self.seen[digest]} bytes, mirror-bundle.json says {size}"
                )
        for digest in self.seen.keys() - listed.keys():
            self.problems.append(f"blob {digest} is in the bundle but not listed in mirror-bundle.json")
        for image in self.manifest.images:
            self._image(image)
        self._index_json()

    def _image(self, image: ImageRecord) -> None:
        if image.digest in self.omitted:
            return
        if image.digest not in self.manifests:
            self.problems.append(f"image {image.source}: top manifest {image.digest} is not a manifest in the bundle")
            return
        if self.media_types[image.digest] != image.media_type or self.seen[image.digest] != image.size:
            self.problems.append(
                f"image {image.source}: manifest {image.digest} is {self.media_types[image.digest]}, "
                f"{self.seen[image.digest]} bytes; mirror-bundle.json says {image.media_type}, {image.size} bytes"
            )
        top = Descriptor(image.media_type, image.digest, image.size)
        needed = {d.digest for d in graph.walk(top, lambda d: self.manifests.get(d.digest))} - {image.digest}
        unlisted = sorted(needed - set(image.blobs))
        if unlisted:
            self.problems.append(f"image {image.source}: needs blob {unlisted[0]}, which its record does not list")
        # push uploads what ``manifests`` lists as manifests and everything else as blobs
        child_manifests = {digest for digest in needed if digest in self.manifests}
        for digest in sorted(child_manifests - set(image.manifests)):
            self.problems.append(f"image {image.source}: manifest {digest} is not listed among its manifests")
        for digest in sorted(set(image.manifests) - child_manifests - self.omitted):
            self.problems.append(f"image {image.source}: {digest} is listed as a manifest of it but is not one")

    def _index_json(self) -> None:
        if self.index is None:
            self.problems.append(f"{INDEX_JSON} is missing")
            return
        try:
            found = {}
            for item in self.index.get("manifests") or []:
                descriptor = Descriptor.from_json(item)
                found[descriptor.annotations.get(ANNOTATION_IMAGE_NAME)] = descriptor
        except (IntegrityError, AttributeError, TypeError) as exc:
            self.problems.append(f"{INDEX_JSON} is malformed: {exc}")
            return
        expected = {image.source: image for image in self.manifest.images}
        for source, image in expected.items():
            descriptor = found.get(source)
            wanted = (index_media_type(image.media_type), image.digest, image.size, image.tag)
            if descriptor is None:
                self.problems.append(f"{INDEX_JSON} has no entry for {source}")
            elif (descriptor.media_type, descriptor.digest, descriptor.size,
                  descriptor.annotations.get(ANNOTATION_REF_NAME)) != wanted:
                self.problems.append(f"{INDEX_JSON} entry for {source} does not match mirror-bundle.json")
        for source in found.keys() - expected.keys():
            self.problems.append(f"{INDEX_JSON} names {source!r}, which mirror-bundle.json does not list")


def _as_manifest(content: bytes) -> Manifest | None:
    """The blob parsed as a manifest or index, or None when it is something else (config, layer)."""
    if not content.lstrip()[:1] == b"{":
        return None
    try:
        doc = json.loads(content)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("schemaVersion") is None:
        return None
    try:
        return Manifest.from_bytes(content)
    except MirrorError:
        return None
