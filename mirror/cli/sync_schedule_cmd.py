"""``mirror sync print-systemd`` and ``print-cronjob``: a sync job scheduled by the host or by Kubernetes.

Both check the config first (exit 2 naming file:line and key) without
reading any secret: the units run elsewhere, with their own environment.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .common import handle_errors
from .sync_cmd import sync_app

ConfigOption = typer.Option(..., "--config", "-c", help="sync.yaml: the job (see docs/sync.md).")


def _job_name(config: Path) -> str:
    return "mirror-sync-" + (re.sub(r"[^a-z0-9-]+", "-", config.stem.lower()).strip("-") or "job")


@sync_app.command("print-systemd")
@handle_errors
def print_systemd(
    config: Path = ConfigOption,
    on_calendar: Optional[str] = typer.Option(
        None, "--on-calendar", help="systemd OnCalendar= of the timer [default: the config's schedule: or interval:]."),
    randomized_delay: str = typer.Option("15min", "--randomized-delay", help="RandomizedDelaySec= of the timer."),
) -> None:
    """Print a oneshot service and its timer (Persistent=true: a missed run happens at boot)."""
    from ..model.cron import CronSchedule, interval_cron
    from ..transfer.sync_config import load_config

    config = config.resolve()
    job = load_config(config, secrets=False)
    name = _job_name(config)
    if on_calendar is not None:
        when = [f"OnCalendar={on_calendar}"]
    elif job.schedule is not None:
        when = [f"# schedule: {job.schedule.text!r} in {config.name}, the host's local time",
                *(f"OnCalendar={expression}" for expression in job.schedule.on_calendar())]
    elif job.interval is not None:
        cron = interval_cron(job.interval)
        when = [f"# interval: every {int(job.interval)} s in {config.name}"]
        if cron is not None:
            when += [f"OnCalendar={expression}" for expression in CronSchedule.parse(cron).on_calendar()]
        else:  # no wall-clock equivalent: from the start of the last run, as serve counts, and soon after boot
            when += ["OnBootSec=2min", f"OnUnitActiveSec={int(job.interval)}s"]
    else:
        raise UsageError(f"no schedule: give --on-calendar, or an interval: or schedule: key in {config}")
    timer = "\n".join(when)
    mirror = shutil.which("mirror") or f"{sys.executable} -m mirror"
    typer.echo(f"""# /etc/systemd/system/{name}.service
[Unit]
Description=mirror sync run -c {config}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
StateDirectory=mirror
Environment=XDG_STATE_HOME=%S
ExecStart={mirror} sync run -c {shlex.quote(str(config))} -q --report %S/mirror/{name}.json
# 6: a rate limit deferred some images, the next run copies them; 7: the previous run is still going
SuccessExitStatus=6 7

# /etc/systemd/system/{name}.timer
[Unit]
Description=Schedule of {name}

[Timer]
{timer}
Persistent=true
RandomizedDelaySec={randomized_delay}

[Install]
WantedBy=timers.target

# systemctl daemon-reload && systemctl enable --now {name}.timer""")


@sync_app.command("print-cronjob")
@handle_errors
def print_cronjob(
    config: Path = ConfigOption,
    image: str = typer.Option(..., "--image", help="An image with mirror installed, as your cluster reaches it."),
    schedule: Optional[str] = typer.Option(
        None, "--schedule", help="Cron schedule of the CronJob [default: the config's schedule: or interval:]."),
    secret: Optional[str] = typer.Option(None, "--secret",
                                         help="Secret holding sync.yaml and the passwords [default: the job name]."),
    namespace: str = typer.Option("default", "--namespace", "-n"),
) -> None:
    """Print a Kubernetes CronJob (concurrencyPolicy: Forbid), its config and credentials from a Secret."""
    from ..model.cron import interval_cron
    from ..transfer.sync_config import load_config

    job = load_config(config, secrets=False)
    if schedule is None and job.schedule is not None:
        schedule = job.schedule.kubernetes_text()
    elif schedule is None and job.interval is not None:
        schedule = interval_cron(job.interval)
        if schedule is None:
            raise UsageError(f"{job.at('interval')} every {int(job.interval)} s is no cron schedule (a CronJob "
                             "runs at times that divide an hour or a day): give schedule: or --schedule")
    elif schedule is None:
        raise UsageError(f"no schedule: give --schedule, or an interval: or schedule: key in {config}")
    name = _job_name(config)
    secret = secret or name
    literals = " ".join(f"--from-literal={env}=..." for env in dict.fromkeys(job.env_names))
    quote = json.dumps  # a JSON string is a YAML string
    typer.echo(f"""# kubectl -n {namespace} create secret generic {secret} --from-file=sync.yaml={config} {literals}
# ({{file: PATH}} passwords: add each file to the Secret and point PATH under /etc/mirror)
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
  namespace: {namespace}
spec:
  schedule: {quote(schedule)}
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 3600
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: sync
              image: {quote(image)}
              args: ["sync", "run", "-c", "/etc/mirror/sync.yaml", "-q", "--json"]
              envFrom:
                - secretRef:
                    name: {secret}
              volumeMounts:
                - name: config
                  mountPath: /etc/mirror
                  readOnly: true
          volumes:
            - name: config
              secret:
                secretName: {secret}""")
