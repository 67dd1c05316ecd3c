"""OCI and Docker manifest types: media types, descriptors, platforms.

Manifests are always kept as the exact bytes a registry served; the parsed
views here only read them (to find children and platforms), never re-encode.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import IntegrityError, RegistryError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_TYPES = INDEX_TYPES + IMAGE_TYPES
ACCEPT = ", ".join(MANIFEST_TYPES)

# Manifests and indexes are read whole into memory: anything larger is refused, never read.
MAX_MANIFEST_SIZE = 4 << 20

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}")


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest; refuses anything else (no path tricks)."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or not _HEX64.fullmatch(hexpart):
        raise IntegrityError(f"unsupported or malformed digest {digest!r}")
    return hexpart


_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """``linux/amd64``, ``linux/arm64/v8``, ``linux/arm/v7``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(*parts)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Platform":
        return cls(data.get("os", ""), data.get("architecture", ""), data.get("variant") or None)

    def matches(self, wanted: "Platform") -> bool:
        """Whether this (an index entry) satisfies a requested platform.

        A request without a variant takes any variant; a missing variant is
        ``v8`` for ``arm64`` and ``v7`` for ``arm``, as containerd reads them.
        """
        if (self.os, self.architecture) != (wanted.os, wanted.architecture):
            return False
        if wanted.variant is None:
            return True
        return (self.variant or _DEFAULT_VARIANT.get(self.architecture)) == wanted.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Descriptor":
        try:
            digest, size, media_type = data["digest"], data["size"], data.get("mediaType", "")
            digest_hex(digest)
            # A size is a JSON integer: int() would take true, 1.5, " 12" and "1_000" for one.
            if type(size) is not int or not 0 <= size < 1 << 63:
                raise ValueError(f"size {size!r} is no byte count")
            if not isinstance(media_type, str):
                raise ValueError(f"mediaType {media_type!r} is no string")
            return cls(
                media_type=media_type,
                digest=digest,
                size=size,
                platform=Platform.from_json(data["platform"]) if data.get("platform") else None,
                annotations=dict(data.get("annotations") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"malformed descriptor {repr(data)[:200]}: {str(exc)[:200]}") from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            out["platform"] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as served: its bytes, and what it points at."""

    data: bytes
    media_type: str
    digest: str

    @classmethod
    def from_bytes(cls, data: bytes, content_type: str | None = None) -> "Manifest":
        """Identify a served manifest; schema1 and unknown types are refused."""
        try:
            doc = json.loads(data)
        except ValueError:
            raise IntegrityError("manifest is not valid JSON") from None
        if not isinstance(doc, dict):
            raise IntegrityError("manifest is not a JSON object")
        media_type = doc.get("mediaType") or _base_type(content_type)
        if not media_type:
            # OCI allows omitting mediaType; tell index from image by shape.
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise RegistryError(
                "image uses Docker schema1 manifests, which are deprecated and cannot be "
                "mirrored with their digests; ask the publisher for a schema2/OCI image"
            )
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(f"unsupported manifest media type {media_type!r}")
        return cls(data=data, media_type=media_type, digest=sha256_digest(data))

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))

    def children(self) -> list[Descriptor]:
        """Index: the platform manifests. Image: the config, then the layers."""
        doc = self.document
        if self.is_index:
            return [Descriptor.from_json(d) for d in doc.get("manifests") or []]
        found = [Descriptor.from_json(doc["config"])] if doc.get("config") else []
        found += [Descriptor.from_json(d) for d in doc.get("layers") or []]
        return found


def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip()
