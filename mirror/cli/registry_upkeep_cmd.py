"""``mirror registry status|rotate-password|renew-cert|gc|export-join``: looking after a registry ``up`` started.

Credentials and certificates age: status shows the certificate's names and
expiry (a warning within 30 days); rotate-password and renew-cert renew them
and restart the registry exactly as recorded (``up`` with no flags), printing
what nodes must do. Disks fill: gc frees what ``mirror prune`` deleted.
export-join hands another host what it needs to serve the same object storage.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..units import human_size
from .common import handle_errors
from .options import JsonOption
from .registry_cmd import StateDirOption, registry_app, up_lines
from .render import emit_json


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
    _restart(state_dir, "nodes: put the new password where they keep it (`mirror config k3s|rke2|rke|docker "
                        "--local-registry` writes it again; restart k3s/rke2, or `docker login` again), and in the "
                        "--password-stdin or auth file of every push and sync job", rotate_password=True)


@registry_app.command("renew-cert", help="A new server certificate from the same CA for the same names; the "
                                         "registry restarts with it. Exit 2: no registry set up, or its "
                                         "certificate is not from mirror's CA.")
@handle_errors
def renew_cert_command(state_dir: Optional[Path] = StateDirOption) -> None:
    _restart(state_dir, "nodes: nothing to change; they trust the same CA", renew_cert=True)


@registry_app.command("gc", help="Free the disk space of deleted images (run after `mirror prune`): distribution's "
                                  "garbage-collect, with the registry stopped meanwhile and started again as "
                                  "recorded. Exit 2: no registry set up, it runs as a systemd unit, or "
                                  "--delete-untagged on a registry before 3.0; 1: garbage-collect failed (the "
                                  "registry runs again).")
@handle_errors
def gc_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="garbage-collect's own --dry-run: what it would free; "
                                                          "deletes nothing, the registry keeps serving."),
    delete_untagged: bool = typer.Option(
        False, "--delete-untagged", help="Also delete manifests no tag points at (garbage-collect's -m), such as "
                                         "those a sync's moved tags left; needs distribution 3.0 or later."),
    state_dir: Optional[Path] = StateDirOption,
    json_report: bool = JsonOption,
) -> None:
    from ..server.garbage import collect_garbage
    from ..server.state import default_state_dir

    result = collect_garbage((state_dir or default_state_dir()).absolute(), dry_run=dry_run,
                             delete_untagged=delete_untagged)
    if json_report:
        emit_json(result.to_json())
        return
    manifests = f" and {result.swept_manifests} untagged manifests" if result.swept_manifests else ""
    if result.log is None:
        typer.echo(f"nothing to collect: no image was ever pushed to {result.state.data_dir}")
        return
    if dry_run:
        typer.echo(f"would free {human_size(result.swept_bytes)}: {result.swept_blobs} blobs{manifests} no "
                   f"manifest references, in {result.state.data_dir}")
    else:
        typer.echo(f"freed {human_size(result.swept_bytes)}: {result.swept_blobs} blobs{manifests} swept from "
                   f"{result.state.data_dir} ({human_size(result.before)} -> {human_size(result.after)})")
    typer.echo(f"  garbage-collect's output: {result.log}")
    if result.restarted:
        typer.echo(f"  registry running again at {result.state.url}")
    elif not dry_run and not result.stopped:
        typer.echo("  the registry was not running; left stopped")


def _restart(state_dir: Optional[Path], for_nodes: str, **change: bool) -> None:
    """The registry started again with ``change`` made; what it serves, then what the nodes must do."""
    from ..server.lifecycle import UpOptions, up
    from ..server.state import default_state_dir

    result = up(UpOptions(state_dir=(state_dir or default_state_dir()).absolute(), **change))
    for line in up_lines(result, sys.stdout.isatty()):
        typer.echo(line)
    typer.echo(for_nodes)


@registry_app.command("export-join", help="Write what another host needs to serve the same images from the "
                                          "same object storage (`mirror registry up --join FILE`): storage "
                                          "address, HTTP secret, user and CA; never the S3 keys. Mode 0600: "
                                          "it holds the password and the CA key.")
@handle_errors
def export_join_command(
    output: Path = typer.Option(..., "-o", "--output", help="The join file to write."),
    state_dir: Optional[Path] = StateDirOption,
) -> None:
    from ..server.join import export_join
    from ..server.state import default_state_dir

    names = export_join((state_dir or default_state_dir()).absolute(), output)
    typer.echo(f"wrote {output} ({', '.join(names)}; mode 0600, keep it secret)")
    typer.echo(f"next, on each other host: mirror registry up --join {output.name} [--hostname NAME ...]  "
               "(with that host's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
