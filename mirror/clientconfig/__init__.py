"""Client configuration that makes nodes pull from the private registry.

One module per output kind (K3s/RKE2 registries.yaml, RKE cluster.yml,
containerd certs.d, Docker daemon.json, Rancher helm values). Every one
computes where an image lives with mirror.layout.target_repository, the
function push uses, so nodes ask for exactly what was pushed.
"""

from __future__ import annotations

from typing import Callable

from . import containerd, docker, rancher, registries_yaml, rke
from .model import ClientConfig, GeneratedFile, NodeRegistry

GENERATORS: dict[str, Callable[..., ClientConfig]] = {
    "k3s": registries_yaml.k3s,
    "rke2": registries_yaml.rke2,
    "rke": rke.generate,
    "containerd": containerd.generate,
    "docker": docker.generate,
    "rancher": rancher.generate,
}

__all__ = ["GENERATORS", "ClientConfig", "GeneratedFile", "NodeRegistry"]
