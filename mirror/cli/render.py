"""Turning results into what a person or a script reads: sizes, JSON, failures."""

from __future__ import annotations

import json
from typing import Any

import typer


def emit_json(report: dict[str, Any]) -> None:
    typer.echo(json.dumps(report, indent=2, sort_keys=True))


def report_failures(failures: dict[str, str]) -> None:
    """One line per failed image on stderr, each naming the image and the cause."""
    for image, reason in sorted(failures.items()):
        typer.echo(f"mirror: failed: {image}: {reason}", err=True)
