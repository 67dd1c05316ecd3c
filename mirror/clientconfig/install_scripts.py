"""The install lines for the kit `mirror extract` writes (docs/kit.md): K3s, RKE2, and Rancher's helm installs.

K3s and RKE2 install from the files under ``KIT/k3s`` / ``KIT/rke2``
(``KIT`` defaults to the directory the script is run from), as their
air-gap guides do: ``INSTALL_K3S_SKIP_DOWNLOAD=true`` with the binary in
place, ``INSTALL_RKE2_ARTIFACT_PATH`` at the tarball and its checksums.
Rancher and cert-manager install from the private registry's OCI charts
(``oci://REG[/PREFIX]/charts/NAME``, where push put them; Helm >= 3.8),
cert-manager's CRDs first, with the values files ``mirror config rancher``
writes beside the script.
"""

from __future__ import annotations

import shlex
from typing import Collection

from ..model.reference import Reference
from .model import GeneratedFile, NodeRegistry

_KIT = 'KIT="${KIT:-$(pwd)}"  # the directory `mirror extract BUNDLE -o DIR` wrote\n'
_ARCH = ('case "$(uname -m)" in\n'
         '  aarch64|arm64) arch=arm64; k3s=k3s-arm64 ;;\n'
         '  armv7l) arch=arm; k3s=k3s-armhf ;;\n'
         '  s390x) arch=s390x; k3s=k3s-s390x ;;\n'
         '  *) arch=amd64; k3s=k3s ;;\n'
         'esac\n')


def k3s_file() -> GeneratedFile:
    return GeneratedFile("install-k3s.sh", "KIT/install-k3s.sh, run as root on each node after registries.yaml", (
        "#!/bin/sh\n# K3s, air-gapped: the binary, install.sh and (--with-airgap-images) the image tarball\n"
        "# from KIT/k3s, as K3s's air-gap guide installs them. Agents: add K3S_URL and K3S_TOKEN.\nset -eu\n"
        + _KIT + _ARCH +
        'install -m 0755 "$KIT/k3s/$k3s" /usr/local/bin/k3s\n'
        'if [ -f "$KIT/k3s/k3s-airgap-images-$arch.tar.zst" ]; then\n'
        '  mkdir -p /var/lib/rancher/k3s/agent/images\n'
        '  cp "$KIT/k3s/k3s-airgap-images-$arch.tar.zst" /var/lib/rancher/k3s/agent/images/\n'
        'fi\n'
        'INSTALL_K3S_SKIP_DOWNLOAD=true sh "$KIT/k3s/install.sh"\n'))


def rke2_file() -> GeneratedFile:
    return GeneratedFile("install-rke2.sh", "KIT/install-rke2.sh, run as root on each node after registries.yaml", (
        "#!/bin/sh\n# RKE2, air-gapped: install.sh takes rke2.linux-ARCH.tar.gz, its sha256sum-ARCH.txt and\n"
        "# (--with-airgap-images) the image tarball from KIT/rke2. Agents: add INSTALL_RKE2_TYPE=agent.\nset -eu\n"
        + _KIT +
        'INSTALL_RKE2_ARTIFACT_PATH="$KIT/rke2" sh "$KIT/rke2/install.sh"\n'
        "systemctl enable --now rke2-server.service\n"))


def helm_registry_flags(target: NodeRegistry) -> list[str]:
    """How helm reaches the registry as the nodes do: plain HTTP, no verification, or its CA."""
    if target.plain_http:
        return ["--plain-http"]
    if target.insecure:
        return ["--insecure-skip-tls-verify"]
    if target.ca_file:
        return ["--ca-file", str(target.ca_file)]
    return []


def rancher_file(target: NodeRegistry, rancher_version: str, cert_manager_version: str) -> GeneratedFile:
    prefix = target.prefix.strip("/")
    charts = f"oci://{target.registry}/{prefix + '/' if prefix else ''}charts"
    flags = " ".join(shlex.quote(f) for f in helm_registry_flags(target))
    flags = f" {flags}" if flags else ""
    login = (f"helm registry login {shlex.quote(target.registry)} --username {shlex.quote(target.username)}"
             f"{flags}  # asks for the password\n" if target.username else "")
    where = "KIT/rancher-install.sh, run where kubectl and helm (>= 3.8) reach the cluster"
    return GeneratedFile("rancher-install.sh", where, (
        "#!/bin/sh\n# cert-manager (CRDs first) and Rancher from the private registry's charts, with the values\n"
        "# files beside this script; the CRDs from KIT/cert-manager (`mirror extract`).\nset -eu\n"
        + _KIT + ': "${RANCHER_HOSTNAME:?set RANCHER_HOSTNAME to the name Rancher is reached by}"\n' + login +
        'kubectl apply -f "$KIT/cert-manager/cert-manager.crds.yaml"\n'
        f"helm install cert-manager {charts}/cert-manager --version {shlex.quote(cert_manager_version)}{flags} \\\n"
        "  --namespace cert-manager --create-namespace -f cert-manager-values.yaml\n"
        f"helm install rancher {charts}/rancher --version {shlex.quote(rancher_version.removeprefix('v'))}"
        f"{flags} \\\n"
        '  --namespace cattle-system --create-namespace -f rancher-values.yaml --set hostname="$RANCHER_HOSTNAME"\n'))


def missing_charts(rancher_version: str, cert_manager_version: str,
                   bundled: Collection[Reference] | None) -> list[str]:
    """A note per chart rancher-install.sh installs that the pushed bundle does not carry (None: not known)."""
    if bundled is None:
        return []
    held = {(ref.repository, ref.tag) for ref in bundled}
    wanted = [("rancher", rancher_version.removeprefix("v")), ("cert-manager", cert_manager_version)]
    return [f"--bundle carries no chart {name} {version} (pulled with --no-charts, or another version): "
            f"rancher-install.sh's helm install needs charts/{name}:{version} in the registry"
            for name, version in wanted if (f"charts/{name}", version.replace("+", "_")) not in held]
