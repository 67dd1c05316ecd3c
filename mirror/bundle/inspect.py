"""``mirror inspect``: what a bundle holds, from mirror-bundle.json (its first entry) only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.reference import Reference
from ..model.target import target_repository
from ..units import human_size
from .format import BundleManifest, ImageRecord
from .reader import BundleReader


@dataclass
class ImageSummary:
    source: str
    digest: str
    media_type: str
    platforms: list[str]
    size: int  # top manifest plus every blob below it
    narrowed_from: str | None = None
    attachments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # grouped by KIND_GROUPS

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "digest": self.digest, "media_type": self.media_type,
                "platforms": list(self.platforms), "size": self.size, "narrowed_from": self.narrowed_from,
                "attachments": self.attachments}


# An image's attachments as inspect lists them: signatures, attestations, SBOMs, other referrers.
KIND_GROUPS = {"signature": "signatures", "attestation": "attestations", "sbom": "sboms", "referrer": "referrers"}


def _attachments(manifest: BundleManifest, image: ImageRecord) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {group: [] for group in KIND_GROUPS.values()}
    for record in manifest.attachments_of(image):
        assert record.attached_to is not None
        groups[KIND_GROUPS[record.attached_to.kind]].append({
            "tag": record.tag, "digest": record.digest, "artifact_type": record.attached_to.artifact_type,
            "subject": record.attached_to.subject, "size": manifest.image_size(record)})
    return groups


@dataclass
class ArtifactSummary:
    """A kit chart or file (mirror/kit) the bundle carries."""

    name: str
    version: str
    digest: str  # of its one layer: the file itself
    size: int
    url: str
    reference: str  # where push puts it, below the registry: charts/NAME:VERSION, files/COMPONENT:VERSION

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest, "size": self.size,
                "url": self.url, "reference": self.reference}


@dataclass
class BundleSummary:
    path: Path
    id: str
    created: str
    tool_version: str
    format_version: int
    topology: dict | None
    kind: str  # full or delta
    base: list[str]
    omitted: int  # blobs and manifests a delta leaves to its base
    omitted_size: int
    platforms_requested: list[str]
    blobs: int  # stored
    stored_size: int  # uncompressed, each shared blob once
    images_size: int  # the images' sizes summed
    shared_savings: int
    compressed_size: int  # the file(s) on disk
    parts: int
    images: list[ImageSummary] = field(default_factory=list)
    charts: list[ArtifactSummary] = field(default_factory=list)
    files: list[ArtifactSummary] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "id": self.id, "created": self.created, "tool_version": self.tool_version,
            "format_version": self.format_version, "topology": self.topology, "kind": self.kind,
            "base": list(self.base), "omitted": self.omitted, "omitted_size": self.omitted_size, "platforms_requested": list(self.platforms_requested), "blobs": self.blobs,
            "stored_size": self.stored_size, "images_size": self.images_size,
            "shared_savings": self.shared_savings, "compressed_size": self.compressed_size, "parts": self.parts,
            "images": [image.to_json() for image in self.images],
            "charts": [chart.to_json() for chart in self.charts],
            "files": [file.to_json() for file in self.files],
        }

    def render_text(self) -> str:
        lines = [f"Bundle {self.path}", f"  id        {self.id}",
                 f"  created   {self.created} by mirror {self.tool_version} (format {self.format_version})"]
        if self.topology:
            versions = self.topology.get("versions") or {}
            detail = ", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, dict) else ""
            lines.append(f"  topology  {self.topology.get('mode', '?')}" + (f" ({detail})" if detail else ""))
        if self.platforms_requested:
            lines.append(f"  platforms {', '.join(self.platforms_requested)}")
        lines.append(f"  kind      {self.kind}")
        for base_id in self.base:
            lines.append(f"  delta of  {base_id}")
        if self.base:
            lines.append(f"  omitted   {self.omitted} blob(s) and manifest(s), {human_size(self.omitted_size)}, "
                         "left to the base")
        rows = [("IMAGE", "PLATFORMS", "SIZE", "DIGEST")]
        for image in self.images:
            digest = image.digest[:19]
            if image.narrowed_from:
                digest += f" (narrowed from {image.narrowed_from[:19]})"
            rows.append((image.source, ",".join(image.platforms) or "-", human_size(image.size), digest))
            for group, items in image.attachments.items():
                for item in items:
                    where = item["tag"] or f"referrer of {item['subject'][:19]}"
                    rows.append((f"  + {group[:-1]} {where}", item["artifact_type"] or "-",
                                 human_size(item["size"]), item["digest"][:19]))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines.append("")
        for row in rows if self.images or not (self.charts or self.files) else []:
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip())
        for title, artifacts in (("CHART", self.charts), ("FILE", self.files)):
            if artifacts:
                lines.append("")
                lines += _artifact_rows(title, artifacts)
        lines.append("")
        lines.append(
            f"{len(self.images)} image(s){self._attached()}, " + "".join(
                f"{len(found)} {what}(s), " for what, found in (("chart", self.charts), ("file", self.files))
                if found) + f"{self.blobs} blob(s): {human_size(self.images_size)} as separate images, "
            f"{human_size(self.stored_size)} stored ({human_size(self.shared_savings)} saved by sharing), "
            f"{human_size(self.compressed_size)} compressed"
            + (f" in {self.parts} parts" if self.parts > 1 else "")
        )
        return "\n".join(lines) + "\n"

    def _attached(self) -> str:
        count = _attached_count(self.images)
        return f" with {count} signature(s), attestation(s), SBOM(s) and referrer(s)" if count else ""


def _attached_count(images: list[ImageSummary]) -> int:
    return sum(len(items) for image in images for items in image.attachments.values())


def _artifact_rows(title: str, artifacts: list[ArtifactSummary]) -> list[str]:
    rows = [(title, "VERSION", "SIZE", "DIGEST", "SOURCE")]
    rows += [(a.name, a.version, human_size(a.size), a.digest[:19], a.url) for a in artifacts]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<19}  {r[4]}".rstrip()
            for r in rows]


def summarize_bundle(path: Path) -> BundleSummary:
    """What a bundle holds, from its first entry only: instant even for a 10 GB bundle."""
    path = Path(path)
    with BundleReader(path) as reader:
        manifest, parts = reader.manifest, reader.parts
    return BundleSummary(
        path=path,
        id=manifest.id,
        created=manifest.created,
        tool_version=manifest.tool_version,
        format_version=manifest.format_version,
        topology=manifest.topology,
        kind=manifest.kind,
        base=list(manifest.base),
        omitted=len(manifest.omitted),
        omitted_size=sum(manifest.blobs.get(digest, 0) for digest in manifest.omitted),  # sizes pull records
        platforms_requested=list(manifest.platforms_requested),
        blobs=len(manifest.stored_blobs),
        stored_size=manifest.total_size,
        images_size=manifest.images_size,
        shared_savings=manifest.shared_savings,
        compressed_size=sum(part.stat().st_size for part in parts),
        parts=len(parts),
        images=[
            ImageSummary(image.source, image.digest, image.media_type, list(image.platforms),
                         manifest.image_size(image), image.narrowed_from, _attachments(manifest, image))
            for image in manifest.subjects if image.artifact is None
        ],
        charts=_artifacts(manifest.images, "chart"),
        files=_artifacts(manifest.images, "file"),
    )


def _artifacts(images: list[ImageRecord], kind: str) -> list[ArtifactSummary]:
    return [ArtifactSummary(image.artifact.name, image.artifact.version, image.artifact.layer, image.artifact.size,
                            image.artifact.url, target_repository(Reference.parse(image.source))
                            + f":{image.tag}")
            for image in images if image.artifact is not None and image.artifact.kind == kind]

