"""``mirror push``: the disconnected side's command."""

from __future__ import annotations

import gc
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import anyio
import typer

from ..progress import Progress
from .app import app
from .common import handle_errors
from .options import JsonOption, NoSpaceCheckOption, QuietOption, Signers, signer_options
from .reach import Reach, registry_options
from ..errors import ExitCode, worst_exit_code
from ..units import human_size, parse_size
from .render import emit_json, report_failures


@app.command("push")
@handle_errors
@registry_options("to write (several: all from one read of the bundle)")
@signer_options
def push_command(
    bundle: Path = typer.Argument(..., help="Bundle written by `mirror pull` (NAME.tar.zst, or its split parts)."),
    reach: Reach = ...,  # --registry, TLS, credentials, --jobs (reach.py)
    window: str = typer.Option("512M", "--window", help="Spool (memory + temp disk) for blobs in flight."),
    spool_dir: Optional[Path] = typer.Option(None, "--spool-dir", help="Where spooled blobs go (default: $TMPDIR)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would go where; contact nothing."),
    no_space_check: bool = NoSpaceCheckOption,
    signers: Signers = ...,  # --verify-key, --trusted-root, --certificate-* (options.py)
    json_report: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Stream a bundle into a registry: concurrent uploads, every digest verified."""
    from ..server.storage import managed_registry
    from ..transfer.push import PushRequest, push_all
    from ..units import MIB

    first, *also = reach.targets()
    managed = managed_registry(first.host)  # the registry `up` manages, if the first target is it
    request = PushRequest(
        bundle=bundle,
        target=first,
        also=tuple(also),
        jobs=reach.jobs,
        window=max(parse_size(window, "--window"), MIB),
        spool_dir=spool_dir,
        dry_run=dry_run,
        space_check=not no_space_check,
        # on object storage (registry up --storage) the host's disk holds no images: nothing to check there
        registry_data_dir=managed.data_dir if managed and not managed.state.storage else None,
        verify_keys=signers.load(),
    )
    started = datetime.now(timezone.utc)
    # What exists by now (imported modules, mostly) lives to the end: the collector need not walk it
    # again each time the many short-lived request objects of a push trigger a full collection.
    gc.freeze()
    results = anyio.run(push_all, request, Progress(quiet or json_report))
    for result in results:
        for warning in result.warnings:
            typer.echo(f"mirror: warning: {warning}", err=True)
    if json_report:  # one target: its report, as ever; several: a report each, and the worst exit code
        emit_json(results[0].to_json() if len(results) == 1 else
                  {"targets": [r.to_json() for r in results], "exit_code": int(_worst(results))})
    else:
        for result in results:
            _print_result(result, dry_run, quiet)
    failed = [r for r in results if r.failures]
    for result in failed:
        explained = managed is not None and result is results[0]
        report_failures(result.failures, managed.explain(result.causes, started) if explained else result.causes)
    if failed:
        raise typer.Exit(int(_worst(results)))


def _worst(results: list) -> ExitCode:
    """One target: its code. Several: their failures ranked as errors.worst_exit_code ranks a run's (a code
    that only one target's failures mean, such as a missing delta base, is that target's line to say)."""
    if len(results) == 1:
        return results[0].exit_code
    return worst_exit_code(cause for result in results for cause in result.causes.values())


def _print_result(result, dry_run: bool, quiet: bool) -> None:
    if dry_run:
        for image in result.images:
            typer.echo(f"{image['source']} -> {image['target']}")
    else:
        attached = sum("attached_to" in image for image in result.images)
        typer.echo(
            f"pushed {len(result.images) - attached} images"
            + (f" and {attached} signatures, attestations, SBOMs and referrers" if attached else "")
            + f" to {result.registry}: "
            f"{result.uploaded_blobs} blobs uploaded ({human_size(result.uploaded_bytes)}), "
            f"{result.mounted_blobs} mounted, {result.present_blobs} already there; "
            f"{result.manifests_pushed} manifests, {result.tags_pushed} tags")
        if result.kind == "delta":
            changes = [image.get("change") for image in result.images]
            typer.echo(f"delta of {', '.join(result.base)}: {changes.count('added')} added, "
                       f"{changes.count('updated')} updated, {changes.count('unchanged')} unchanged")
        for image in result.images:  # a tag that now means another image: which, and from what
            if image.get("change") == "updated" and not quiet:
                typer.echo(f"  updated: {image['source']} -> {image['target']} "
                           f"({image['previous']} -> {image['digest']})")
