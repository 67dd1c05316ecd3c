"""Docker Engine ``daemon.json`` fragment and ``/etc/docker/certs.d/<host:port>/ca.crt``.

Docker mirrors docker.io only (``registry-mirrors``, host without a path):
images from other registries must be pulled by their target names.
"""

from __future__ import annotations

import json
from typing import Any

from ..model.reference import DOCKER_HUB
from .model import ClientConfig, GeneratedFile, Target

CERTS_DIR = "/etc/docker/certs.d"


def daemon_json(target: Target) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if not target.path_prefix(DOCKER_HUB):
        config["registry-mirrors"] = [target.endpoint]
    if target.plain_http or target.insecure:
        config["insecure-registries"] = [target.registry]
    return config


def generate(target: Target, **_: Any) -> ClientConfig:
    result = ClientConfig([GeneratedFile("daemon.json", "/etc/docker/daemon.json (merge)",
                                         json.dumps(daemon_json(target), indent=2) + "\n")])
    if target.ca_file and not target.plain_http:
        install = f"{CERTS_DIR}/{target.registry}/ca.crt"
        result.files.append(GeneratedFile(f"certs.d/{target.registry}/ca.crt", install, copy_of=target.ca_file))
    if target.path_prefix(DOCKER_HUB):
        result.notes.append(f"Docker cannot mirror docker.io to a path ({target.prefix}): pull images as "
                            f"{target.registry}/{target.path_prefix(DOCKER_HUB)}rancher/...")
    for source in (s for s in target.source_registries if s != DOCKER_HUB):
        result.notes.append(
            f"Docker can only mirror docker.io: pull {source} images by their target names, "
            f"e.g. {source}/NS/IMAGE as {target.registry}/{target.path_prefix(source)}NS/IMAGE")
    if target.username:
        result.notes.append(f"daemon.json holds no credentials: run `docker login {target.registry}` on each host")
    result.notes.append("restart dockerd (or `kill -HUP` it: registry-mirrors is reloadable) after merging daemon.json")
    return result
