"""``mirror registry status|rotate-password|renew-cert``: looking after a registry ``up`` started.

Credentials and certificates age: status shows the certificate's names and
expiry (a warning within 30 days); the other two renew them and restart the
registry exactly as recorded (``up`` with no flags), printing what nodes must do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..units import human_size
from .common import JsonOption, handle_errors
from .registry_cmd import StateDirOption, registry_app, up_lines
from .render import emit_json

if TYPE_CHECKING:
    from ..server.lifecycle import UpResult


@registry_app.command("status", help="URL, engine, storage used, repositories and tags; exit 1 when not running.")
@handle_errors
def status_command(
    state_dir: Optional[Path] = StateDirOption,
    json_report: bool = JsonOption,
) -> None:
    from ..server.lifecycle import status
    from ..server.state import default_state_dir

    report = status((state_dir or default_state_dir()).absolute())
    if json_report:
        emit_json(report.to_json())
    elif report.state is None:
        typer.echo("no registry: start one with `mirror registry up`")
    else:
        state = report.state
        health = "running" if report.answering else ("not answering" if report.running else "stopped")
        typer.echo(f"registry {state.url}: {health}")
        if state.storage:
            reach = "reachable" if report.storage_reachable else f"NOT reachable: {report.storage_error}"
            typer.echo(f"  engine {state.engine}, data in {state.storage} at {state.s3_endpoint} ({reach})")
        else:
            typer.echo(f"  engine {state.engine}, data {state.data_dir}, {human_size(report.storage_bytes)} used")
        if report.certificate:
            cert = report.certificate
            typer.echo(f"  certificate for {', '.join(cert.names)}, expires {cert.not_after:%Y-%m-%d} "
                       f"({cert.days_left} days)")
            if cert.expiring:
                typer.echo(f"mirror: warning: the registry's certificate expires in {cert.days_left} days: "
                           "run `mirror registry renew-cert`", err=True)
        for repository, tags in sorted(report.repositories.items()):
            typer.echo(f"  {repository}: {', '.join(tags) or '(no tags)'}")
        if report.error:
            typer.echo(f"  {report.error}")
    if not report.answering:
        raise typer.Exit(1)


@registry_app.command("rotate-password", help="A new password for the registry's user; the registry restarts "
                                              "with it. Exit 2: no registry set up, or it runs without auth.")
@handle_errors
def rotate_password_command(state_dir: Optional[Path] = StateDirOption) -> None:
    result = _restart(state_dir, rotate_password=True)
    for line in up_lines(result, sys.stdout.isatty()):
        typer.echo(line)
    typer.echo("nodes: put the new password where they keep it (`mirror config k3s|rke2|rke|docker "
               "--local-registry` writes it again; restart k3s/rke2, or `docker login` again), and in the "
               "--password-stdin or auth file of every push and sync job")


@registry_app.command("renew-cert", help="A new server certificate from the same CA for the same names; the "
                                         "registry restarts with it. Exit 2: no registry set up, or its "
                                         "certificate is not from mirror's CA.")
@handle_errors
def renew_cert_command(state_dir: Optional[Path] = StateDirOption) -> None:
    result = _restart(state_dir, renew_cert=True)
    for line in up_lines(result, sys.stdout.isatty()):
        typer.echo(line)
    typer.echo("nodes: nothing to change; they trust the same CA")


def _restart(state_dir: Optional[Path], **change: bool) -> UpResult:
    from ..server.lifecycle import UpOptions, up
    from ..server.state import default_state_dir

    return up(UpOptions(state_dir=(state_dir or default_state_dir()).absolute(), **change))
