"""``mirror prune``: delete the tags a registry holds that the kept set no longer names."""

from __future__ import annotations

from pathlib import Path
from typing import List

import anyio
import typer

from .app import app
from .common import handle_errors
from .options import JsonOption
from .reach import Reach, registry_options
from .render import emit_json, report_failures


@app.command("prune", help="Delete the tags of a registry that --keep no longer names, in the repositories it "
                           "names; never a manifest a kept tag needs. Then `mirror registry gc` frees the bytes. "
                           "Exit codes: 0 done; 1 some tags or repositories failed (the rest were done); 2 bad "
                           "--keep file, or the registry refuses deletes (nothing deleted); 3 credentials refused.")
@handle_errors
@registry_options("to prune", several=False)
def prune_command(
    keep: List[Path] = typer.Option(..., "--keep", help="Bundle, inventory (`mirror inventory`) or sync.yaml "
                                                        "naming what stays (repeatable; united)."),
    reach: Reach = ...,  # --registry, TLS, credentials, --jobs (reach.py)
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be pruned; delete nothing."),
    json_report: bool = JsonOption,
) -> None:
    from ..registry.client import RegistryClient
    from ..transfer.keep import load_kept
    from ..transfer.prune import prune

    kept = load_kept(keep)
    [target] = reach.targets()

    async def run():
        async with RegistryClient(target.host, target.settings) as client:
            await client.ping()
            return await prune(client, target, kept, dry_run=dry_run, jobs=reach.jobs)

    report = anyio.run(run)
    if json_report:
        emit_json(report.to_json())
    else:
        verb = "would prune" if dry_run else "pruned"
        for entry in report.pruned:
            typer.echo(f"{verb} {target.host}/{entry.repository}:{entry.tag} ({entry.digest})")
        for entry in report.skipped:
            typer.echo(f"kept {target.host}/{entry.repository}:{entry.tag}: {entry.reason}")
        deleted = "" if dry_run else f" ({report.manifests_deleted} manifests deleted)"
        held = f", {len(report.skipped)} more as a kept tag needs their manifest" if report.skipped else ""
        typer.echo(f"{verb} {len(report.pruned)} tags in {len(report.repositories)} repositories of "
                   f"{report.registry}{deleted}; kept {report.kept}{held}")
        if report.pruned and not dry_run:
            typer.echo("next: mirror registry gc   (frees their bytes, in a registry `mirror registry up` runs)")
    if report.failures:
        report_failures(report.failures)
        raise typer.Exit(int(report.exit_code))
