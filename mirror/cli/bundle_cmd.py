"""``mirror inspect`` and ``mirror verify``: look into a bundle, check it, or check a registry."""

from __future__ import annotations

from pathlib import Path

import anyio
import typer

from ..errors import ExitCode, UsageError, worst_exit_code
from ..progress import Progress
from .app import app
from .common import handle_errors
from .options import JsonOption, QuietOption, Signers, signer_options
from .reach import Reach, registry_options
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
@registry_options("to check for every image of the bundle, instead of the bundle itself",
                  default="the bundle itself is checked")
@signer_options
def verify_command(
    bundle: Path = typer.Argument(..., help="Bundle (NAME.tar.zst or its split parts)."),
    reach: Reach = ...,  # --registry, TLS, credentials, --jobs (reach.py)
    signers: Signers = ...,  # --verify-key, --trusted-root, --certificate-* (options.py)
    json_report: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Re-hash every blob of a bundle (exit 4 naming what is wrong), or check registries hold it (exit 1)."""
    from ..bundle.verify import verify_bundle  # imported here so other commands start faster
    from ..bundle.reader import BundleReader
    from ..transfer.verify import verify_in_registries

    # before the bundle is read: a bad key file is a usage error, at once
    keys = signers.load()
    if keys and reach.named:
        raise UsageError("--verify-key and --trusted-root check the signatures a bundle carries: give them "
                         "without --registry "
                         "(push --verify-key checks them at the registry)")
    if not reach.named:
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
    checks = anyio.run(verify_in_registries, bundle, reach.targets(), reach.jobs)
    worst = worst_exit_code(c.error for c in checks if c.error) if any(c.exit_code for c in checks) else ExitCode.OK
    if json_report:  # one registry: its report, as ever; several: a report each, and the worst exit code
        emit_json(checks[0].to_json() if len(checks) == 1 else
                  {"targets": [c.to_json() for c in checks], "exit_code": int(worst)})
    for check in checks:
        for source, problem in sorted(check.problems.items()):
            typer.echo(f"mirror: missing: {source}: {problem}", err=True)
        if check.error:
            typer.echo(f"mirror: failed: {check.registry}: {check.error}", err=True)
        elif not json_report and not check.problems:
            typer.echo(f"{len(check.verified)} images verified in {check.registry}")
    if worst:
        raise typer.Exit(int(worst))
