"""``mirror extract``: a bundle's charts and files onto disk, for a bastion without a registry."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import handle_errors
from .options import JsonOption
from .render import emit_json


@app.command("extract")
@handle_errors
def extract_command(
    bundle: Path = typer.Argument(..., help="Bundle (NAME.tar.zst or its split parts)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the charts and files under."),
    force: bool = typer.Option(False, "--force", help="Replace files already there with other content."),
    json_report: bool = JsonOption,
) -> None:
    """Write the bundle's Helm charts, CRDs and files under -o DIR, with a SHA256SUMS for `sha256sum -c`."""
    from ..kit.extract import extract

    report = extract(bundle, output, force)
    if json_report:
        emit_json({"directory": str(output), **report.to_json()})
        return
    for path in report.written:
        typer.echo(f"wrote {output / path}")
    for path in report.unchanged:
        typer.echo(f"unchanged {output / path}")
    for path in report.omitted:
        typer.echo(f"mirror: {path}: left to this delta bundle's base, not in it", err=True)
    typer.echo(f"check with: (cd {output} && sha256sum -c SHA256SUMS)", err=True)
