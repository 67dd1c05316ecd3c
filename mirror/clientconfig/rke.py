"""RKE ``cluster.yml`` ``private_registries`` entry (``is_default`` so system images come from it)."""

from __future__ import annotations

from typing import Any

from . import yamltext
from .model import ClientConfig, GeneratedFile, NodeRegistry


def generate(target: NodeRegistry, **_: Any) -> ClientConfig:
    url = target.registry + (f"/{target.prefix.strip('/')}" if target.prefix.strip("/") else "")
    entry: dict[str, Any] = {"url": url}
    if target.username:
        entry["user"] = target.username
        entry["password"] = target.password_value()
    entry["is_default"] = True
    text = yamltext.dump(
        {"private_registries": [entry]},
        [f"Add to RKE's cluster.yml: system images are pulled as {url}/rancher/... (rke up)."],
    )
    result = ClientConfig([GeneratedFile("cluster-private-registries.yml", "cluster.yml (merge)", text,
                                         secret=target.password is not None)])
    if target.ca_file and not target.plain_http:
        install = f"/etc/docker/certs.d/{target.registry}/ca.crt"
        result.files.append(GeneratedFile(f"docker-certs.d/{target.registry}/ca.crt", install,
                                          copy_of=target.ca_file))
        result.notes.append(f"RKE nodes pull with Docker: put the CA at {install} on every node")
    if target.plain_http or target.insecure:
        result.notes.append(f'RKE nodes pull with Docker: add "insecure-registries": ["{target.registry}"] '
                            "to /etc/docker/daemon.json on every node (see `mirror config docker`)")
    result.notes += target.password_note("cluster-private-registries.yml")
    return result
