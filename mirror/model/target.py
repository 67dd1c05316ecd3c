"""A registry address as users write it, and where a source image lands in it.

``HOST[:PORT][/PREFIX]``, optionally ``http://`` (plain HTTP, an explicit
choice) or ``https://``, means the same for every option that takes one:
``--registry``, ``--to`` and ``--source-mirror``.

Registry layout (docs/registry-layout.md):

``docker.io/rancher/x`` -> ``rancher/x``; ``docker.io/library/busybox`` ->
``library/busybox``; any other registry keeps its host as the first path
segment: ``quay.io/jetstack/c`` -> ``quay.io/jetstack/c`` (a port becomes ``_PORT``:
``harbor.corp:8443/x`` -> ``harbor.corp_8443/x``). An optional prefix
goes in front of everything (Harbor projects). The client configuration
generators use the same function, so nodes ask for what was pushed.

Beside a tag, ``sync``'s ``on_retag: backup`` keeps the image the tag pointed
at before it moved as ``TAG-prev-<12 hex of the old digest>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError
from .numbers import ascii_int
from .oci import digest_hex
from .reference import DOCKER_HUB, HOST_PATTERN, REPOSITORY_PATTERN, Reference


@dataclass(frozen=True)
class RegistryAddress:
    host: str  # HOST[:PORT], as the client connects to it
    prefix: str = ""  # a path every repository goes under (a Harbor project), no slashes around
    plain_http: bool = False  # written with http://

    @classmethod
    def parse(cls, text: str, option: str = "--registry") -> "RegistryAddress":
        """``[http[s]://]HOST[:PORT][/PREFIX]``; the prefix must be valid in a repository name."""
        rest = text.strip()
        plain_http = rest.startswith("http://")
        rest = rest.removeprefix("http://").removeprefix("https://")
        host, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if not HOST_PATTERN.match(host) or (prefix and not REPOSITORY_PATTERN.match(prefix)):
            raise UsageError(f"{option} {text!r}: expected HOST[:PORT][/PREFIX] with a lowercase prefix")
        return cls(host, prefix, plain_http)

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host


def target_repository(source: Reference, prefix: str = "") -> str:
    # A port cannot stand in a repository name: harbor.corp:8443 becomes harbor.corp_8443.
    host = source.registry.replace(":", "_")
    path = source.repository if source.registry == DOCKER_HUB else f"{host}/{source.repository}"
    prefix = prefix.strip("/")
    return f"{prefix}/{path}" if prefix else path


def source_name(repository: str, prefix: str = "") -> str | None:
    """The inverse of ``target_repository``: which source ``registry/path`` a target repository holds.

    ``rancher/x`` -> ``docker.io/rancher/x``; ``quay.io/jetstack/c`` -> ``quay.io/jetstack/c``;
    ``harbor.corp_8443/x`` -> ``harbor.corp:8443/x``. A first segment is a host when it has a dot,
    is ``localhost``, or ends in ``_PORT`` (Docker Hub namespaces have none of these). None when the
    repository is outside ``prefix`` or is no name ``target_repository`` produces (``busybox``).
    """
    prefix = prefix.strip("/")
    if prefix:
        if not repository.startswith(prefix + "/"):
            return None
        repository = repository[len(prefix) + 1:]
    first, _, rest = repository.partition("/")
    host, underscore, port = first.rpartition("_")
    if underscore and ascii_int(port) is not None and host:
        first = f"{host}:{port}"
    name = f"{first}/{rest}" if rest and ("." in first or ":" in first or first == "localhost") \
        else f"{DOCKER_HUB}/{repository}"
    try:
        reference = Reference.parse(name)
    except UsageError:
        return None
    return reference.name if target_repository(reference, prefix) == _prefixed(prefix, repository) else None


def _prefixed(prefix: str, repository: str) -> str:
    return f"{prefix}/{repository}" if prefix else repository


_BACKUP = re.compile(r"^(?P<tag>.+)-prev-[0-9a-f]{12}$")


def backup_tag(tag: str, old_digest: str) -> str:
    """Where ``on_retag: backup`` keeps what ``tag`` pointed at: ``TAG-prev-<12 hex>``."""
    return f"{tag}-prev-{digest_hex(old_digest)[:12]}"


def backed_up_tag(tag: str) -> str | None:
    """The inverse of ``backup_tag``: the tag ``tag`` is a backup of, None when it is no backup."""
    match = _BACKUP.match(tag)
    return match.group("tag") if match else None
