"""Turning results into what a person or a script reads: sizes, JSON, failures."""

from __future__ import annotations

import json
from typing import Any

import typer

from ..errors import MirrorError, Unreachable


REPORT_SCHEMA = 1  # bumped when a key of any --json report changes meaning or goes away
_emitted = False


def emit_json(report: dict[str, Any]) -> None:
    """The one JSON report of a run: every command's carries ``schema_version`` and ``exit_code``."""
    global _emitted
    _emitted = True
    report = {"schema_version": REPORT_SCHEMA, "exit_code": 0, **report}
    typer.echo(json.dumps(report, indent=2, sort_keys=True))


def emit_failure_json(message: str, exit_code: int, failures: dict[str, str], extra: dict[str, Any]) -> None:
    """The report of a run that failed before its command could write one (bad input, TLS, corrupt bundle)."""
    if not _emitted:
        emit_json({"error": message, "exit_code": exit_code, "failures": failures, **extra})


def report_failures(failures: dict[str, str], causes: dict[str, MirrorError] | None = None) -> None:
    """One line per failed image on stderr, naming the image and the cause.

    Images that failed because their registry could not be reached at all
    get one line per registry instead: an offline pull of 700 images is one
    line, not 700.
    """
    unreachable: dict[str, list[str]] = {}
    for image, reason in sorted(failures.items()):
        cause = (causes or {}).get(image)
        if isinstance(cause, Unreachable):
            unreachable.setdefault(cause.host, []).append(reason)
        else:
            typer.echo(f"mirror: failed: {image}: {reason}", err=True)
    for host, reasons in sorted(unreachable.items()):
        typer.echo(f"mirror: failed: {len(reasons)} image(s) from {host}, which could not be reached; "
                   f"the first: {reasons[0]}", err=True)
