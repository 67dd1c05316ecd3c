"""``mirror pull``: the connected side's command."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import anyio
import typer

from ..errors import ExitCode, ImagesFailed, UsageError
from ..progress import Progress
from .app import app
from .common import handle_errors
from .options import (
    ImageChoice, JobsOption, JsonOption, NoAttachmentsOption, NoSpaceCheckOption, QuietOption, Release, Signers,
    WaitForLimitOption, image_options, release_options, signer_options,
)
from ..units import parse_size
from .reach import Sources, source_options
from .render import emit_json, report_failures, written_lines
from .kit_options import KitChoice, kit_options

if TYPE_CHECKING:
    from ..model.reference import Reference
    from ..transfer.pull import PullRequest


@app.command("pull")
@handle_errors
@release_options
@image_options
@signer_options
@kit_options
@source_options
def pull_command(
    images: Optional[list[str]] = typer.Argument(None, help="Image references (added to --mode's list)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Bundle to write, e.g. bundle.tar.zst."),
    release: Release = ...,  # --mode and the --*-version options (options.py)
    chosen: ImageChoice = ...,  # --images-file, --exclude, --downstream-versions, --offline-lists ... (options.py)
    kit_choice: KitChoice = ...,  # --no-charts, --chart, --file and the other kit options (kit_options.py)
    reading: Sources = ...,  # --platform, --source-mirror, --plain-http-registry, ... --ca-file (reach.py)
    jobs: int = JobsOption,
    work_dir: Optional[Path] = typer.Option(
        None, "--work-dir",
        help="Where blobs are fetched; a re-run resumes from it, and it is never deleted "
             "[default: .<output>.work beside the output, removed after a complete bundle]."),
    keep_work: bool = typer.Option(False, "--keep-work", help="Keep the default work dir after writing the bundle."),
    keep_going: bool = typer.Option(
        False, "--keep-going", help="Write a bundle of the images that worked (still exit 1 naming the rest)."),
    split_size: Optional[str] = typer.Option(
        None, "--split-size",
        help="Cut the bundle into parts of at most this size, e.g. 4G (capped at 4 GiB - 1, what FAT32 takes)."),
    level: int = typer.Option(
        1, "--level", min=1, max=19,
        help="zstd level. Layers are already gzip'd, so higher levels cost CPU for little; raise it for "
             "images with uncompressed layers."),
    base: Optional[list[Path]] = typer.Option(
        None, "--base",
        help="What the target already holds: an inventory (`mirror inventory`), a previous bundle or its "
             "mirror-bundle.json (repeatable; united). Writes a delta bundle leaving all of it out."),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Print the image list, the download size and, for a registry with a rate limit, the pulls it costs "
             "against what is left; fetch no blob."),
    wait_for_limit: bool = WaitForLimitOption,
    force: bool = typer.Option(False, "--force", help="Replace a bundle already at -o."),
    with_installer: bool = typer.Option(
        False, "--with-installer",
        help="Also write mirror's offline installer beside the bundle (NAME.mirror-installer.tar.gz and its "
             ".sha256), made before any image is fetched."),
    no_space_check: bool = NoSpaceCheckOption,
    no_attachments: bool = NoAttachmentsOption,
    signers: Signers = ...,  # --verify-key, --trusted-root, --certificate-* (options.py)
    json_report: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Pull images into ONE portable bundle (an OCI image layout in a tar.zst)."""
    from ..transfer.delta import load_base  # imported here so other commands start faster
    from ..transfer.pull import PullRequest, check_output, pull

    platforms = reading.platforms()
    selection = chosen.select(release, platforms, reading.ca_file, images)
    refs, topology = selection.images, selection.topology
    if output is None and not dry_run:
        raise UsageError("--output/-o is required (the bundle to write, e.g. bundle.tar.zst)")
    if output is not None and not dry_run:
        check_output(output, force)
    kit = kit_choice.select(topology, platforms, offline_lists=chosen.offline_lists, keep_going=keep_going,
                            ca_file=reading.ca_file)
    if not refs and not kit.items:
        raise UsageError("no images to pull: name images, --images-file or --mode")
    sources, settings_for = reading.access(jobs)
    request = PullRequest(
        images=refs,
        output=(output or Path("bundle.tar.zst")).absolute(),
        sources=sources,
        settings_for=settings_for,
        platforms=platforms,
        jobs=jobs,
        work_dir=work_dir,
        keep_going=keep_going,
        keep_work=keep_work,
        topology=asdict(topology) if topology else None,
        compression_level=level,
        part_size=parse_size(split_size, "--split-size") if split_size else None,
        base=load_base(base) if base else None,
        kit=kit.items,
        kit_fetcher=kit.fetcher,
        kit_failures=kit.failures,
        kit_causes=kit.causes,
        space_check=not no_space_check,
        attachments=not no_attachments,
        verify_keys=signers.load(no_attachments=no_attachments),
        wait_for_limit=wait_for_limit,
        log=lambda line: typer.echo(f"mirror: {line}", err=True),
    )
    progress = Progress(quiet or json_report)
    if dry_run:
        _dry_run(request, progress, json_report, selection.trimmed if chosen.downstream_versions is not None else None)
        return
    installer = None
    if with_installer:  # built before anything is fetched: a failure costs no download
        from ..installer import PendingInstaller, installer_beside

        say = (lambda line: None) if quiet or json_report else \
            (lambda line: typer.echo(f"mirror: offline installer: {line}", err=True))
        installer = PendingInstaller(installer_beside(request.output), log=say)
    from ..runlock import RunLock

    try:
        # two pulls appending to one work dir's pack would write over each other's records
        with RunLock(f"pull {request.store_dir.resolve()}", f"pull using the work dir {request.store_dir}"):
            result = anyio.run(pull, request, progress)
        made = installer.publish() if installer and result.bundle else None
    except ImagesFailed as failed:
        if json_report:  # a script still gets its report: no bundle, and why
            emit_json({"bundle": None, "failures": failed.failures, "exit_code": int(failed.exit_code)})
        raise
    finally:
        if installer:
            installer.discard()
    if json_report:
        emit_json({**result.to_json(), **({"installer": {"path": str(made.path), "sha256": made.sha256}}
                                          if made else {})})
    elif result.bundle:
        for line in written_lines(result, made):
            typer.echo(line)
    if result.failures:
        report_failures(result.failures)
    if result.deferral:
        typer.echo(f"mirror: deferred: {result.deferral}", err=True)
    if result.failures or result.deferred:
        raise typer.Exit(int(result.exit_code))


def _dry_run(request: PullRequest, progress: Progress, json_report: bool, trimmed: list[Reference] | None) -> None:
    """The list, the download size where sources answer, a rate limit's cost (transfer/dry_run.py)."""
    from ..transfer.dry_run import dry_run

    found = anyio.run(dry_run, request, progress, trimmed)
    if json_report:
        emit_json(found.to_json())
    else:
        for line in found.listing():
            typer.echo(line)
        typer.echo(found.summary(), err=True)
        for line in found.cost_lines():
            typer.echo(f"mirror: {line}", err=True)
    if found.failures:
        report_failures(found.failures)
        raise typer.Exit(int(ExitCode.FAILED))
