"""``mirror inventory``: the disconnected side writes down what its registry holds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import anyio
import typer

from ..errors import UsageError
from ..safefiles import write_file
from .app import app
from .common import handle_errors
from .options import ExcludeOption, ImagesFileOption, JsonOption, NoRegistryImageOption, Release, release_options
from .reach import Reach, registry_options
from .render import emit_json


@app.command("inventory")
@handle_errors
@registry_options("to inventory (several: what every one holds, for a delta each can take)")
@release_options
def inventory_command(
    images: Optional[list[str]] = typer.Argument(None, help="Only these images (added to --mode's list)."),
    output: Path = typer.Option(..., "--output", "-o", help="Inventory to write, e.g. have.json."),
    reach: Reach = ...,  # --registry, TLS, credentials, --jobs (reach.py)
    images_file: Optional[list[Path]] = ImagesFileOption,
    release: Release = ...,  # --mode and the --*-version options (options.py)
    no_registry_image: bool = NoRegistryImageOption,
    exclude: Optional[list[str]] = ExcludeOption,
    json_report: bool = JsonOption,
) -> None:
    """Write what a registry holds (images, digests) for `mirror pull --base` on the connected side; of several,
    what every one of them holds."""
    from ..lists import resolve_images
    from ..transfer.inventory import Inventory, take_inventories

    if not output.absolute().parent.is_dir():
        raise UsageError(f"cannot write {output}: directory {output.absolute().parent} does not exist")
    selection = None
    if images or images_file or release.mode:
        selection, _ = resolve_images(
            release.mode, versions=release.versions,
            extra_files=images_file or [], extra_refs=images or [], exclude=exclude or [],
            include_registry_image=not no_registry_image)
    import regex

    from ..transfer.selection import TagPattern

    try:  # searched in names the registry's catalog gives: bounded per name, as sync's tag rules are
        patterns = [TagPattern(regex.compile(p), "--exclude") for p in exclude or []]
    except regex.error as exc:
        raise UsageError(f"--exclude {exc.pattern!r}: invalid regular expression: {exc}") from None
    keep = lambda source: not any(p.search(source) for p in patterns)  # noqa: E731
    taken = anyio.run(take_inventories, reach.targets(), selection, reach.jobs, keep)
    inventory = Inventory.common(taken)
    write_file(output, inventory.to_json())
    for one in taken:
        for repository, count in sorted(one.skipped_tags.items()):
            typer.echo(f"mirror: skipped: {one.registry}/{repository}: {count} listed tag(s) that are no tags",
                       err=True)
    held = [{"registry": one.address, "images": len(one.images), "digests": len(one.digests),
             "skipped_tags": one.skipped_tags} for one in taken]
    several = len(taken) > 1
    if json_report:  # several: what each holds, under targets
        emit_json({"path": str(output), "id": inventory.id, "registry": inventory.address,
                   "images": len(inventory.images), "digests": len(inventory.digests),
                   **({"targets": held} if several else {"skipped_tags": inventory.skipped_tags})})
    else:
        where = f"held by every one of {inventory.address}" if several else f"in {inventory.address}"
        typer.echo(f"wrote {output}: {len(inventory.images)} images, {len(inventory.digests)} digests {where} "
                   f"(id {inventory.id})")
        for one in held if several else ():
            typer.echo(f"  {one['registry']}: {one['images']} images, {one['digests']} digests")
