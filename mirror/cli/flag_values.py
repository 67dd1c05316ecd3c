"""What the shared flags mean: registry settings and credentials, source access, platforms, verifiers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UsageError
from ..registry.settings import Credentials, RegistrySettings, connections_for

if TYPE_CHECKING:
    from ..model.oci import Platform
    from ..model.upstream import SourceMap
    from ..transfer.plan import Target


def read_password_stdin(password_stdin: bool, username: str | None) -> Credentials | None:
    """Credentials from ``--username`` + ``--password-stdin``; never from argv."""
    if password_stdin and not username:
        raise UsageError("--password-stdin needs --username")
    if not username:
        return None
    if not password_stdin:
        raise UsageError("--username needs --password-stdin (passwords are never taken as arguments)")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin: no password on standard input")
    return Credentials(username, password)


def registry_settings(
    *,
    ca_file: Path | None = None,
    insecure: bool = False,
    plain_http: bool = False,
    credentials: Credentials | None = None,
    jobs: int = 16,
) -> RegistrySettings:
    if ca_file is not None and not ca_file.is_file():
        raise UsageError(f"--ca-file {ca_file}: no such file")
    return RegistrySettings(
        plain_http=plain_http,
        insecure=insecure,
        ca_file=ca_file,
        credentials=credentials,
        max_connections=connections_for(jobs),
    )


def target_registry(registry: str | None, **options: Any) -> "Target":
    """The registry a command writes to or checks, and how to reach it (``target_registries``' options).

    Without ``--registry``: the one ``mirror registry up`` started here, with
    its CA and credentials; flags given still win. ``http://HOST`` means
    plain HTTP, as ``--plain-http`` does.
    """
    return target_registries([registry], **options)[0]


def target_registries(
    registries: list[str | None],
    *,
    ca_file: Path | None,
    insecure: bool,
    plain_http: bool,
    username: str | None,
    password_stdin: bool,
    jobs: int,
    option: str = "--registry",
) -> list["Target"]:
    """``target_registry`` for each of several, with one CA file and one user (the password read once)."""
    from ..model.target import RegistryAddress
    from ..transfer.plan import Target

    credentials = read_password_stdin(password_stdin, username)
    targets = []
    for registry in registries:
        reach_ca, reach_credentials = ca_file, credentials
        if registry is None:
            from ..server.probe import require_local_registry

            local = require_local_registry()
            address = RegistryAddress(local.host, plain_http=local.plain_http)
            reach_ca = ca_file or local.ca_file
            reach_credentials = credentials or local.credentials
        else:
            address = RegistryAddress.parse(registry, option)
        settings = registry_settings(ca_file=reach_ca, insecure=insecure,
                                     plain_http=plain_http or address.plain_http, credentials=reach_credentials,
                                     jobs=jobs)
        targets.append(Target(address, settings))
    return targets


def parse_platforms(values: list[str]) -> "list[Platform]":
    from ..model.oci import Platform

    platforms = []
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            try:
                platforms.append(Platform.parse(item))
            except ValueError as exc:
                raise UsageError(f"--platform: {exc}") from None
    return platforms


def source_access(source_mirror: list[str], plain_http_registry: list[str], insecure_registry: list[str],
                  ca_file: Path | None, jobs: int) -> "tuple[SourceMap, Callable[[str], RegistrySettings]]":
    """Where each source registry is read from, and the settings to reach each host with."""
    from dataclasses import replace

    from ..model.reference import endpoint_host
    from ..model.upstream import SourceMap, SourceMirror

    sources = SourceMap([SourceMirror.parse(m) for m in source_mirror])
    # Named as users write them (docker.io), matched as the client connects (registry-1.docker.io).
    plain = {endpoint_host(h) for h in plain_http_registry} | sources.plain_http_hosts()
    insecure = {endpoint_host(h) for h in insecure_registry}
    base = registry_settings(ca_file=ca_file, jobs=jobs)

    def settings_for(host: str) -> RegistrySettings:
        return replace(base, plain_http=host in plain, insecure=host in insecure)

    return sources, settings_for


def verifiers(paths: list[Path] | None, trusted_root: Path | None = None, identity: str | None = None,
              issuer: str | None = None, *, no_attachments: bool = False) -> list:
    """What may vouch for an image's signature: the --verify-key files and the keyless identity, loaded
    (a UsageError names a file that is no public key or trusted root)."""
    if not paths and trusted_root is None and identity is None and issuer is None:
        return []  # nothing to load: a pull, push or sync without them skips importing the X.509 parser
    from ..attach.keyless import load_keyless
    from ..attach.keys import load_keys

    found = [*load_keys(paths or []), *load_keyless(trusted_root, identity, issuer)]
    if found and no_attachments:
        raise UsageError("--verify-key and --trusted-root need the signatures: not with --no-attachments")
    return found
