"""``mirror config KIND``: the node/Rancher configuration that makes clients pull from the private registry."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ..clientconfig import GENERATORS, ClientConfig, NodeRegistry
from ..clientconfig.containerd import DEFAULT_CERTS_DIR
from ..errors import UsageError
from ..model.target import RegistryAddress
from ..model.reference import Reference
from ..safefiles import Replacement
from .app import app
from .common import handle_errors
from .flag_values import read_password_stdin, registry_settings
from .options import CaFileOption, InsecureOption, PasswordStdinOption, PlainHttpOption, UsernameOption


def write_files(config: ClientConfig, output_dir: Path, force: bool = False) -> list[str]:
    """Write every file under ``output_dir``; password-bearing ones mode 0600. Returns summary lines.

    A file already there (an edited registries.yaml, say) is kept, and nothing written, unless ``force``.
    """
    existing = [output_dir / f.path for f in config.files if (output_dir / f.path).exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]} exists{more}: pass --force to overwrite, or another --output-dir")
    lines = []
    for generated in config.files:
        path = output_dir / generated.path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created with its final mode, so a password is never readable by others, not even briefly.
        with Replacement(path, mode=0o600 if generated.secret else 0o644) as new:
            if generated.copy_of is not None:
                with open(generated.copy_of, "rb") as source:
                    shutil.copyfileobj(source, new.file)
            else:
                new.file.write(generated.content.encode("utf-8"))
        lines.append(f"wrote {path} -> {generated.install_path}")
    return lines


def print_files(config: ClientConfig) -> None:
    """Files on stdout; a header per file only when there are several (so one file can be redirected)."""
    printed = [f for f in config.files if f.copy_of is None]
    for generated in printed:
        if len(printed) > 1:
            typer.echo(f"# ==> {generated.path} (install as {generated.install_path})")
        typer.echo(generated.content, nl=False)
    for copied in (f for f in config.files if f.copy_of is not None):
        config.notes.insert(0, f"copy {copied.copy_of} to {copied.install_path}")


def _registry_name(text: str) -> str:
    """A --source-registry value: a registry host (docker.io aliases normalised), nothing else."""
    name = text.strip().strip("/")
    if "/" in name or not ("." in name or ":" in name or name == "localhost"):
        raise UsageError(f"--source-registry {text!r}: expected a registry host such as quay.io or ghcr.io")
    return Reference.parse(f"{name}/probe/repository").registry


@app.command("config")
@handle_errors
def config_command(
    kind: str = typer.Argument(..., help=f"What to generate: {', '.join(GENERATORS)}."),
    registries: Optional[list[str]] = typer.Option(
        None, "--registry", "-r",
        help="The private registry, HOST[:PORT][/PREFIX]; repeat it for registries holding the same images, "
             "which nodes try in order (k3s, rke2, containerd; docker: docker.io names only) "
             "[default: the registry `mirror registry up` started here]."),
    prefix: str = typer.Option("", "--prefix", help="Path prefix the images were pushed under (Harbor project)."),
    ca_file: Optional[Path] = CaFileOption,
    insecure: bool = InsecureOption,
    plain_http: bool = PlainHttpOption,
    username: Optional[str] = UsernameOption,
    password_stdin: bool = PasswordStdinOption,
    include_secrets: bool = typer.Option(
        False, "--include-secrets", help="Write the --password-stdin password into the files (else a placeholder)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Mirror the source registries of this bundle."),
    from_registry: bool = typer.Option(
        False, "--from-registry", help="Find the source registries in the target registry's catalog."),
    source_registry: Optional[list[str]] = typer.Option(
        None, "--source-registry", help="Also mirror this source registry (repeatable)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Write the files here (else stdout)."),
    force: bool = typer.Option(False, "--force", help="Overwrite files already in --output-dir."),
    certs_dir: str = typer.Option(DEFAULT_CERTS_DIR, "--certs-dir",
                                  help="containerd: where the certs.d tree is installed on the nodes."),
    containerd_version: str = typer.Option(
        "1", "--containerd-version",
        help="containerd: 1.x (config version 2, also read by 2.x) or 2.x (version 3, to merge into a 2.x "
             "config.toml)."),
    embedded_mirror: bool = typer.Option(
        False, "--embedded-mirror", help="k3s, rke2: also turn on the embedded peer-to-peer registry mirror "
                                         "(Spegel; config.yaml for the servers): nodes share what one of them "
                                         "pulled, the registry serves each image about once (docs/ha.md)."),
    rancher_version: Optional[str] = typer.Option(None, "--rancher-version", help="rancher: version to run."),
    cert_manager_version: Optional[str] = typer.Option(
        None, "--cert-manager-version", help="rancher: cert-manager whose images the values point at."),
) -> None:
    """Generate K3s/RKE2 registries.yaml, RKE cluster.yml, containerd certs.d, Docker daemon.json or Rancher values."""
    if kind not in GENERATORS:
        raise UsageError(f"unknown config kind {kind!r}; available: {', '.join(GENERATORS)}")
    if bundle is not None and from_registry:
        raise UsageError("--bundle and --from-registry are alternatives: give one")
    if embedded_mirror and kind not in ("k3s", "rke2"):
        raise UsageError(f"--embedded-mirror is K3s's and RKE2's (their embedded Spegel), not {kind}'s")
    addresses = [RegistryAddress.parse(r) for r in registries or []]  # HOST[:PORT][/PREFIX], http://
    named = {a.prefix for a in addresses}
    if len(named) > 1:  # registries standing in for each other hold the images at the same paths
        raise UsageError(f"--registry names prefixes {', '.join(repr(p) for p in sorted(named))}: registries "
                         "holding the same images hold them under the same prefix")
    for address in addresses[:1]:
        if address.prefix and prefix.strip("/") not in ("", address.prefix):
            raise UsageError(f"--registry names prefix {address.prefix!r} and --prefix {prefix!r}: give one")
        prefix = address.prefix or prefix
    if len({a.plain_http for a in addresses}) > 1 and not plain_http:
        raise UsageError("--registry: some are http:// and some not; nodes reach every registry the same way")
    plain_http = plain_http or any(a.plain_http for a in addresses)
    registry = addresses[0].host if addresses else None
    fallbacks = [a.host for a in addresses[1:]]
    if plain_http and (insecure or ca_file):
        raise UsageError("--plain-http does not go with --insecure or --ca-file")
    from ..clientconfig import recorded, sources  # certificates and registry reads: only this command needs them

    # --username alone is fine here: the files then carry a placeholder for the password.
    credentials = read_password_stdin(password_stdin, username) if password_stdin else None
    # The registry `up` started: its CA and user, as push uses them; flags given still win.
    started = recorded.find(registry)
    reach = started.local.host if started else registry  # how this machine reaches it (--from-registry)
    if started is not None:
        registry = started.registry
        if started.warning:
            typer.echo(f"mirror: warning: {started.warning}", err=True)
        if not (insecure or plain_http):
            ca_file = ca_file or started.local.ca_file
        plain_http = plain_http or started.local.plain_http
        if username is None:
            credentials = credentials or started.local.credentials
            username = credentials.username if credentials else None
    if include_secrets and not credentials:
        raise UsageError("--include-secrets needs --username and --password-stdin "
                         "(or the registry `mirror registry up` started)")
    settings = registry_settings(ca_file=ca_file, insecure=insecure, plain_http=plain_http, credentials=credentials)
    target = NodeRegistry(registry, fallbacks=tuple(fallbacks), prefix=prefix, ca_file=ca_file, username=username,
                    password=credentials.password if credentials and include_secrets else None,
                    plain_http=plain_http, insecure=insecure)  # validates --registry before any connection
    bundled = sources.bundle_images(bundle) if bundle is not None else None
    if bundled is not None:
        found = sources.from_references(bundled)
    elif from_registry:
        found = sources.from_registry(reach, settings, prefix)
    else:
        found = sources.from_manifests()
    extra = [_registry_name(r) for r in source_registry or []]
    target = replace(target, source_registries=sources.ordered([*found, *extra]))
    config = GENERATORS[kind](target, certs_dir=certs_dir, containerd_version=containerd_version,
                              rancher_version=rancher_version, cert_manager_version=cert_manager_version,
                              bundled=bundled, embedded_mirror=embedded_mirror)
    if output_dir is not None:
        for line in write_files(config, output_dir, force):
            typer.echo(line, err=True)
    else:
        print_files(config)
    if fallbacks and kind in ("rke", "rancher"):
        config.notes.append(f"{kind} names one registry ({registry}); for the others to stand in, give the "
                            "registries one load-balanced name (docs/ha.md)")
    for note in config.notes:
        typer.echo(f"note: {note}", err=True)
