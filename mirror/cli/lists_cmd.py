"""``mirror lists``: the topologies, their components and versions, or one resolved list."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .. import lists
from .app import app
from .common import handle_errors
from .flag_values import parse_platforms
from .options import CaFileOption, ImageChoice, JsonOption, Release, image_options, release_options
from .render import emit_json

if TYPE_CHECKING:
    from ..lists.releases import ReleaseLists


def _overview(releases: ReleaseLists) -> None:
    components = lists.components()
    for mode, spec in lists.topologies().items():
        typer.echo(f"{mode}: {spec['title']}")
        for component in spec["components"]:
            info = components[component]
            built_in = lists.component_versions(component)
            versions = ", ".join(
                [f"{v} (default)" if v == info["default"] else v for v in built_in]
                + [f"{v} (cached)" for v in releases.cached_versions(component) if v not in built_in])
            option = info["option"] or "--no-registry-image to omit"
            typer.echo(f"  {component:<13} {versions}   [{option}]")
    typer.echo("Print a resolved list: mirror lists --mode MODE [--k3s-version V ...]")
    typer.echo(f"Other versions come from their release (K3s, RKE2, Rancher: the release assets; RKE: Rancher's "
               f"metadata; --k3s-version/--rke2-version latest: the stable channel) and are cached in "
               f"{releases.cache}; --offline-lists never fetches.")


@app.command("lists")
@handle_errors
@release_options
@image_options
def lists_command(
    release: Release = ...,  # --mode and the --*-version options (options.py)
    chosen: ImageChoice = ...,  # --images-file, --exclude, --downstream-versions, --offline-lists ... (options.py)
    ca_file: Optional[Path] = CaFileOption,
    platform: Optional[list[str]] = typer.Option(
        None, "--platform",
        help="One architecture, e.g. linux/arm64: that architecture's RKE2 list, as pull takes it [default: amd64's]."),
    json_report: bool = JsonOption,
) -> None:
    """Show topologies and versions; with --mode or --images-file, print the resolved image list."""
    mode, versions = release.mode, release.versions
    platforms = parse_platforms(platform or [])
    if mode is None and not chosen.images_file:
        if any(versions.values()) or chosen.exclude or chosen.downstream_versions is not None:  # names what is wrong
            lists.resolve_images(None, versions=versions, exclude=chosen.exclude or [],
                                 downstream_versions=chosen.downstream_versions)
        from ..lists.releases import ReleaseLists  # it brings an HTTP client: imported only where needed

        releases = ReleaseLists()  # only its cache is read here
        if json_report:
            emit_json({"topologies": {m: {"title": s["title"], "components": {
                c: {"versions": lists.component_versions(c), "default": lists.components()[c]["default"],
                    "option": lists.components()[c]["option"], "cached": releases.cached_versions(c)}
                for c in s["components"]}}
                for m, s in lists.topologies().items()}, "cache": str(releases.cache)})
        else:
            _overview(releases)
        return
    selection = chosen.select(release, platforms, ca_file)
    refs, topology = selection.images, selection.topology
    if json_report:
        trim = {"downstream_versions": topology.downstream_versions,
                "trimmed": [str(r) for r in selection.trimmed]} if topology and topology.downstream_versions else {}
        emit_json({"mode": mode, "versions": topology.versions if topology else {},
                   "list_arch": topology.list_arch if topology else None,
                   "sources": {c: vars(s) for c, s in topology.sources.items()} if topology else {},
                   **trim, "images": [str(r) for r in refs]})
        return
    if topology:
        typer.echo(f"# mirror lists --mode {mode}: " + ", ".join(f"{c} {v}" for c, v in topology.versions.items()))
        for component, source in topology.sources.items():
            typer.echo(f"#   {component} {topology.versions[component]}: {source.describe()}")
        if topology.downstream_versions:
            typer.echo(f"# --downstream-versions {','.join(topology.downstream_versions)}: "
                       f"{len(selection.trimmed)} per-Kubernetes-version images of other versions left out")
    for ref in refs:
        typer.echo(str(ref))
