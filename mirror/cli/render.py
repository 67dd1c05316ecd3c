"""Turning results into what a person or a script reads: sizes, JSON, failures."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from ..errors import DiskFull, MirrorError, StorageFull, Unreachable
from ..units import human_size

if TYPE_CHECKING:
    from ..installer import Installer
    from ..transfer.pull import PullResult


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

    A cause every image it hits shares gets one line for all of them: a
    registry that could not be reached (an offline pull of 700 images is one
    line, not 700), a registry whose storage is full, a local disk that filled.
    """
    shared: dict[tuple[str, bool], list[str]] = {}  # the shared line -> the reasons of the images it stands for
    for image, reason in sorted(failures.items()):
        line = _shared_line((causes or {}).get(image))
        if line is None:
            typer.echo(f"mirror: failed: {image}: {reason}", err=True)
        else:
            shared.setdefault(line, []).append(reason)
    for (words, quote_first), reasons in sorted(shared.items()):
        first = f"; the first: {reasons[0]}" if quote_first else ""
        typer.echo(f"mirror: failed: {len(reasons)} image(s) {words}{first}", err=True)


def _shared_line(cause: MirrorError | None) -> tuple[str, bool] | None:
    """For a cause that is the run's, not an image's: the words after "N image(s)", and whether the first
    image's reason follows them. None for a cause of the image's own."""
    if isinstance(cause, Unreachable):
        return f"from {cause.host}, which could not be reached", True
    if isinstance(cause, StorageFull):
        where = f"data dir {cause.data_dir}" if cause.data_dir else (f"under {cause.where}" if cause.where else "")
        return (f"not sent to {cause.host}: registry storage full{f' ({where})' if where else ''}; free space on "
                "its disk, then run again"), False
    if isinstance(cause, DiskFull):
        return f"not sent: {cause}", False
    return None


def counted(records: list) -> str:
    """``N images`` and, when carried, ``with N signatures, ...`` and ``N charts, N files`` (the kit)."""
    kinds = ["attachment" if record.is_attachment else record.artifact.kind if record.artifact else "image"
             for record in records]
    said = f"{kinds.count('image')} images"
    if kinds.count("attachment"):
        said += f" with {kinds.count('attachment')} signatures, attestations, SBOMs and referrers"
    return ", ".join([said, *(f"{kinds.count(kind)} {kind}s" for kind in ("chart", "file") if kinds.count(kind))])


def written_lines(result: "PullResult", installer: "Installer | None") -> list[str]:
    """What a pull wrote: the bundle (its parts), what it holds, the offline installer beside it."""
    bundle = result.bundle
    assert bundle is not None
    lines = [f"wrote {result.kind} bundle {bundle.path} ({human_size(bundle.size)}, {counted(result.images)}, "
             f"{human_size(result.total_blob_bytes)} of content; downloaded {human_size(result.downloaded_bytes)}, "
             f"reused {human_size(result.reused_bytes)})"]
    lines += [f"  part {part}" for part in bundle.parts] if len(bundle.parts) > 1 else []
    return lines + ([f"wrote offline installer {installer.describe()}"] if installer else [])
