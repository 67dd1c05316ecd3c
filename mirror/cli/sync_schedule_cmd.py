"""``mirror sync print-systemd`` and ``print-cronjob``: a sync job scheduled by the host or by Kubernetes.

Both check the config first (exit 2 naming file:line and key) without
reading any secret: the units run elsewhere, with their own environment
(transfer/sync_units.py writes them).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional

import typer

from .common import handle_errors
from .sync_cmd import sync_app

ConfigOption = typer.Option(..., "--config", "-c", help="sync.yaml: the job (see docs/sync.md).")


@sync_app.command("print-systemd")
@handle_errors
def print_systemd(
    config: Path = ConfigOption,
    on_calendar: Optional[str] = typer.Option(
        None, "--on-calendar", help="systemd OnCalendar= of the timer [default: the config's schedule: or interval:]."),
    randomized_delay: str = typer.Option("15min", "--randomized-delay", help="RandomizedDelaySec= of the timer."),
    user: Optional[str] = typer.Option(
        None, "--user", help="Run as this user [default: DynamicUser=yes; a job reading {file:} passwords or "
                             "writing bundles needs a user that may]."),
    output_dir: Optional[Path] = typer.Option(
        None, "--output-dir", help="Write NAME.service and NAME.timer there [default: print both]."),
) -> None:
    """Print (or write) a oneshot service and its timer (Persistent=true: a missed run happens at boot)."""
    from ..safefiles import write_file
    from ..transfer.sync_config import load_config
    from ..transfer.sync_units import systemd_units

    config = config.resolve()
    mirror = shutil.which("mirror") or f"{sys.executable} -m mirror"
    units = systemd_units(load_config(config, secrets=False), mirror, on_calendar=on_calendar,
                          randomized_delay=randomized_delay, user=user)
    if output_dir is None:
        for unit in units:
            typer.echo(f"# /etc/systemd/system/{unit.name}\n{unit.text}")
    else:
        for unit in units:
            write_file(output_dir / unit.name, unit.text.encode())
            typer.echo(f"wrote {output_dir / unit.name}")
    timer = units[-1].name
    typer.echo(f"# systemctl daemon-reload && systemctl enable --now {timer}", err=output_dir is not None)


@sync_app.command("print-cronjob")
@handle_errors
def print_cronjob(
    config: Path = ConfigOption,
    image: str = typer.Option(..., "--image", help="An image with mirror installed, as your cluster reaches it."),
    schedule: Optional[str] = typer.Option(
        None, "--schedule", help="Cron schedule of the CronJob [default: the config's schedule: or interval:]."),
    time_zone: Optional[str] = typer.Option(
        None, "--time-zone", help="The schedule's IANA time zone [default: this host's, as sync serve reads "
                                  "the config's schedule]."),
    secret: Optional[str] = typer.Option(None, "--secret",
                                         help="Secret holding sync.yaml, its files and passwords [default: the "
                                              "job name]."),
    namespace: str = typer.Option("default", "--namespace", "-n"),
) -> None:
    """Print a Kubernetes CronJob (concurrencyPolicy: Forbid), its config, files and passwords from a Secret."""
    from ..transfer.sync_config import load_config
    from ..transfer.sync_units import cronjob, host_time_zone

    job = load_config(config.resolve(), secrets=False)
    typer.echo(cronjob(job, image=image, schedule=schedule, secret=secret, namespace=namespace,
                       time_zone=time_zone or host_time_zone()), nl=False)
