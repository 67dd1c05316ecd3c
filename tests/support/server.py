"""What `mirror registry up` is asked and what it leaves running, for the server's end-to-end tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from mirror.server.container import STATE_LABEL


def up_args(engine: str, state_dir: Path, port: int, bundle: Path) -> list[str]:
    args = ["registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
            "--hostname", "reg.example.com", "--engine", engine]
    return args + (["--from-bundle", bundle] if engine == "docker" else [])


def registries_running(engine: str, state_dir: Path, dockerd) -> int:
    """How many registries this state dir has running: containers, or processes serving its config."""
    if engine == "docker":
        client = dockerd.client()
        try:
            return len(client.containers.list(filters={"label": f"{STATE_LABEL}={state_dir}"}))
        finally:
            client.close()
    config = str(state_dir / "registry" / "config.yml").encode()
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            count += config in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            pass
    return count


def serves(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def secret_exposed(engine: str, state_dir: Path, dockerd, password: str) -> bool:
    """Whether the password shows in the registry's log, argv or environment (or the container's)."""
    if engine == "docker":
        client = dockerd.client()
        try:
            container = client.containers.get("mirror-registry")
            seen = json.dumps(client.api.inspect_container(container.id)) + container.logs().decode()
        finally:
            client.close()
    else:
        pid = (state_dir / "registry.pid").read_text().strip()
        seen = (state_dir / "registry.log").read_text() + Path(f"/proc/{pid}/cmdline").read_text() + \
            Path(f"/proc/{pid}/environ").read_text()
    return password in seen
