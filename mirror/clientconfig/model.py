"""What a generator is given (the target registry) and what it returns (files + notes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..model.target import RegistryAddress, target_repository
from ..model.reference import DOCKER_HUB, Reference

PASSWORD_PLACEHOLDER = "REPLACE-WITH-PASSWORD"


@dataclass(frozen=True)
class NodeRegistry:
    """The private registry the nodes pull from, and how images were laid out in it."""

    registry: str  # HOST:PORT, as pushed to
    source_registries: tuple[str, ...] = (DOCKER_HUB,)  # registries the images came from
    prefix: str = ""
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # only when secrets were asked for
    plain_http: bool = False
    insecure: bool = False  # TLS without verification
    # More registries holding the same images, tried in order after ``registry`` when it fails (docs/ha.md);
    # they share its prefix, scheme, CA file (which may hold several CAs) and user.
    fallbacks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for registry in self.registries:
            address = RegistryAddress.parse(registry)
            if address.prefix or address.plain_http or address.host != registry:
                raise UsageError(f"registry {registry!r}: expected HOST[:PORT] alone (the prefix and "
                                 "the scheme are fields of their own)")
        if len(set(self.registries)) != len(self.registries):
            raise UsageError(f"--registry names {', '.join(self.registries)}: each registry once")

    @property
    def registries(self) -> tuple[str, ...]:
        """Every registry the nodes may pull from, in the order they try them."""
        return (self.registry, *self.fallbacks)

    @property
    def endpoint(self) -> str:
        return self.endpoint_of(self.registry)

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint_of(r) for r in self.registries]

    def endpoint_of(self, registry: str) -> str:
        return f"{'http' if self.plain_http else 'https'}://{registry}"

    def path_prefix(self, source_registry: str) -> str:
        """What the target layout puts before a source repository: '', 'quay.io/', 'P/quay.io/'."""
        probe = "mirror-probe/repository"
        target = target_repository(Reference(source_registry, probe), self.prefix)
        assert target.endswith(probe), (source_registry, target)
        return target[: -len(probe)]

    def password_value(self) -> str:
        return self.password if self.password is not None else PASSWORD_PLACEHOLDER

    def password_note(self, where: str) -> list[str]:
        if self.username and self.password is None:
            return [f"{where}: replace {PASSWORD_PLACEHOLDER} with the password of {self.username!r} "
                    "(not written unless --include-secrets)"]
        return []


@dataclass
class GeneratedFile:
    path: str  # relative, under --output-dir
    install_path: str  # where it belongs on a node
    content: str = ""
    copy_of: Path | None = None  # a file copied as is (the CA certificate) instead of content
    secret: bool = False  # holds a password: written with mode 0600


@dataclass
class ClientConfig:
    files: list[GeneratedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
