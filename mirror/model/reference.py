"""Image references, parsed and normalised the way Docker does.

``busybox`` -> ``docker.io/library/busybox:latest``;
``host:5000/ns/name:tag@sha256:...`` keeps host, tag and digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import UsageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where Docker Hub's registry API is served
HUB_ALIASES = frozenset({"index.docker.io", DOCKER_HUB_API, DOCKER_HUB})

# Grammar from distribution/reference (reference.go), anchored.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_PATTERN = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
HOST_PATTERN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)


@dataclass(frozen=True, order=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """Parse and normalise; raise UsageError naming the text when invalid."""
        original = text
        text = text.strip()
        if not text or any(c.isspace() for c in text):
            raise UsageError(f"invalid image reference {original!r}: empty or contains spaces")
        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not _DIGEST.match(digest):
                raise UsageError(
                    f"invalid image reference {original!r}: digest must be sha256:<64 hex>"
                )
        tag = None
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG.match(tag):
                raise UsageError(f"invalid image reference {original!r}: bad tag {tag!r}")
        first, _, rest = text.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            registry, path = first, rest
            if not HOST_PATTERN.match(registry):
                raise UsageError(f"invalid image reference {original!r}: bad registry {registry!r}")
        else:
            registry, path = DOCKER_HUB, text
        if registry in HUB_ALIASES:
            registry = DOCKER_HUB
            if "/" not in path:
                path = f"library/{path}"
        if not REPOSITORY_PATTERN.match(path):
            raise UsageError(
                f"invalid image reference {original!r}: repository {path!r} must be lowercase "
                "letters, digits and separators"
            )
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, path, tag, digest)

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str | None) -> "Reference":
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_tag(value: object) -> bool:
    """Whether ``value`` (anything a peer's JSON list held) is a tag by the reference grammar."""
    return isinstance(value, str) and _TAG.fullmatch(value) is not None


def canonical_registry(host: str) -> str:
    """``docker.io`` for any of Docker Hub's names, the host unchanged otherwise."""
    return DOCKER_HUB if host in HUB_ALIASES else host


def endpoint_host(registry: str) -> str:
    """Where a registry name is served: Docker Hub's API lives on registry-1.docker.io."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry
