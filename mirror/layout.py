"""Where a source image lands in the target registry (DESIGN.md, "Registry layout").

``docker.io/rancher/x`` -> ``rancher/x``; ``docker.io/library/busybox`` ->
``library/busybox``; any other registry keeps its host as the first path
segment: ``quay.io/jetstack/c`` -> ``quay.io/jetstack/c`` (a port becomes ``_PORT``:
``harbor.corp:8443/x`` -> ``harbor.corp_8443/x``). An optional prefix
goes in front of everything (Harbor projects). The client configuration
generators use the same function, so nodes ask for what was pushed.
"""

from __future__ import annotations

from .reference import DOCKER_HUB, Reference


def target_repository(source: Reference, prefix: str = "") -> str:
    # A port cannot stand in a repository name: harbor.corp:8443 becomes harbor.corp_8443.
    host = source.registry.replace(":", "_")
    path = source.repository if source.registry == DOCKER_HUB else f"{host}/{source.repository}"
    prefix = prefix.strip("/")
    return f"{prefix}/{path}" if prefix else path
