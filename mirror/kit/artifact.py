"""A kit item as an OCI artifact: a chart as Helm stores it in a registry, a file as ORAS does.

Chart: config ``application/vnd.cncf.helm.config.v1+json`` (its Chart.yaml
as JSON, which ``helm show chart`` reads), one layer
``application/vnd.cncf.helm.chart.content.v1.tar+gzip``: the .tgz byte for
byte. File: an empty config, one ``application/vnd.oci.image.layer.v1.tar``
layer holding the file byte for byte, titled with its name
(``oras pull`` writes it under that name).
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass

import yaml

from ..bundle.format import ArtifactRecord
from ..bundle.store import BlobStore
from ..errors import UsageError
from ..model.oci import OCI_MANIFEST, Manifest, sha256_digest
from .items import CHART, KitItem

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
FILE_LAYER = "application/vnd.oci.image.layer.v1.tar"
FILE_ARTIFACT = "application/vnd.mirror.kit.file.v1"
TITLE = "org.opencontainers.image.title"
VERSION = "org.opencontainers.image.version"
MAX_CHART_YAML = 1 << 20
MAX_CHART_YAML_OFFSET = 100 << 20  # Helm's own limit on a chart's unpacked size: Chart.yaml comes before


@dataclass
class Artifact:
    item: KitItem
    manifest: Manifest
    blobs: dict[str, int]  # config and layer: digest -> size, all in the store
    record: ArtifactRecord


def build(item: KitItem, layer: str, size: int, store: BlobStore) -> Artifact:
    """The artifact of ``item``, whose content is blob ``layer`` in ``store``; config and manifest go there too."""
    if item.kind == CHART:
        config = chart_config(store, layer, item)
        config_type, layer_type, annotations = HELM_CONFIG, HELM_CHART, {}
        head: dict = {}
    else:
        config = b"{}"
        config_type, layer_type, annotations = EMPTY_CONFIG, FILE_LAYER, {TITLE: item.name}
        head = {"artifactType": FILE_ARTIFACT}
    config_digest = sha256_digest(config)
    store.put_bytes(config_digest, config)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        **head,
        "config": {"mediaType": config_type, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": layer, "size": size,
                    **({"annotations": annotations} if annotations else {})}],
        "annotations": {TITLE: item.file_name, VERSION: item.version},
    }
    data = json.dumps(doc, separators=(",", ":")).encode()
    manifest = Manifest(data, OCI_MANIFEST, sha256_digest(data))
    store.put_bytes(manifest.digest, data)
    record = ArtifactRecord(item.kind, item.name, item.version, item.url, item.folder, item.file_name, layer, size,
                            item.executable, item.checked_by)
    return Artifact(item, manifest, {config_digest: len(config), layer: size}, record)


def chart_config(store: BlobStore, layer: str, item: KitItem) -> bytes:
    """Chart.yaml of the chart in blob ``layer``, as JSON; one that names another chart or version is refused."""
    try:
        with store.open(layer) as blob, tarfile.open(fileobj=blob, mode="r:gz") as tar:
            for member in tar:
                if member.offset_data > MAX_CHART_YAML_OFFSET:
                    break
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == "Chart.yaml" and member.isfile() and member.size <= MAX_CHART_YAML:
                    metadata = yaml.safe_load(tar.extractfile(member).read())
                    break
            else:
                metadata = None
    except (tarfile.TarError, OSError, EOFError, yaml.YAMLError) as exc:
        raise UsageError(f"{item.url}: not a Helm chart ({type(exc).__name__})") from None
    if not isinstance(metadata, dict):
        raise UsageError(f"{item.url}: not a Helm chart (no Chart.yaml)")
    if str(metadata.get("name")) != item.name or str(metadata.get("version")) != item.version:
        raise UsageError(f"{item.url}: holds chart {metadata.get('name')} {metadata.get('version')}, "
                         f"not {item.name} {item.version}")
    return json.dumps(metadata, separators=(",", ":"), default=str).encode()
