"""What a bundle holds: the ``mirror-bundle.json`` model and the layout names.

docs/bundle-format.md: a zstd-compressed pax tar holding an OCI
image layout plus ``mirror-bundle.json``, which comes first so a reader knows
every image and blob before it has read a single layer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__
from ..clock import parse_time, utc_now
from ..errors import IntegrityError
from ..model.oci import MAX_MANIFEST_SIZE, digest_hex
from ..model.reference import Reference

FORMAT_VERSION = 1
BUNDLE_MANIFEST = "mirror-bundle.json"
OCI_LAYOUT = "oci-layout"
INDEX_JSON = "index.json"
BLOB_DIR = "blobs/sha256/"
BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")
OCI_LAYOUT_DOC = {"imageLayoutVersion": "1.0.0"}
# Manifests, indexes, index.json and oci-layout are read whole into memory;
# anything claiming to be larger is refused rather than trusted.
MAX_DOCUMENT_SIZE = MAX_MANIFEST_SIZE


def blob_name(digest: str) -> str:
    return BLOB_DIR + digest_hex(digest)


ATTACHMENT_KINDS = ("signature", "attestation", "sbom", "referrer")


@dataclass
class Attached:
    """What makes a record an attachment: the manifest it is about, and what it is (docs/signatures.md)."""

    subject: str  # the digest of the image, or of one of its platform manifests, it is attached to
    kind: str  # one of ATTACHMENT_KINDS
    artifact_type: str  # its artifactType, else its first layer's media type

    @classmethod
    def from_json(cls, data: Any) -> "Attached | None":
        if data is None:
            return None
        attached = cls(str(data["subject"]), str(data["kind"]), str(data.get("artifact_type") or ""))
        digest_hex(attached.subject)
        if attached.kind not in ATTACHMENT_KINDS:
            raise ValueError(f"unknown attachment kind {attached.kind!r}")
        return attached


@dataclass
class ArtifactRecord:
    """What a chart or file artifact is, beside its image record (mirror/kit): for inspect and extract."""

    kind: str  # "chart" or "file"
    name: str  # the chart's name, or the file's
    version: str
    url: str  # where it was downloaded from
    folder: str  # the folder extract writes it to
    file: str  # its name on disk
    layer: str  # the digest of its one layer: the file, byte for byte
    size: int
    executable: bool = False
    checked_by: str | None = None  # the index or sha256sum file its digest was checked against

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ArtifactRecord":
        strings = {key: data[key] for key in ("kind", "name", "version", "url", "folder", "file", "layer")}
        if not all(isinstance(value, str) for value in strings.values()):
            raise ValueError(f"artifact {data.get('name')!r} has a field that is not a string")
        checked_by = data.get("checked_by")
        record = cls(**strings, size=_size(data["size"]), executable=data.get("executable") is True,
                     checked_by=checked_by if isinstance(checked_by, str) else None)
        if record.kind not in ("chart", "file"):
            raise ValueError(f"artifact kind {record.kind!r}")
        digest_hex(record.layer)
        return record


@dataclass
class ImageRecord:
    source: str  # full normalised source reference with tag
    digest: str  # the top manifest/index stored in the bundle
    media_type: str
    size: int  # of the top manifest/index
    platforms: list[str]
    blobs: list[str]  # everything the image needs below its top digest
    narrowed_from: str | None = None  # original index digest when --platform narrowed it
    manifests: list[str] = field(default_factory=list)  # which of `blobs` are child manifests (push needs it)
    artifact: ArtifactRecord | None = None  # a kit chart or file (mirror/kit) rather than an image
    attached_to: Attached | None = None  # set on a signature, attestation, SBOM or referrer of another record

    @property
    def tag(self) -> str | None:
        return Reference.parse(self.source).tag

    @property
    def is_attachment(self) -> bool:
        return self.attached_to is not None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ImageRecord":
        record = cls(
            source=str(data["source"]),
            digest=data["digest"],
            media_type=str(data["media_type"]),
            size=_size(data["size"]),
            platforms=[str(p) for p in data.get("platforms") or []],
            blobs=list(data.get("blobs") or []),
            narrowed_from=data.get("narrowed_from"),
            manifests=list(data.get("manifests") or []),
            artifact=ArtifactRecord.from_json(data["artifact"]) if data.get("artifact") else None,
            attached_to=Attached.from_json(data.get("attached_to")),
        )
        for digest in [record.digest, *record.blobs, *record.manifests, *filter(None, [record.narrowed_from])]:
            digest_hex(digest)
        return record


@dataclass
class BundleManifest:
    images: list[ImageRecord]
    blobs: dict[str, int]  # every digest stored in the bundle (top manifests too) -> size
    tool_version: str = __version__
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=utc_now)
    topology: dict | None = None
    base: list[str] = field(default_factory=list)  # ids of the inventories or bundles a delta builds on
    omitted: list[str] = field(default_factory=list)  # blobs and manifests a delta leaves to its base
    # inventory id -> HOST[/PREFIX] it was taken of (an inventory of several: theirs, ", "-joined)
    base_registry: dict[str, str] = field(default_factory=dict)
    base_names: dict[str, str] = field(default_factory=dict)  # base id -> the file name pull was given it as
    platforms_requested: list[str] = field(default_factory=list)
    id: str = ""  # derived from the image digests when not given

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.derived_id()

    def describe_base(self) -> str:
        """The bases a delta builds on, as people know them: ``have.json (sha256:…)``, their ids alone before
        bundles recorded the file names."""
        return ", ".join(f"{self.base_names[i]} ({i})" if i in self.base_names else i for i in self.base)

    def derived_id(self) -> str:
        """Stable identity a delta bundle names as its base: the set of image digests."""
        text = "\n".join(sorted(image.digest for image in self.images))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @property
    def subjects(self) -> list[ImageRecord]:
        """The images themselves, without their attachments."""
        return [image for image in self.images if not image.is_attachment]

    def attachments_of(self, image: ImageRecord) -> list[ImageRecord]:
        return attachments_of(image, self.images)

    @property
    def kind(self) -> str:
        """``delta`` when built on a base (some content left out), else ``full``."""
        return "delta" if self.base else "full"

    @property
    def created_timestamp(self) -> int:
        """``created`` as seconds since the epoch (tar entries carry it as mtime)."""
        return _timestamp(self.created)

    @property
    def stored_blobs(self) -> dict[str, int]:
        """The blobs physically in the bundle (``blobs`` less anything omitted)."""
        omitted = set(self.omitted)
        return {digest: size for digest, size in self.blobs.items() if digest not in omitted}

    @property
    def total_size(self) -> int:
        """Bytes stored (uncompressed), each shared blob counted once."""
        return sum(self.stored_blobs.values())

    def image_size(self, image: ImageRecord) -> int:
        """What the image needs: its top manifest plus every blob below it whose size is known."""
        below = set(image.blobs) - {image.digest}
        return image.size + sum(self.blobs.get(digest, 0) for digest in below)

    @property
    def images_size(self) -> int:
        return sum(self.image_size(image) for image in self.images)

    @property
    def shared_savings(self) -> int:
        """Bytes not stored twice: per-image stored sizes summed, minus what is stored."""
        stored = self.stored_blobs
        separately = sum(
            sum(stored.get(digest, 0) for digest in set(image.blobs) | {image.digest}) for image in self.images
        )
        return separately - self.total_size

    def to_json(self) -> bytes:
        self.id = self.derived_id()
        doc = {
            "format_version": self.format_version,
            "tool_version": self.tool_version,
            "id": self.id,
            "kind": self.kind,
            "created": self.created,
            "base": list(self.base),
            "base_registry": dict(self.base_registry),
            "base_names": dict(self.base_names),
            "topology": self.topology,
            "platforms_requested": list(self.platforms_requested),
            "totals": {
                "images": len(self.subjects),
                "attachments": len(self.images) - len(self.subjects),
                "blobs": len(self.stored_blobs),
                "stored_size": self.total_size,
                "images_size": self.images_size,
                "shared_savings": self.shared_savings,
            },
            "images": [_record_json(image) for image in self.images],
            "blobs": dict(self.blobs),
            "omitted": list(self.omitted),
        }
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> "BundleManifest":
        """Parse and check; the totals in the file are ignored (recomputed)."""
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"{BUNDLE_MANIFEST} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise IntegrityError(f"{BUNDLE_MANIFEST} is not a JSON object")
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise IntegrityError(
                f"bundle format version {version!r} is not supported by mirror {__version__} "
                f"(it reads version {FORMAT_VERSION})"
            )
        try:
            blobs = {str(digest): _size(size) for digest, size in dict(doc["blobs"]).items()}
            for digest in blobs:
                digest_hex(digest)
            omitted = [str(d) for d in doc.get("omitted") or []]
            for digest in omitted:
                digest_hex(digest)
            base = _base_ids(doc.get("base"))
            kind = doc.get("kind", "full")  # bundles written before deltas existed have no kind
            if kind not in ("full", "delta") or (kind == "delta") != bool(base):
                raise ValueError(f"kind {kind!r} with base {base!r}")
            manifest = cls(
                images=[ImageRecord.from_json(image) for image in doc["images"]],
                blobs=blobs,
                tool_version=str(doc.get("tool_version", "")),
                format_version=version,
                created=str(doc["created"]),
                topology=doc.get("topology"),
                base=base,
                omitted=omitted,
                base_registry={str(k): str(v) for k, v in dict(doc.get("base_registry") or {}).items()},
                base_names={str(k): str(v)[:255] for k, v in dict(doc.get("base_names") or {}).items()},
                platforms_requested=[str(p) for p in doc.get("platforms_requested") or []],
                id=str(doc.get("id") or ""),
            )
            _timestamp(manifest.created)
        except IntegrityError as exc:
            raise IntegrityError(f"malformed {BUNDLE_MANIFEST}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IntegrityError(f"malformed {BUNDLE_MANIFEST}: {type(exc).__name__}: {exc}") from None
        if manifest.id != manifest.derived_id():
            raise IntegrityError(f"malformed {BUNDLE_MANIFEST}: id {manifest.id} does not match its images")
        if manifest.topology is not None and not isinstance(manifest.topology, dict):
            raise IntegrityError(f"malformed {BUNDLE_MANIFEST}: topology is not an object")
        return manifest


def attachments_of(image: ImageRecord, records: list[ImageRecord]) -> list[ImageRecord]:
    """The records attached to ``image``: in its repository, about its digest or one of its manifests."""
    about = {image.digest, *image.manifests, *filter(None, [image.narrowed_from])}
    name = Reference.parse(image.source).name
    return [record for record in records if record.attached_to is not None
            and record.attached_to.subject in about and Reference.parse(record.source).name == name]


def is_cosign_signature(record: ImageRecord) -> bool:
    """A ``.sig`` image: cosign's tag scheme, simple signing payloads with their signatures."""
    return record.attached_to is not None and record.attached_to.kind == "signature" and record.tag is not None


def _record_json(image: ImageRecord) -> dict[str, Any]:
    """A record: ``artifact`` only on a kit chart or file, ``attached_to`` only on an attachment, so an
    image's record reads as before."""
    record = asdict(image)
    for optional in ("artifact", "attached_to"):
        if record[optional] is None:
            del record[optional]
    return record


def _base_ids(value: Any) -> list[str]:
    """``base`` as a list of ids: absent, null (format 1 before deltas) and one id all read."""
    ids = [] if value is None else [value] if isinstance(value, str) else list(value)
    for base_id in ids:
        digest_hex(base_id)
    return [str(base_id) for base_id in ids]


def _timestamp(text: str) -> int:
    return int(parse_time(text).timestamp())


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid size {value!r}")
    return value
