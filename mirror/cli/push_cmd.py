"""``mirror push``: the disconnected side's command."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Optional

import anyio
import typer

from ..progress import Progress
from .app import app
from .common import (
    CaFileOption, CertificateIdentityOption, CertificateOidcIssuerOption, InsecureOption, JobsOption,
    JsonOption, PasswordStdinOption, PlainHttpOption, QuietOption, TrustedRootOption, UsernameOption,
    VerifyKeyOption, handle_errors, target_registry, verifiers,
)
from ..units import human_size, parse_size
from .render import emit_json, report_failures


@app.command("push")
@handle_errors
def push_command(
    bundle: Path = typer.Argument(..., help="Bundle written by `mirror pull` (NAME.tar.zst, or its split parts)."),
    registry: Optional[str] = typer.Option(
        None, "--registry", "-r",
        help="Target HOST[:PORT][/PREFIX] [default: the registry `mirror registry up` started here]."),
    ca_file: Optional[Path] = CaFileOption,
    insecure: bool = InsecureOption,
    plain_http: bool = PlainHttpOption,
    username: Optional[str] = UsernameOption,
    password_stdin: bool = PasswordStdinOption,
    jobs: int = JobsOption,
    window: str = typer.Option("512M", "--window", help="Spool (memory + temp disk) for blobs in flight."),
    spool_dir: Optional[Path] = typer.Option(None, "--spool-dir", help="Where spooled blobs go (default: $TMPDIR)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would go where; contact nothing."),
    verify_key: Optional[list[Path]] = VerifyKeyOption,
    trusted_root: Optional[Path] = TrustedRootOption,
    certificate_identity: Optional[str] = CertificateIdentityOption,
    certificate_oidc_issuer: Optional[str] = CertificateOidcIssuerOption,
    json_report: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Stream a bundle into a registry: concurrent uploads, every digest verified."""
    from ..transfer.push import PushRequest, push
    from ..units import MIB

    target = target_registry(registry, ca_file=ca_file, insecure=insecure, plain_http=plain_http,
                             username=username, password_stdin=password_stdin, jobs=jobs)
    request = PushRequest(
        bundle=bundle,
        target=target,
        jobs=jobs,
        window=max(parse_size(window, "--window"), MIB),
        spool_dir=spool_dir,
        dry_run=dry_run,
        verify_keys=verifiers(verify_key, trusted_root, certificate_identity, certificate_oidc_issuer),
    )
    # What exists by now (imported modules, mostly) lives to the end: the collector need not walk it
    # again each time the many short-lived request objects of a push trigger a full collection.
    gc.freeze()
    result = anyio.run(push, request, Progress(quiet or json_report))
    for warning in result.warnings:
        typer.echo(f"mirror: warning: {warning}", err=True)
    if json_report:
        emit_json(result.to_json())
    elif dry_run:
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
    if result.failures:
        report_failures(result.failures)
        raise typer.Exit(int(result.exit_code))
