"""What a sync run says: the summary line, a line per image that moved, the report file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..clock import parse_time
from ..units import human_size
from .render import REPORT_SCHEMA, emit_json, report_failures

if TYPE_CHECKING:
    from ..transfer.sync_result import ImageResult, SyncResult


def finish(results: list["SyncResult"], report: Path | None, json_report: bool, quiet: bool = False) -> None:
    """Write the report, say what happened (at each target), exit with the run's code (several targets: the
    worst); ``quiet``: the summary lines and errors."""
    from ..transfer.sync_result import runs_to_json, worst_exit

    document = {"schema_version": REPORT_SCHEMA, **runs_to_json(results)}  # what --json prints, too
    if report is not None:
        write_report(report, document)
    if json_report:
        emit_json(document)
    for result in results:
        if not json_report:
            _say(result, quiet)
        _warn(result, quiet, first=result is results[0])
    code = worst_exit(results)
    if code:
        raise typer.Exit(int(code))


def _say(result: "SyncResult", quiet: bool) -> None:
    """The summary line, then a line per image that moved and per tag pruned."""
    from ..transfer.sync_result import ACTIONS

    counts = ", ".join(f"{result.count(a)} {a}" for a in ACTIONS if result.count(a))
    verb = "would sync" if result.dry_run else "synced"
    kit = sum(entry.kind == "kit" for entry in result.images)
    carried = f"{len(result.images) - kit} images" + (f" and {kit} kit charts and files" if kit else "")
    if result.delta is None:
        typer.echo(f"{verb} {carried} to {result.target}: {counts or 'nothing to do'}; "
                   f"{result.uploaded_blobs} blobs uploaded ({human_size(result.uploaded_bytes)}), "
                   f"{result.mounted_blobs} mounted, {result.skipped_blobs} already there")
    else:
        base = ", ".join(result.delta["base"])
        if result.delta["path"]:
            said = (f"wrote {result.delta['path']} ({human_size(result.delta['size'])}), a delta of {carried} "
                    f"against {base}")
        elif result.dry_run:
            said = f"would write a delta of {carried} against {base}"
        elif result.failures:
            said = "no bundle written"
        else:
            said = f"nothing changed since {base}: no bundle written"
        typer.echo(f"{said}: {counts or 'nothing to do'}")
    for image in [] if quiet else result.images:
        if image.action in ("copied", "updated", "attached", "moved") or (
                result.dry_run and image.action != "unchanged"):
            typer.echo(f"  {image_line(image)}")
    for tag in [] if quiet or not result.pruned else result.pruned.pruned:
        verb = "would prune" if result.dry_run else "pruned"
        typer.echo(f"  {verb}: {tag.source or tag.repository + ':' + tag.tag} ({tag.digest})")
    for tag in [] if quiet or not result.pruned else result.pruned.skipped:
        typer.echo(f"  kept: {tag.source or tag.repository + ':' + tag.tag}: {tag.reason}")


def _warn(result: "SyncResult", quiet: bool, first: bool) -> None:
    """On stderr: what was not pruned, deferred, skipped (once: the sources' own), failed."""
    for repository, why in sorted(result.not_pruned.items()):
        typer.echo(f"mirror: not pruned: {repository}: {why}", err=True)
    deferred = [image for image in result.images if image.action == "deferred"]
    for image in deferred[:1] if quiet else deferred:
        more = f" (and {len(deferred) - 1} more)" if quiet and len(deferred) > 1 else ""
        typer.echo(f"mirror: deferred: {image.source}: {image.error}{more}", err=True)
    for skipped in result.skipped_tags if first else []:
        typer.echo(f"mirror: skipped: {skipped.describe()}", err=True)
    if result.failures:
        report_failures(result.failures, _causes(result))


def _causes(result: "SyncResult") -> dict:
    """The failed images' errors; in the registry `up` manages, a full disk is named by its data dir (and its
    log read for a 5xx that did not say why: server/storage.py)."""
    from ..server.storage import managed_registry

    managed = managed_registry(result.target.split("/")[0]) if result.delta is None else None
    return managed.explain(result.causes, parse_time(result.started)) if managed else result.causes


def image_line(image: "ImageResult") -> str:
    """``updated: SRC -> TARGET (sha256:old… -> sha256:new…, the old kept as TAG-prev-…)``."""
    line = f"{image.action}: {image.source} -> {image.target}"
    if image.action == "updated":
        kept = f", the old kept as {image.backup_tag}" if image.backup_tag else ""
        line += f" ({image.old_digest} -> {image.new_digest}{kept})"
    elif image.action == "moved":
        line += f" (immutable: left at {image.old_digest}; upstream now {image.new_digest})"
    return line


def write_report(path: Path, document: dict) -> None:
    """All or nothing: a half-written report is never left for a script to read."""
    from ..safefiles import write_file

    write_file(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
