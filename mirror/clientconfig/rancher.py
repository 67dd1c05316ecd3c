"""Rancher's side: helm values for Rancher and cert-manager, and the single-node ``docker run`` line.

Image repositories come from the manifests (the cert-manager list of the
chosen version, Rancher's server image) through target_repository.
"""

from __future__ import annotations

import shlex
from typing import Any

from .. import lists
from ..layout import target_repository
from ..reference import Reference
from . import yamltext
from .model import ClientConfig, GeneratedFile, Target


def _default_registry(target: Target) -> str:
    prefix = target.prefix.strip("/")
    return f"{target.registry}/{prefix}" if prefix else target.registry


def rancher_values(target: Target) -> dict[str, Any]:
    return {"systemDefaultRegistry": _default_registry(target), "useBundledSystemChart": True}


def cert_manager_values(target: Target, cert_manager_version: str | None) -> dict[str, Any]:
    """helm values pointing every cert-manager image at the private registry."""
    _, images = lists.component_images("cert-manager", cert_manager_version)
    keys = lists.rancher_settings()["cert_manager_helm_values"]
    values: dict[str, Any] = {}
    for ref in images:
        dotted = keys.get(ref.repository.rsplit("/", 1)[-1])
        if dotted is None:
            continue
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = f"{target.registry}/{target_repository(ref, target.prefix)}"
    return values


def docker_run(target: Target, rancher_version: str) -> str:
    server = Reference.parse(f"{lists.rancher_settings()['server_image']}:{rancher_version}")
    image = f"{target.registry}/{target_repository(server, target.prefix)}:{server.tag}"
    argv = ["docker", "run", "-d", "--restart=unless-stopped", "-p", "80:80", "-p", "443:443", "--privileged",
            "-e", f"CATTLE_SYSTEM_DEFAULT_REGISTRY={_default_registry(target)}",
            "-e", "CATTLE_SYSTEM_CATALOG=bundled", image]
    return " ".join(shlex.quote(a) for a in argv)


def docker_run_file(target: Target, rancher_version: str | None) -> GeneratedFile:
    """rancher-docker-run.sh: the single-node install, every image by its full name in the registry."""
    rancher_version, _ = lists.component_images("rancher", rancher_version)  # unknown version: usage error
    return GeneratedFile("rancher-docker-run.sh", "single-node install (run on the Docker host)",
                         "#!/bin/sh\n# Rancher on a single Docker node, images from the private registry.\n"
                         + docker_run(target, rancher_version) + "\n")


def generate(target: Target, *, rancher_version: str | None = None, cert_manager_version: str | None = None,
             **_: Any) -> ClientConfig:
    rancher_version, _ = lists.component_images("rancher", rancher_version)  # unknown version: usage error
    result = ClientConfig()
    result.files.append(GeneratedFile("rancher-values.yaml", "helm install rancher -f rancher-values.yaml",
                                      yamltext.dump(rancher_values(target), [
                                          "Rancher's chart puts systemDefaultRegistry in front of every image it "
                                          "deploys, its own included."])))
    result.files.append(GeneratedFile("cert-manager-values.yaml", "helm install cert-manager -f cert-manager-values.yaml",
                                      yamltext.dump(cert_manager_values(target, cert_manager_version))))
    result.files.append(docker_run_file(target, rancher_version))
    if target.username:
        result.notes.append(f"run `docker login {target.registry}` (`mirror config docker` writes the line) before "
                            "the single-node `docker run`; cluster nodes get credentials from registries.yaml "
                            "(`mirror config k3s|rke2`)")
    return result
