"""Turning results into what a person or a script reads: sizes, JSON, failures."""

from __future__ import annotations

import json
from typing import Any

import typer


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def emit_json(report: dict[str, Any]) -> None:
    typer.echo(json.dumps(report, indent=2, sort_keys=True))


def report_failures(failures: dict[str, str]) -> None:
    """One line per failed image on stderr, each naming the image and the cause."""
    for image, reason in sorted(failures.items()):
        typer.echo(f"mirror: failed: {image}: {reason}", err=True)
