"""Rancher's side: helm values for Rancher and cert-manager, and the single-node ``docker run`` line.

Image repositories come from the manifests (the cert-manager list of the
chosen version, Rancher's server image) through target_repository. The
values set what the Rancher air-gap guide's ``helm install`` sets
(``rancherImage``, ``certmanager.version``, ``systemDefaultRegistry``,
``useBundledSystemChart``). Given the bundle that was pushed, an image the
files name but the bundle lacks is refused: in an air gap it could only end
in ImagePullBackOff.
"""

from __future__ import annotations

import shlex
from typing import Any, Collection

from .. import lists
from ..errors import UsageError
from ..model.reference import Reference
from ..model.target import target_repository
from . import install_scripts, yamltext
from .model import ClientConfig, GeneratedFile, NodeRegistry


def _default_registry(target: NodeRegistry) -> str:
    prefix = target.prefix.strip("/")
    return f"{target.registry}/{prefix}" if prefix else target.registry


def server_image(rancher_version: str | None) -> Reference:
    """Rancher's server image at ``rancher_version`` (default: the manifests' default version)."""
    rancher_version, _ = lists.component_images("rancher", rancher_version)  # unknown version: usage error
    return Reference.parse(f"{lists.rancher_settings()['server_image']}:{rancher_version}")


def require_bundled(images: list[Reference], bundled: Collection[Reference] | None) -> None:
    """Refuse to name images the pushed bundle does not hold (``bundled`` None: not known, not checked)."""
    if bundled is None:
        return
    held = {(ref.registry, ref.repository, ref.tag) for ref in bundled}
    missing = [ref for ref in images if (ref.registry, ref.repository, ref.tag) not in held]
    if not missing:
        return
    first = missing[0]
    tags = sorted({ref.tag or "" for ref in bundled if (ref.registry, ref.repository) == (first.registry,
                                                                                         first.repository)})
    has = f"it has {first.repository} {', '.join(tags)}" if tags else f"it has no {first.repository} at all"
    raise UsageError(f"--bundle lacks {', '.join(f'{r.registry}/{r.repository}:{r.tag}' for r in missing)} "
                     f"named by the generated files ({has}): pass the versions the bundle was pulled with "
                     "(--rancher-version, --cert-manager-version)")


def rancher_values(target: NodeRegistry, server: Reference, cert_manager_version: str) -> dict[str, Any]:
    return {"rancherImage": f"{target.registry}/{target_repository(server, target.prefix)}",
            "systemDefaultRegistry": _default_registry(target), "useBundledSystemChart": True,
            "certmanager": {"version": cert_manager_version}}


def cert_manager_values(target: NodeRegistry, images: list[Reference]) -> dict[str, Any]:
    """helm values pointing every cert-manager image at the private registry."""
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


def docker_run(target: NodeRegistry, server: Reference) -> str:
    image = f"{target.registry}/{target_repository(server, target.prefix)}:{server.tag}"
    argv = ["docker", "run", "-d", "--restart=unless-stopped", "-p", "80:80", "-p", "443:443", "--privileged",
            "-e", f"CATTLE_SYSTEM_DEFAULT_REGISTRY={_default_registry(target)}",
            "-e", "CATTLE_SYSTEM_CATALOG=bundled", image]
    return " ".join(shlex.quote(a) for a in argv)


def docker_run_file(target: NodeRegistry, rancher_version: str | None,
                    bundled: Collection[Reference] | None = None) -> GeneratedFile:
    """rancher-docker-run.sh: the single-node install, every image by its full name in the registry."""
    server = server_image(rancher_version)
    require_bundled([server], bundled)
    return GeneratedFile("rancher-docker-run.sh", "single-node install (run on the Docker host)",
                         "#!/bin/sh\n# Rancher on a single Docker node, images from the private registry.\n"
                         + docker_run(target, server) + "\n")


def generate(target: NodeRegistry, *, rancher_version: str | None = None, cert_manager_version: str | None = None,
             bundled: Collection[Reference] | None = None, **_: Any) -> ClientConfig:
    server = server_image(rancher_version)
    cert_manager_version, cert_manager = lists.component_images("cert-manager", cert_manager_version)
    require_bundled([server, *cert_manager], bundled)
    result = ClientConfig()
    result.files.append(GeneratedFile(
        "rancher-values.yaml", "helm install rancher -f rancher-values.yaml",
        yamltext.dump(rancher_values(target, server, cert_manager_version), [
            f"Rancher {server.tag}, as the air-gap guide installs it. systemDefaultRegistry goes in front of "
            "every image Rancher deploys; rancherImage is its own (the tag is the chart's version)."])))
    result.files.append(GeneratedFile("cert-manager-values.yaml", "helm install cert-manager -f cert-manager-values.yaml",
                                      yamltext.dump(cert_manager_values(target, cert_manager))))
    result.files.append(docker_run_file(target, server.tag, bundled))
    result.files.append(install_scripts.rancher_file(target, server.tag, cert_manager_version))
    result.notes += install_scripts.missing_charts(server.tag, cert_manager_version, bundled)
    if target.username:
        result.notes.append(f"run `docker login {target.registry}` (`mirror config docker` writes the line) before "
                            "the single-node `docker run`; cluster nodes get credentials from registries.yaml "
                            "(`mirror config k3s|rke2`)")
    return result
