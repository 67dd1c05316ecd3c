"""What every command shares: error-to-exit-code handling and registry flags."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import typer

from ..errors import (
    DeltaBaseMissing, ExitCode, ImagesFailed, MirrorError, UsageError, exit_code_of, leaves, reported_error,
)
from ..registry.settings import Credentials, RegistrySettings, connections_for
from .render import emit_failure_json, report_failures

if TYPE_CHECKING:
    from ..lists import Selection
    from ..model.oci import Platform
    from ..model.upstream import SourceMap
    from ..transfer.plan import Target

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio brings along
    from exceptiongroup import BaseExceptionGroup

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: ExitCode) -> None:
    """One line on stderr, then the exit code: the shape of every failure."""
    typer.echo(f"mirror: error: {message}", err=True)
    raise typer.Exit(int(code))


def flags_given(context: typer.Context, *, exclude: set[str]) -> list[str]:
    """The options and arguments of the running command that the user gave (on the command line or
    through their environment variable), other than ``exclude``, as the user spells them, sorted."""
    return sorted(param.opts[0] if param.param_type_name == "option" else param.name
            for param in context.command.params if param.name not in exclude
            and getattr(context.get_parameter_source(param.name), "name", "") in ("COMMANDLINE", "ENVIRONMENT"))


def handle_errors(func: F) -> F:
    """Turn MirrorError into its one-line message and exit code.

    Errors raised inside task groups arrive wrapped in exception groups: the
    worst of them (integrity, then auth, then the rest) is the one reported.
    With ``--json`` a failure still prints a report, unless the command did.
    An OSError the operations did not name (an unreadable bundle, a full
    disk) is still one line, exit 1; anything else is a bug and keeps its
    traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        json_report = bool(kwargs.get("json_report"))
        try:
            return func(*args, **kwargs)
        except BaseExceptionGroup as group:
            if any(isinstance(e, KeyboardInterrupt) for e in leaves(group)):
                _interrupted()
            worst = reported_error(group)
            if worst is None:
                raise
            _report(worst, json_report)
        except BrokenPipeError:  # `mirror ... | head`: the reader has what it wanted
            sys.stdout = None  # type: ignore[assignment]  # nothing left to flush at exit
            raise typer.Exit(141) from None
        except (MirrorError, OSError) as exc:
            _report(exc, json_report)
        except KeyboardInterrupt:
            _interrupted()

    return wrapper  # type: ignore[return-value]


def _report(error: BaseException, json_report: bool) -> None:
    failures = error.failures if isinstance(error, ImagesFailed) else {}
    report_failures(failures, error.causes if isinstance(error, ImagesFailed) else None)
    missing = error.missing if isinstance(error, DeltaBaseMissing) else {}
    for digest, reason in sorted(missing.items()):
        typer.echo(f"mirror: missing: {digest}: {reason}", err=True)
    code = exit_code_of(error)
    if json_report:
        emit_failure_json(str(error), int(code), failures, {"missing": missing} if missing else {})
    fail(str(error), code)


def _interrupted() -> None:
    typer.echo("mirror: interrupted", err=True)
    raise typer.Exit(130)


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


def target_registry(
    registry: str | None,
    *,
    ca_file: Path | None,
    insecure: bool,
    plain_http: bool,
    username: str | None,
    password_stdin: bool,
    jobs: int,
    option: str = "--registry",
) -> "Target":
    """The registry a command writes to or checks, and how to reach it.

    Without ``--registry``: the one ``mirror registry up`` started here, with
    its CA and credentials; flags given still win. ``http://HOST`` means
    plain HTTP, as ``--plain-http`` does.
    """
    from ..model.target import RegistryAddress
    from ..transfer.plan import Target

    credentials = read_password_stdin(password_stdin, username)
    if registry is None:
        from ..server.probe import require_local_registry

        local = require_local_registry()
        address = RegistryAddress(local.host, plain_http=local.plain_http)
        ca_file = ca_file or local.ca_file
        credentials = credentials or local.credentials
    else:
        address = RegistryAddress.parse(registry, option)
    settings = registry_settings(ca_file=ca_file, insecure=insecure, plain_http=plain_http or address.plain_http,
                                 credentials=credentials, jobs=jobs)
    return Target(address, settings)


# Shared option declarations, so every command spells them the same way.
CaFileOption = typer.Option(None, "--ca-file", help="CA certificate (PEM) that signed the registry's certificate.")
InsecureOption = typer.Option(False, "--insecure", help="Use TLS but do not verify the registry's certificate.")
PlainHttpOption = typer.Option(False, "--plain-http", help="Talk plain HTTP to the registry (no TLS).")
UsernameOption = typer.Option(None, "--username", "-u", help="Registry user; password from --password-stdin.")
PasswordStdinOption = typer.Option(False, "--password-stdin", help="Read the registry password from standard input.")
JobsOption = typer.Option(16, "--jobs", "-j", min=1, max=64,
                          help="Concurrent transfers (at most 16 connections to one registry).")
VerifyKeyOption = typer.Option(
    None, "--verify-key", metavar="COSIGN.PUB",
    help="Require each image to carry a cosign signature this PEM public key verifies (repeatable: any "
         "one key suffices); an image without one fails with exit 4. docs/signatures.md")
