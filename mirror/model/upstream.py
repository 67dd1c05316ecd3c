"""Where to fetch a source image from: upstream, or a mirror standing in for it.

``--source-mirror docker.io=HOST[/PREFIX]`` serves ``docker.io/rancher/x``
from ``HOST/PREFIX/rancher/x``: a corporate pull-through proxy, or the
loopback registry the tests and the demo stand in for docker.io. A mirror
written ``http://HOST`` is reached over plain HTTP (an explicit choice).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from .reference import Reference, endpoint_host
from .target import RegistryAddress


@dataclass(frozen=True)
class Location:
    """A repository on a concrete registry host, as the client needs it."""

    host: str
    repository: str


@dataclass(frozen=True)
class SourceMirror:
    registry: str  # the upstream it stands in for, e.g. "docker.io"
    host: str
    prefix: str = ""
    plain_http: bool = False

    @classmethod
    def parse(cls, text: str) -> "SourceMirror":
        registry, sep, target = text.partition("=")
        if not sep or not registry or not target:
            raise UsageError(f"--source-mirror {text!r}: expected REGISTRY=HOST[/PREFIX], e.g. docker.io=mirror.corp:5000/dockerhub")
        address = RegistryAddress.parse(target, "--source-mirror")
        registry = Reference.parse(f"{registry}/x/y").registry  # same aliasing as references
        return cls(registry, address.host, address.prefix, address.plain_http)


class SourceMap:
    """Maps a source reference to the registry location it is fetched from."""

    def __init__(self, mirrors: list[SourceMirror] = ()):
        self._mirrors = {m.registry: m for m in mirrors}

    def locate(self, ref: Reference) -> Location:
        mirror = self._mirrors.get(ref.registry)
        if mirror is None:
            return Location(endpoint_host(ref.registry), ref.repository)
        repository = f"{mirror.prefix}/{ref.repository}" if mirror.prefix else ref.repository
        return Location(mirror.host, repository)

    def plain_http_hosts(self) -> set[str]:
        return {m.host for m in self._mirrors.values() if m.plain_http}
