"""The distribution registry's config.yml, written without a YAML library.

Every value is emitted as a JSON string, which YAML reads as a double-quoted
scalar, so paths with odd characters cannot break the file. Paths are as the
registry sees them: host paths for the binary, mount points in a container.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

# What the filesystem driver makes in its rootdirectory; the registry writes nothing else there.
STORAGE_TREE = "docker"


@dataclass(frozen=True)
class DistConfig:
    listen: str  # "ADDRESS:PORT"
    storage: str  # rootdirectory
    object_storage: tuple[str, ...] = ()  # the storage: entries of another driver, in place of the filesystem
    cert: str | None = None
    key: str | None = None
    htpasswd: str | None = None


def render(config: DistConfig, http_secret: str) -> str:
    q = json.dumps
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog: {disabled: true}",
        "storage:",
        *(config.object_storage or [f"  filesystem: {{rootdirectory: {q(config.storage)}}}"]),
        "  delete: {enabled: true}",
        "http:",
        f"  addr: {q(config.listen)}",
        f"  secret: {q(http_secret)}",
        "  headers: {X-Content-Type-Options: [nosniff]}",
    ]
    if config.cert and config.key:
        lines.append(f"  tls: {{certificate: {q(config.cert)}, key: {q(config.key)}}}")
    if config.htpasswd:
        lines += ["auth:", f"  htpasswd: {{realm: \"mirror registry\", path: {q(config.htpasswd)}}}"]
    return "\n".join(lines) + "\n"


def http_secret(existing_config: Path) -> str:
    """The upload-state secret in an earlier config, so uploads survive a restart."""
    try:
        for line in existing_config.read_text().splitlines():
            key, _, value = line.strip().partition(":")
            if key == "secret":
                return json.loads(value.strip())
    except (OSError, ValueError):
        pass
    return secrets.token_hex(16)