NoAttachmentsOption = typer.Option(
    False, "--no-attachments", help="Leave out the images' cosign signatures, attestations, SBOMs and OCI referrers.")
TrustedRootOption = typer.Option(
    None, "--trusted-root", metavar="TRUSTED_ROOT.JSON",
    help="Accept keyless cosign signatures whose Fulcio certificate and Rekor entry this Sigstore trusted "
         "root vouches for (with --certificate-identity and --certificate-oidc-issuer).")
CertificateIdentityOption = typer.Option(
    None, "--certificate-identity", help="Keyless: the signer's email or URI, as in its certificate.")
CertificateOidcIssuerOption = typer.Option(
    None, "--certificate-oidc-issuer", help="Keyless: the OIDC issuer that vouched for the signer.")
JsonOption = typer.Option(False, "--json", help="Print a machine-readable JSON report on stdout.")
# The registry a command reads or changes in place (inventory, prune): --registry, else the local one.
RegistryOption = typer.Option(
    None, "--registry", "-r",
    help="Registry HOST[:PORT][/PREFIX] [default: the registry `mirror registry up` started here].")
LocalRegistryOption = typer.Option(
    False, "--local-registry", help="The registry `mirror registry up` started here (the default).")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars.")

# What picks a topology's image list; `mirror pull` and `mirror lists` take the same options.
ModeOption = typer.Option(None, "--mode", help="Topology: k3s, rke, rke2 or docker (see `mirror lists`).")
K3sVersionOption = typer.Option(None, "--k3s-version")
KubernetesVersionOption = typer.Option(None, "--kubernetes-version", help="RKE system images version.")
Rke2VersionOption = typer.Option(None, "--rke2-version")
RancherVersionOption = typer.Option(None, "--rancher-version")
CertManagerVersionOption = typer.Option(None, "--cert-manager-version")
NoRegistryImageOption = typer.Option(False, "--no-registry-image", help="Leave out the bastion registry image.")
ImagesFileOption = typer.Option(None, "--images-file", "-f",
                                help="rancher-images.txt-style list (repeatable; added).")
ExcludeOption = typer.Option(None, "--exclude", help="Regex; matching references are dropped.")
DownstreamVersionsOption = typer.Option(
    None, "--downstream-versions",
    help="Of Rancher's per-Kubernetes-version images (system-agent-installer-*, k3s-upgrade, rke2-upgrade, ...), keep "
         "only these versions' and the local cluster's: v1.30, v1.30.4 or v1.30.4+k3s1 (comma-separated, repeatable).")
OfflineListsOption = typer.Option(
    False, "--offline-lists",
    help="Never fetch an image list: only built-in and cached ones (a version not built in is fetched "
         "from its release and cached otherwise).")


def select_images(mode: str | None, versions: dict[str, str | None], *, images: list[str] | None = None,
                  images_file: list[Path] | None = None, exclude: list[str] | None = None,
                  no_registry_image: bool = False, platforms: "list[Platform]", offline_lists: bool,
                  ca_file: Path | None, downstream_versions: list[str] | None = None) -> "Selection":
    """The images that pull's selection options name (lists.select_from_releases), its notes on stderr;
    ``pull``, ``sync run`` and ``lists`` read them alike."""
    from ..lists import select_from_releases

    selection, notes = select_from_releases(
        mode, versions, images=images, images_file=images_file, exclude=exclude,
        no_registry_image=no_registry_image, platforms=platforms, offline_lists=offline_lists, ca_file=ca_file,
        downstream_versions=downstream_versions)
    for note in notes:
        typer.echo(note, err=True)
    return selection


# Where source images are read from; `mirror pull` and `mirror sync run` take the same options.
PlatformOption = typer.Option(
    None, "--platform",
    help="Keep only these platforms, e.g. linux/amd64,linux/arm64 (an image pinned by @digest stays whole).")
SourceMirrorOption = typer.Option(
    None, "--source-mirror", help="REGISTRY=HOST[/PREFIX]: fetch that registry's images from a mirror.")
PlainHttpRegistryOption = typer.Option(
    None, "--plain-http-registry", help="HOST[:PORT] to reach over plain HTTP (repeatable).")
InsecureRegistryOption = typer.Option(
    None, "--insecure-registry", help="HOST[:PORT] whose TLS certificate is not verified (repeatable).")


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


def topology_versions(k3s: str | None, kubernetes: str | None, rke2: str | None, rancher: str | None,
                      cert_manager: str | None) -> dict[str, str | None]:
    """The version options, keyed by the component names in manifests/topologies.json."""
    return {"k3s": k3s, "kubernetes": kubernetes, "rke2": rke2, "rancher": rancher, "cert-manager": cert_manager}


def verifiers(paths: list[Path] | None, trusted_root: Path | None = None, identity: str | None = None,
              issuer: str | None = None, *, no_attachments: bool = False) -> list:
    """What may vouch for an image's signature: the --verify-key files and the keyless identity, loaded
    (a UsageError names a file that is no public key or trusted root)."""
    from ..attach.keyless import load_keyless
    from ..attach.keys import load_keys

    found = [*load_keys(paths or []), *load_keyless(trusted_root, identity, issuer)]
    if found and no_attachments:
        raise UsageError("--verify-key and --trusted-root need the signatures: not with --no-attachments")
    return found
