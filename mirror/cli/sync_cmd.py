"""``mirror sync run``: registry to registry, for scheduled resync jobs.

Exit codes: 0 everything in sync (or nothing to do); 1 some images failed;
2 bad flags or config (one line naming file:line and key); 3 authentication
or TLS refused; 4 integrity; 6 the source's rate limit deferred some images
to the next run; 7 another run of the same job holds its lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..progress import Progress
from .app import app
from .common import flags_given, handle_errors
from .flag_values import target_registries
from .options import (
    ImageChoice, JobsOption, JsonOption, NoAttachmentsOption, PasswordStdinOption, QuietOption, Release, Signers,
    UsernameOption, WaitForLimitOption, image_options, release_options, signer_options,
)
from .kit_options import KitChoice, kit_options
from .reach import Sources, source_options
from .sync_render import finish

EXIT_CODES = ("Exit codes: 0 in sync or nothing to do; 1 some images failed; 2 bad flags or config; "
              "3 auth/TLS refused; 4 integrity; 6 deferred by a rate limit; 7 another run holds the lock.")

sync_app = typer.Typer(
    help="Keep a registry in sync with upstream (scheduled resync jobs): registry to registry, or for an air "
         "gap as nightly delta bundles.",
    no_args_is_help=True,
)
app.add_typer(sync_app, name="sync")


@sync_app.command("run", epilog=EXIT_CODES)
@handle_errors
@release_options
@image_options
@signer_options
@kit_options
@source_options
def run_command(
    context: typer.Context,
    images: Optional[list[str]] = typer.Argument(None, help="Image references (added to --mode's list)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="sync.yaml: the job (see docs/sync.md)."),
    to: Optional[list[str]] = typer.Option(
        None, "--to", help="Target registry HOST[:PORT][/PREFIX]; repeat it to write several registries from one "
                           "read of the sources (a result each, the worst exit code)."),
    to_bundle: Optional[Path] = typer.Option(
        None, "--to-bundle",
        help="Air gap: write DIR/<name>-<UTC time>.tar.zst, a delta against --base "
             "(or nothing, when nothing changed)."),
    base: Optional[list[Path]] = typer.Option(
        None, "--base", help="With --to-bundle: an inventory of the bastion (or a bundle it holds); repeatable."),
    name: str = typer.Option("mirror", "--name", help="With --to-bundle: the bundles' name before the time."),
    release: Release = ...,  # --mode and the --*-version options (options.py)
    chosen: ImageChoice = ...,  # --images-file, --exclude, --downstream-versions, --offline-lists ... (options.py)
    kit_choice: KitChoice = ...,  # --no-charts, --chart, --file and the other kit options (kit_options.py)
    reading: Sources = ...,  # --platform, --source-mirror, --plain-http-registry, ... --ca-file (reach.py)
    to_ca_file: Optional[Path] = typer.Option(None, "--to-ca-file", help="CA certificate (PEM) of the target."),
    to_plain_http: bool = typer.Option(False, "--to-plain-http", help="Talk plain HTTP to the target."),
    to_insecure: bool = typer.Option(False, "--to-insecure", help="Do not verify the target's TLS certificate."),
    username: Optional[str] = UsernameOption,
    password_stdin: bool = PasswordStdinOption,
    on_retag: str = typer.Option("update", "--on-retag",
                                 help="A tag that moved upstream: update, backup (keep TAG-prev-<12 hex>) or fail."),
    jobs: int = JobsOption,
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON run report to this file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="HEAD both sides and say what would change; write nothing."),
    keep_going: bool = typer.Option(False, "--keep-going",
                                    help="Copy what can be copied even when other images fail (still exit 1)."),
    wait_for_limit: bool = WaitForLimitOption,
    no_attachments: bool = NoAttachmentsOption,
    signers: Signers = ...,  # --verify-key, --trusted-root, --certificate-* (options.py)
    json_report: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Copy what changed upstream straight into a registry, never via disk; or, with --to-bundle, write it
    as one delta bundle against what the bastion holds."""
    from dataclasses import asdict

    from ..runlock import RunLock, all_held
    from ..transfer.serve import run_sync
    from ..transfer.selection import SyncImage
    from ..transfer.sync_result import RETAG_POLICIES, SyncRequest
    from ..transfer.sync_bundle import NAME_RULE, BundleTarget, bad_name

    if report is not None and not report.parent.is_dir():
        raise UsageError(f"--report {report}: directory {report.parent} does not exist")
    keys = signers.load(no_attachments=no_attachments)
    if on_retag not in RETAG_POLICIES:
        raise UsageError(f"--on-retag {on_retag!r}: expected one of {', '.join(RETAG_POLICIES)}")
    bundle = None
    if to_bundle is not None or base:
        if to or to_bundle is None or not base:
            raise UsageError("--to-bundle goes with --base (what the bastion holds) and without --to")
        if not to_bundle.is_dir():
            raise UsageError(f"--to-bundle {to_bundle}: no such directory")
        if bad_name(name):
            raise UsageError(f"--name {name!r}: {NAME_RULE}")
        bundle = BundleTarget(to_bundle, base, name)
    topology = None
    if config is not None:
        from ..transfer.sync_config import load_config

        given = flags_given(context, exclude=CONFIG_FLAGS)
        if given:
            raise UsageError(f"-c {config}: the config says what and where (--to-bundle/--base may replace "
                             f"where); drop {', '.join(given)}")
        job = load_config(config, jobs=jobs, dry_run=dry_run, keep_going=keep_going, bundle=bundle)
        for note in job.notes:
            typer.echo(note, err=True)
        request, bundle, lock = job.request, job.bundle, job.lock()
    else:
        if bundle is None and not to:
            raise UsageError("--to is required (the target registry HOST[:PORT][/PREFIX]), or -c sync.yaml")
        if bundle is not None and on_retag != "update":
            raise UsageError(f"--on-retag {on_retag}: needs --to; the push of a delta bundle moves tags as "
                             "mirror push does")
        platforms = reading.platforms()
        selection = chosen.select(release, platforms, reading.ca_file, images)
        refs, found = selection.images, selection.topology
        kit = kit_choice.select(found, platforms, offline_lists=chosen.offline_lists, keep_going=keep_going,
                                ca_file=reading.ca_file)
        if not refs and not kit.items:
            raise UsageError("no images to sync: name images, --images-file or --mode")
        topology = asdict(found) if found else None
        sources, settings_for = reading.access(jobs)
        if to and len(set(to)) != len(to):
            raise UsageError(f"--to {', '.join(to)}: each registry once")
        targets = target_registries(
            list(to), ca_file=to_ca_file, insecure=to_insecure, plain_http=to_plain_http, username=username,
            password_stdin=password_stdin, jobs=jobs, option="--to") if to else []
        request = SyncRequest([SyncImage(ref, on_retag) for ref in refs], targets[0] if targets else None, sources,
                              settings_for, platforms=platforms, jobs=jobs, dry_run=dry_run,
                              keep_going=keep_going, also=tuple(targets[1:]), kit=kit)
        lock = all_held([RunLock(f"sync -> {target.address}", f"sync to {target.address}") for target in targets]) \
            if targets else bundle.lock()  # type: ignore[union-attr]  # no --to: --to-bundle given
    request.verify_keys, request.attachments = keys, not no_attachments
    request.wait_for_limit, request.log = wait_for_limit, lambda line: typer.echo(f"mirror: {line}", err=True)
    with lock:
        results = run_sync(request, Progress(quiet or json_report), bundle, topology)
    finish(results, report, json_report, quiet)


# What a run with -c may still take on its command line; any other flag given is refused (the config says).
CONFIG_FLAGS = {"config", "to_bundle", "base", "name", "password_stdin", "jobs", "report", "dry_run", "keep_going",
                "wait_for_limit",
                "json_report", "quiet", "no_attachments", "verify_key", "trusted_root", "certificate_identity",
                "certificate_oidc_issuer"}
