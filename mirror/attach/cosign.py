"""cosign's formats, as cosign writes them (sigstore/cosign pkg/oci, sigstore/sigstore pkg/signature/payload).

A signature of image ``sha256:HEX`` is the image tagged ``sha256-HEX.sig`` in the same
repository; each of its layers is a simple signing payload (media type
``application/vnd.dev.cosign.simplesigning.v1+json``)::

    {"critical": {"identity": {"docker-reference": "index.docker.io/library/busybox"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "cosign container image signature"},
     "optional": null}

with the base64 signature over those exact bytes in the layer's annotation
``dev.cosignproject.cosign/signature``. Attestations (``.att``, DSSE envelopes) and
SBOMs (``.sbom``) use the same tag scheme. OCI 1.1 referrers name their subject
instead; where a registry does not index them, the image-spec's referrers tag
schema, an index tagged ``sha256-HEX``, lists them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..errors import UsageError
from ..model.oci import Manifest, digest_hex
from ..model.reference import Reference

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
SIGNATURE_TYPE = "cosign container image signature"

# cosign's tag suffixes and what each attachment is.
TAG_KINDS = {"sig": "signature", "att": "attestation", "sbom": "sbom"}
MAX_PAYLOAD = 1 << 20  # a simple signing payload is a few hundred bytes; larger ones are not read


def tag_for(digest: str, suffix: str | None = None) -> str:
    """``sha256:HEX`` -> ``sha256-HEX.SUFFIX`` (cosign), or ``sha256-HEX`` (the referrers tag schema)."""
    tag = "sha256-" + digest_hex(digest)
    return f"{tag}.{suffix}" if suffix else tag


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+/-]{0,254}")


_ATTACHMENT_TAG = re.compile(r"sha256-([0-9a-f]{64})(?:\.(?:sig|att|sbom))?")


def subject_of_tag(tag: str) -> str | None:
    """The digest an attachment tag is about (``sha256-HEX.sig``, ``.att``, ``.sbom``, the referrers tag
    schema's ``sha256-HEX``); None for any other tag."""
    match = _ATTACHMENT_TAG.fullmatch(tag)
    return f"sha256:{match.group(1)}" if match else None


def artifact_type(manifest: Manifest) -> str:
    """What an attachment holds: its artifactType, else its first layer's media type, else its config's.

    A peer's text that is no media type (too long, spaces, control characters) reads as "".
    """
    doc = manifest.document
    layers = doc.get("layers") or []
    config = doc.get("config")
    for candidate in (doc.get("artifactType"),
                      layers[0].get("mediaType") if layers and isinstance(layers[0], dict) else None,
                      config.get("mediaType") if isinstance(config, dict) else None):
        if isinstance(candidate, str) and candidate:
            return candidate if _MEDIA_TYPE.fullmatch(candidate) else ""
    return ""


def shown(text: str, limit: int = 200) -> str:
    """A peer's text for a one-line message: quoted, escaped, cut."""
    return json.dumps(text[:limit])


def referrer_kind(kind_of: str) -> str:
    """An OCI 1.1 referrer's kind, from its artifact type."""
    text = kind_of.lower()
    if any(word in text for word in ("spdx", "cyclonedx", "syft", "sbom")):
        return "sbom"
    if any(word in text for word in ("in-toto", "dsse", "provenance", "attestation")):
        return "attestation"
    if any(word in text for word in ("signature", "simplesigning", "sigstore.bundle")):
        return "signature"
    return "referrer"


@dataclass(frozen=True)
class Payload:
    """A simple signing payload: which image (digest) of which repository the signer vouches for."""

    digest: str
    reference: str

    @classmethod
    def parse(cls, data: bytes) -> "Payload":
        """Raises ValueError naming what is wrong."""
        if len(data) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(data)} bytes is larger than any simple signing payload")
        doc = json.loads(data)
        critical = doc.get("critical") if isinstance(doc, dict) else None
        if not isinstance(critical, dict) or critical.get("type") != SIGNATURE_TYPE:
            raise ValueError("payload is no cosign container image signature")
        digest = (critical.get("image") or {}).get("docker-manifest-digest")
        reference = (critical.get("identity") or {}).get("docker-reference")
        if not isinstance(digest, str) or not isinstance(reference, str):
            raise ValueError("payload names no docker-manifest-digest or docker-reference")
        return cls(digest, reference)

    def names_repository(self, name: str) -> bool:
        """Whether docker-reference (``index.docker.io/x/y``, ``reg/x/y:tag``) is the repository ``name``."""
        try:
            return Reference.parse(self.reference).name == name
        except UsageError:
            return False
