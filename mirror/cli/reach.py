"""The registries a command reaches, as option groups declared here once: those it writes to or checks (push,
verify, inventory, prune: ``--registry``, ``--local-registry``, TLS, credentials, ``--jobs``), and those it reads
images from (pull, sync run: ``--platform``, ``--source-mirror``, ``--plain-http-registry``, ``--insecure-registry``,
``--ca-file``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer

from ..errors import UsageError
from .flag_values import parse_platforms, source_access, target_registries
from .groups import F, option_group
from .options import (
    CaFileOption, InsecureOption, InsecureRegistryOption, JobsOption, PasswordStdinOption, PlainHttpOption,
    PlainHttpRegistryOption, PlatformOption, SourceMirrorOption, UsernameOption,
)

if TYPE_CHECKING:
    from ..model.oci import Platform
    from ..model.upstream import SourceMap
    from ..registry.settings import RegistrySettings
    from ..transfer.plan import Target

LOCAL = "the registry `mirror registry up` started here"


@dataclass(frozen=True)
class Reach:
    """The registry options as given; ``targets()`` makes them the registries to reach."""

    registries: tuple[str, ...]  # each --registry, in order
    local_registry: bool
    ca_file: Path | None
    insecure: bool
    plain_http: bool
    username: str | None
    password_stdin: bool
    jobs: int

    @property
    def named(self) -> bool:
        """A registry was named (``verify`` checks the bundle itself otherwise)."""
        return bool(self.registries) or self.local_registry

    def targets(self) -> list["Target"]:
        """``--local-registry`` first, then each ``--registry``; neither: the local one. One CA file and one
        user for all, the password read once."""
        if len(set(self.registries)) != len(self.registries):
            raise UsageError(f"--registry {', '.join(self.registries)}: each registry once")
        given: list[str | None] = [None] if self.local_registry or not self.registries else []
        return target_registries(given + list(self.registries), ca_file=self.ca_file, insecure=self.insecure,
                                 plain_http=self.plain_http, username=self.username,
                                 password_stdin=self.password_stdin, jobs=self.jobs)


def registry_options(does: str, *, several: bool = True, default: str = LOCAL) -> Callable[[F], F]:
    """The decorated command takes the group's options instead of its parameter ``reach: Reach = ...``.

    ``does`` says what the command does with the registry, for ``--registry``'s help; ``several``: the
    option repeats (else ``--registry`` and ``--local-registry`` exclude each other); ``default``: what
    the command does when neither is given.
    """
    repeat = "; repeat it for several, done concurrently (one CA file and user for all)" if several else ""
    registry = typer.Option(None, "--registry", "-r", help=f"Registry HOST[:PORT][/PREFIX] {does}{repeat} "
                                                           f"[default: {default}].")
    local = typer.Option(False, "--local-registry",
                         help=f"{LOCAL.capitalize()}{' (with --registry: as well, first)' if several else ''}.")
    group = {"registries": (Optional[list[str]] if several else Optional[str], registry),
             "local_registry": (bool, local), "ca_file": (Optional[Path], CaFileOption),
             "insecure": (bool, InsecureOption), "plain_http": (bool, PlainHttpOption),
             "username": (Optional[str], UsernameOption), "password_stdin": (bool, PasswordStdinOption),
             "jobs": (int, JobsOption)}

    def build(registries: Any, local_registry: bool, **reach: Any) -> Reach:
        if not several and registries is not None and local_registry:
            raise UsageError("--registry and --local-registry exclude each other")
        names = tuple(registries or ()) if several else (registries,) if registries is not None else ()
        return Reach(names, local_registry, **reach)

    return option_group("reach", group, build)


@dataclass(frozen=True)
class Sources:
    """Where images are read from, as given: the platforms kept, mirrors, plain-HTTP and unverified hosts, a CA."""

    platform: list[str] | None
    source_mirror: list[str] | None
    plain_http_registry: list[str] | None
    insecure_registry: list[str] | None
    ca_file: Path | None  # also the CA of the release hosts the image lists and the kit come from

    def platforms(self) -> list["Platform"]:
        return parse_platforms(self.platform or [])

    def access(self, jobs: int) -> "tuple[SourceMap, Callable[[str], RegistrySettings]]":
        """Where each source registry is read from, and the settings to reach each host with."""
        return source_access(self.source_mirror or [], self.plain_http_registry or [], self.insecure_registry or [],
                             self.ca_file, jobs)


# pull and sync run: ``reading: Sources = ...``
source_options = option_group("reading", {
    "platform": (Optional[list[str]], PlatformOption), "source_mirror": (Optional[list[str]], SourceMirrorOption),
    "plain_http_registry": (Optional[list[str]], PlainHttpRegistryOption),
    "insecure_registry": (Optional[list[str]], InsecureRegistryOption), "ca_file": (Optional[Path], CaFileOption)},
    Sources)
