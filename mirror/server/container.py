"""The registry as a Docker container (docker SDK; DOCKER_HOST is honoured).

The container uses the host's network: the registry binds ADDRESS:PORT
itself, which works on engines run without a bridge or iptables (hardened
bastions, rootless) where a published port would silently go nowhere. Its
config dir (config.yml, server cert/key, htpasswd) is bind-mounted read-only;
no secret travels in an environment variable or an argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Iterable

import docker
from docker.models.containers import Container

from ..errors import MirrorError, UsageError
from ..model.oci import Platform
from .probe import log_reason

CONFIG_MOUNT = "/etc/mirror-registry"
DATA_MOUNT = "/var/lib/registry"  # where the official image keeps its data
STATE_LABEL = "io.mirror.registry.state-dir"  # marks containers `up` made


def connect(timeout: float = 120) -> docker.DockerClient:
    """A client for the engine at DOCKER_HOST (or the default socket); UsageError when refused."""
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        reason = str(exc).splitlines()[0].replace("Error while fetching server API version: ", "")[:200]
        raise UsageError(
            f"Docker Engine at {where} refused the connection ({reason}): start dockerd, "
            "set DOCKER_HOST, or use --engine binary"
        ) from None


def reachable() -> docker.DockerClient | None:
    try:
        return connect(timeout=10)
    except UsageError:
        return None


def engine_platform(client: docker.DockerClient) -> Platform:
    version = client.version()
    return Platform(version.get("Os", "linux"), version.get("Arch", "amd64"))


def load(client: docker.DockerClient, archive: Iterable[bytes]) -> None:
    """``docker load`` from a stream; the engine's error, if any, becomes a MirrorError."""
    try:
        for line in client.api.load_image(archive):
            if line.get("error"):
                raise MirrorError(f"Docker Engine could not load the registry image: {line['error']}")
    except docker.errors.APIError as exc:
        raise MirrorError(f"Docker Engine could not load the registry image: {exc.explanation}") from None


def image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return client.images.get(reference).id
    except docker.errors.ImageNotFound:
        return None


def find(client: docker.DockerClient, name: str) -> Container | None:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def run(client: docker.DockerClient, *, name: str, image: str, config_dir: Path, data_dir: Path,
        state_dir: Path) -> Container:
    try:
        return client.containers.run(
            image, command=["serve", f"{CONFIG_MOUNT}/config.yml"], name=name, detach=True,
            restart_policy={"Name": "always"}, network_mode="host", volumes=_mounts(config_dir, data_dir),
            labels={STATE_LABEL: str(state_dir)},
        )
    except docker.errors.APIError as exc:
        remove(client, name)
        raise MirrorError(f"Docker Engine could not start container {name}: {exc.explanation}") from None


def run_once(client: docker.DockerClient, *, image: str, args: list[str], config_dir: Path, data_dir: Path,
             output: BinaryIO) -> int:
    """The registry image run with ``args`` to the end (``garbage-collect``, ``--version``; the official
    image's entrypoint takes both), no network, mounts as ``run`` has them; output to ``output``. Its exit
    status; the container is removed."""
    try:
        container = client.containers.run(image, command=args, detach=True, network_mode="none",
                                          volumes=_mounts(config_dir, data_dir))
    except docker.errors.APIError as exc:
        raise MirrorError(f"Docker Engine could not run the registry image {image}: {exc.explanation}") from None
    try:
        status = container.wait()["StatusCode"]
        for chunk in container.logs(stream=True):
            output.write(chunk)
        return status
    finally:
        container.remove(force=True)


def _mounts(config_dir: Path, data_dir: Path) -> dict[str, dict[str, str]]:
    # z: relabel for SELinux (RHEL bastions); a no-op where SELinux is off.
    return {str(data_dir): {"bind": DATA_MOUNT, "mode": "rw,z"},
            str(config_dir): {"bind": CONFIG_MOUNT, "mode": "ro,z"}}


def running(container: Container) -> bool:
    container.reload()
    return container.status == "running"


def exit_reason(container: Container) -> str | None:
    """None while the container runs; else its state and last log line."""
    try:
        container.reload()
    except docker.errors.NotFound:
        return "container was removed"
    if container.status in ("running", "created"):
        return None
    logs = container.logs(tail=40).decode(errors="replace").strip().splitlines()
    return f"container {container.status}: {log_reason(logs)}"


def remove(client: docker.DockerClient, name: str) -> bool:
    """Stop and remove the container; True if there was one."""
    container = find(client, name)
    if container is None:
        return False
    if container.status == "running":
        container.stop(timeout=10)  # SIGTERM first: the registry finishes what it writes
    container.remove(force=True)
    return True


def owner(container: Container) -> str | None:
    """The state dir of the `up` that made ``container``; None if `up` did not make it."""
    return (container.labels or {}).get(STATE_LABEL)
