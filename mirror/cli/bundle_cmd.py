"""``mirror inspect`` and ``mirror verify``: look into a bundle, check it, or check a registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import anyio
import typer

from ..errors import ExitCode, UsageError
from ..progress import Progress
from .app import app
from .common import handle_errors
from .flag_values import target_registry, verifiers
from .options import (
    CaFileOption, CertificateIdentityOption, CertificateOidcIssuerOption, InsecureOption, JobsOption,
    JsonOption, PasswordStdinOption, PlainHttpOption, QuietOption, TrustedRootOption, UsernameOption,
    VerifyKeyOption,
)
from ..units import human_size
from .render import emit_json


@app.command("inspect")
@handle_errors
def inspect_command(
    bundle: Path = typer.Argument(..., help="Bundle (NAME.tar.zst or its split parts)."),
    json_report: bool = JsonOption,
) -> None:
    """Images, platforms and sizes in a bundle, from its first entry only (fast)."""
    from ..bundle.inspect import summarize_bundle  # imported here so other commands start faster

    summary = summarize_bundle(bundle)
    if json_report:
        emit_json(summary.to_json())
    else:
        typer.echo(summary.render_text())


@app.command("verify")
@handle_errors
def verify_command(
    bundle: Path = typer.Argument(..., help="Bundle (NAME.tar.zst or its split parts)."),
    registry: Optional[str] = typer.Option(
        None, "--registry", "-r", help="Check this registry holds every image instead of checking the bundle."),
    local_registry: bool = typer.Option(
        False, "--local-registry", help="Check the registry `mirror registry up` started here."),
    ca_file: Optional[Path] = CaFileOption,
    insecure: bool = InsecureOption,
    plain_http: bool = PlainHttpOption,
    username: Optional[str] = UsernameOption,
    password_stdin: bool = PasswordStdinOption,
    jobs: int = JobsOption,
    verify_key: Optional[list[Path]] = VerifyKeyOption,
    trusted_root: Optional[Path] = TrustedRootOption,
    certificate_identity: Optional[str] = CertificateIdentityOption,
    certificate_oidc_issuer: Optional[str] = CertificateOidcIssuerOption,
    json_report: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Re-hash every blob of a bundle (exit 4 naming what is wrong), or check a registry (exit 1)."""
    from ..bundle.verify import verify_bundle  # imported here so other commands start faster
    from ..bundle.reader import BundleReader
    from ..transfer.verify import verify_in_registry

    # before the bundle is read: a bad key file is a usage error, at once
    keys = verifiers(verify_key, trusted_root, certificate_identity, certificate_oidc_issuer)
    if keys and (registry is not None or local_registry):
        raise UsageError("--verify-key and --trusted-root check the signatures a bundle carries: give them "
                         "without --registry "
                         "(push --verify-key checks them at the registry)")
    if registry is None and not local_registry:
        progress = Progress(quiet or json_report)
        with BundleReader(bundle) as reader:
            total = reader.manifest.total_size
        with progress.bar(total, "verifying") as bar:
            report = verify_bundle(bundle, progress=bar.update, keys=keys)
        if json_report:
            emit_json(report.to_json())
        else:
            attached = f" with {report.attachments} attachments" if report.attachments else ""
            verified = sum(status == "verified" for status in report.signatures.values())
            typer.echo(f"{bundle}: OK, {report.images} images{attached}, {report.blobs} blobs, "
                       f"{human_size(report.bytes)} re-hashed" + (f"; {verified} signatures verified"
                                                                  if keys else ""))
            if report.base:
                typer.echo(f"delta of {', '.join(report.base)}: {report.omitted} blob(s) and manifest(s) "
                           "left to the base; push checks they are in the registry")
        return
    target = target_registry(registry, ca_file=ca_file, insecure=insecure, plain_http=plain_http,
                             username=username, password_stdin=password_stdin, jobs=jobs)
    check = anyio.run(verify_in_registry, bundle, target, jobs)
    if json_report:
        emit_json(check.to_json())
    for source, problem in sorted(check.problems.items()):
        typer.echo(f"mirror: missing: {source}: {problem}", err=True)
    if check.problems:
        raise typer.Exit(int(ExitCode.FAILED))
    if not json_report:
        typer.echo(f"{len(check.verified)} images verified in {check.registry}")
