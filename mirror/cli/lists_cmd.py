"""``mirror lists``: the topologies, their components and versions, or one resolved list."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import lists
from .app import app
from .common import (
    CertManagerVersionOption, ExcludeOption, ImagesFileOption, JsonOption, K3sVersionOption, KubernetesVersionOption,
    ModeOption, NoRegistryImageOption, RancherVersionOption, Rke2VersionOption, handle_errors, topology_versions,
)
from .render import emit_json


def _overview() -> None:
    components = lists.components()
    for mode, spec in lists.topologies().items():
        typer.echo(f"{mode}: {spec['title']}")
        for component in spec["components"]:
            info = components[component]
            versions = ", ".join(f"{v} (default)" if v == info["default"] else v
                                 for v in lists.component_versions(component))
            option = info["option"] or "--no-registry-image to omit"
            typer.echo(f"  {component:<13} {versions}   [{option}]")
    typer.echo("Print a resolved list: mirror lists --mode MODE [--k3s-version V ...]")


@app.command("lists")
@handle_errors
def lists_command(
    mode: Optional[str] = ModeOption,
    k3s_version: Optional[str] = K3sVersionOption,
    kubernetes_version: Optional[str] = KubernetesVersionOption,
    rke2_version: Optional[str] = Rke2VersionOption,
    rancher_version: Optional[str] = RancherVersionOption,
    cert_manager_version: Optional[str] = CertManagerVersionOption,
    no_registry_image: bool = NoRegistryImageOption,
    images_file: Optional[list[Path]] = ImagesFileOption,
    exclude: Optional[list[str]] = ExcludeOption,
    json_report: bool = JsonOption,
) -> None:
    """Show topologies and versions; with --mode or --images-file, print the resolved image list."""
    versions = topology_versions(k3s_version, kubernetes_version, rke2_version, rancher_version,
                                 cert_manager_version)
    if mode is None and not images_file:
        if any(versions.values()) or exclude:
            lists.resolve_images(None, versions=versions, exclude=exclude or [])  # names what is wrong
        if json_report:
            emit_json({"topologies": {m: {"title": s["title"], "components": {
                c: {"versions": lists.component_versions(c), "default": lists.components()[c]["default"],
                    "option": lists.components()[c]["option"]} for c in s["components"]}}
                for m, s in lists.topologies().items()}})
        else:
            _overview()
        return
    refs, topology = lists.resolve_images(mode, versions=versions, extra_files=images_file or [],
                                          exclude=exclude or [], include_registry_image=not no_registry_image)
    if json_report:
        emit_json({"mode": mode, "versions": topology.versions if topology else {},
                   "images": [str(r) for r in refs]})
        return
    if topology:
        typer.echo(f"# mirror lists --mode {mode}: " + ", ".join(f"{c} {v}" for c, v in topology.versions.items()))
    for ref in refs:
        typer.echo(str(ref))
