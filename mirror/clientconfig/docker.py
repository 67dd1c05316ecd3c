"""A single Docker node (Rancher's single-node install, RKE nodes): CA, login, daemon.json, ``docker run``.

Docker mirrors docker.io only (``registry-mirrors``, host without a path),
and sends no credentials to a mirror (moby/moby#30880): behind auth, a
``docker pull rancher/x`` would quietly go to Docker Hub. So with a user the
node pulls by full names (``REG/rancher/x``, what Rancher's guide runs) after
``docker login REG``, and ``registry-mirrors`` is written only for a
registry without auth.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Collection

from ..model.reference import DOCKER_HUB, Reference
from . import rancher
from .model import ClientConfig, GeneratedFile, NodeRegistry

CERTS_DIR = "/etc/docker/certs.d"


def daemon_json(target: NodeRegistry) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if not target.path_prefix(DOCKER_HUB) and not target.username:
        config["registry-mirrors"] = target.endpoints  # tried in order, for docker.io names only
    if target.plain_http or target.insecure:
        config["insecure-registries"] = list(target.registries)
    return config


def login_script(target: NodeRegistry) -> str:
    """``docker login`` for the node; the password comes on stdin, never in the file or argv."""
    argv = ["docker", "login", target.registry, "--username", target.username or "", "--password-stdin"]
    return ("#!/bin/sh\n# Run on the Docker host with the password on standard input: "
            "sh docker-login.sh < password-file\n" + " ".join(shlex.quote(a) for a in argv) + "\n")


def generate(target: NodeRegistry, *, rancher_version: str | None = None,
             bundled: Collection[Reference] | None = None, **_: Any) -> ClientConfig:
    result = ClientConfig()
    for registry in target.registries if target.ca_file and not target.plain_http else ():
        install = f"{CERTS_DIR}/{registry}/ca.crt"
        result.files.append(GeneratedFile(f"certs.d/{registry}/ca.crt", install, copy_of=target.ca_file))
    daemon = daemon_json(target)
    if daemon:
        result.files.append(GeneratedFile("daemon.json", "/etc/docker/daemon.json (merge)",
                                          json.dumps(daemon, indent=2) + "\n"))
    if target.username:
        result.files.append(GeneratedFile("docker-login.sh", "run once on each Docker host", login_script(target)))
    result.files.append(rancher.docker_run_file(target, rancher_version, bundled))
    if target.username:
        result.notes.append("no registry-mirrors: Docker sends no credentials to a mirror (moby/moby#30880), so "
                            f"pull by full names, {target.registry}/{target.path_prefix(DOCKER_HUB)}rancher/..., "
                            "as rancher-docker-run.sh does")
    elif "registry-mirrors" in daemon:
        result.notes.append(f"registry-mirrors: docker.io names (rancher/...) pull from {target.registry}; "
                            "this works only without auth, Docker sends no credentials to a mirror")
    else:
        result.notes.append(f"Docker cannot mirror docker.io to a path ({target.prefix}): pull images as "
                            f"{target.registry}/{target.path_prefix(DOCKER_HUB)}rancher/...")
    for source in (s for s in target.source_registries if s != DOCKER_HUB):
        result.notes.append(
            f"Docker can only mirror docker.io: pull {source} images by their target names, "
            f"e.g. {source}/NS/IMAGE as {target.registry}/{target.path_prefix(source)}NS/IMAGE")
    if target.fallbacks:
        result.notes.append(
            "Docker falls back only for docker.io names through registry-mirrors (in order, without auth); a "
            f"pull by full name ({target.registry}/...) or from another registry goes to that one registry: "
            "put the registries behind one load-balanced name for those (docs/ha.md)")
    if daemon:
        result.notes.append("restart dockerd (or `kill -HUP` it: registry-mirrors is reloadable) after merging "
                            "daemon.json")
    return result
