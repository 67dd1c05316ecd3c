"""``mirror inventory``: the disconnected side writes down what its registry holds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import anyio
import typer

from ..errors import UsageError
from ..safefiles import write_file
from .app import app
from .common import (
    CaFileOption, CertManagerVersionOption, ExcludeOption, ImagesFileOption, InsecureOption, JobsOption, JsonOption,
    K3sVersionOption, KubernetesVersionOption, LocalRegistryOption, ModeOption, NoRegistryImageOption,
    PasswordStdinOption, PlainHttpOption, RancherVersionOption, RegistryOption, Rke2VersionOption, UsernameOption,
    handle_errors, target_registry, topology_versions,
)
from .render import emit_json


@app.command("inventory")
@handle_errors
def inventory_command(
    images: Optional[list[str]] = typer.Argument(None, help="Only these images (added to --mode's list)."),
    output: Path = typer.Option(..., "--output", "-o", help="Inventory to write, e.g. have.json."),
    registry: Optional[str] = RegistryOption,
    local_registry: bool = LocalRegistryOption,
    images_file: Optional[list[Path]] = ImagesFileOption,
    mode: Optional[str] = ModeOption,
    k3s_version: Optional[str] = K3sVersionOption,
    kubernetes_version: Optional[str] = KubernetesVersionOption,
    rke2_version: Optional[str] = Rke2VersionOption,
    rancher_version: Optional[str] = RancherVersionOption,
    cert_manager_version: Optional[str] = CertManagerVersionOption,
    no_registry_image: bool = NoRegistryImageOption,
    exclude: Optional[list[str]] = ExcludeOption,
    ca_file: Optional[Path] = CaFileOption,
    insecure: bool = InsecureOption,
    plain_http: bool = PlainHttpOption,
    username: Optional[str] = UsernameOption,
    password_stdin: bool = PasswordStdinOption,
    jobs: int = JobsOption,
    json_report: bool = JsonOption,
) -> None:
    """Write what a registry holds (images, digests) for `mirror pull --base` on the connected side."""
    from ..lists import resolve_images
    from ..registry.client import RegistryClient
    from ..transfer.inventory import take_inventory

    if registry is not None and local_registry:
        raise UsageError("--registry and --local-registry exclude each other")
    if not output.absolute().parent.is_dir():
        raise UsageError(f"cannot write {output}: directory {output.absolute().parent} does not exist")
    selection = None
    if images or images_file or mode:
        selection, _ = resolve_images(
            mode, versions=topology_versions(k3s_version, kubernetes_version, rke2_version, rancher_version,
                                             cert_manager_version),
            extra_files=images_file or [], extra_refs=images or [], exclude=exclude or [],
            include_registry_image=not no_registry_image)
    import regex

    from ..transfer.selection import TagPattern

    try:  # searched in names the registry's catalog gives: bounded per name, as sync's tag rules are
        patterns = [TagPattern(regex.compile(p), "--exclude") for p in exclude or []]
    except regex.error as exc:
        raise UsageError(f"--exclude {exc.pattern!r}: invalid regular expression: {exc}") from None
    target = target_registry(registry, ca_file=ca_file, insecure=insecure, plain_http=plain_http,
                             username=username, password_stdin=password_stdin, jobs=jobs)

    async def run():
        async with RegistryClient(target.host, target.settings) as client:
            await client.ping()
            return await take_inventory(client, target, selection, jobs,
                                        keep=lambda source: not any(p.search(source) for p in patterns))

    inventory = anyio.run(run)
    write_file(output, inventory.to_json())
    for repository, count in sorted(inventory.skipped_tags.items()):
        typer.echo(f"mirror: skipped: {inventory.registry}/{repository}: {count} listed tag(s) that are no tags",
                   err=True)
    if json_report:
        emit_json({"path": str(output), "id": inventory.id, "registry": inventory.address,
                   "images": len(inventory.images), "digests": len(inventory.digests),
                   "skipped_tags": inventory.skipped_tags})
    else:
        typer.echo(f"wrote {output}: {len(inventory.images)} images, {len(inventory.digests)} digests "
                   f"in {inventory.address} (id {inventory.id})")
