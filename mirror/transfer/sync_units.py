"""A sync job run by the host's systemd (a service and its timer) or by Kubernetes (a CronJob), as printed.

The units run elsewhere, with their own environment, so everything the job
needs is in them: the passwords it takes from the environment come from an
``EnvironmentFile=`` (systemd reads it as root before it drops privileges) or
from the Secret; the files the config names are mounted at the same absolute
paths in the pod, so the config means the same there; the service runs as an
unprivileged user with the state and cache directories it writes. Checked
against ``systemd-analyze verify`` in the tests.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..model.cron import CronSchedule, interval_cron
from .sync_config import SyncJob

ENV_DIR = Path("/etc/mirror")  # where the unit expects the environment file of a job's passwords


@dataclass(frozen=True)
class UnitFile:
    name: str  # file name, e.g. mirror-sync-nightly.service
    text: str


def job_name(config: Path) -> str:
    return "mirror-sync-" + (re.sub(r"[^a-z0-9-]+", "-", config.stem.lower()).strip("-") or "job")


def systemd_units(job: SyncJob, mirror: str, *, on_calendar: str | None, randomized_delay: str,
                  user: str | None) -> list[UnitFile]:
    """The oneshot service and its timer (Persistent=true: a run missed while the host was down happens at boot)."""
    name, config = job_name(job.path), job.path
    if user is None and (job.secret_files or job.bundle):
        needs = ", ".join([f"reads {p}" for p in job.secret_files] +
                          ([f"writes bundles to {job.bundle.directory}"] if job.bundle else []))
        raise UsageError(f"{config}: the job {needs}: give --user NAME, a user that may (a DynamicUser= "
                         "service can do neither)")
    who = [f"User={user}"] if user else ["DynamicUser=yes"]
    env = []
    if job.env_names:
        env_file = ENV_DIR / f"{name}.env"
        env = [f"# {env_file} (root, mode 0600) holds the passwords the config takes from the environment:",
               *(f"#   {variable}=..." for variable in dict.fromkeys(job.env_names)),
               f"EnvironmentFile={env_file}"]
    writes = [f"ReadWritePaths={job.bundle.directory}"] if job.bundle else []
    service = "\n".join([
        "[Unit]",
        f"Description=mirror sync run -c {config}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        *who,
        "StateDirectory=mirror",
        "CacheDirectory=mirror",
        "Environment=XDG_STATE_HOME=%S XDG_CACHE_HOME=%C",
        *env,
        *writes,
        f"ExecStart={mirror} sync run -c {shlex.quote(str(config))} -q --report %S/mirror/{name}.json",
        "# 6: a rate limit deferred some images, the next run copies them; 7: the previous run is still going",
        "SuccessExitStatus=6 7",
        "",
    ])
    timer = "\n".join([
        "[Unit]",
        f"Description=Schedule of {name}",
        "",
        "[Timer]",
        *_calendar(job, on_calendar),
        "Persistent=true",
        f"RandomizedDelaySec={randomized_delay}",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])
    return [UnitFile(f"{name}.service", service), UnitFile(f"{name}.timer", timer)]


def _calendar(job: SyncJob, on_calendar: str | None) -> list[str]:
    if on_calendar is not None:
        return [f"OnCalendar={on_calendar}"]
    if job.schedule is not None:
        return [f"# schedule: {job.schedule.text!r} in {job.path.name}, the host's local time",
                *(f"OnCalendar={expression}" for expression in job.schedule.on_calendar())]
    if job.interval is not None:
        cron = interval_cron(job.interval)
        lines = [f"# interval: every {int(job.interval)} s in {job.path.name}"]
        if cron is not None:
            return lines + [f"OnCalendar={expression}" for expression in CronSchedule.parse(cron).on_calendar()]
        # no wall-clock equivalent: from the start of the last run, as serve counts, and soon after boot
        return lines + ["OnBootSec=2min", f"OnUnitActiveSec={int(job.interval)}s"]
    raise UsageError(f"no schedule: give --on-calendar, or an interval: or schedule: key in {job.path}")


def cronjob(job: SyncJob, *, image: str, schedule: str | None, secret: str | None, namespace: str,
            time_zone: str) -> str:
    """A CronJob (concurrencyPolicy: Forbid) with the ``kubectl create secret`` line of everything it reads."""
    if job.bundle is not None:
        raise UsageError(f"{job.path}: the job writes bundles to {job.bundle.directory}, a directory of a host: "
                         "run it there (print-systemd, or sync serve)")
    schedule = schedule or _cron_schedule(job)
    name = job_name(job.path)
    secret = secret or name
    # Every file at its own absolute path in the pod, the config included: its relative paths mean the same.
    files = {f"file-{index}-{_key(path.name)}": path for index, path in enumerate([job.path, *job.files])}
    config_key = next(iter(files))
    from_files = " ".join(f"--from-file={key}={shlex.quote(str(path))}" for key, path in files.items())
    literals = " ".join(f"--from-literal={env}=..." for env in dict.fromkeys(job.env_names))
    quote = json.dumps  # a JSON string is a YAML string
    mounts = "\n".join(f"                - name: files\n                  mountPath: {quote(str(path))}\n"
                       f"                  subPath: {key}\n                  readOnly: true"
                       for key, path in files.items())
    env = "".join(f"\n                - name: {variable}\n                  valueFrom:\n"
                  f"                    secretKeyRef: {{name: {secret}, key: {variable}}}"
                  for variable in dict.fromkeys(job.env_names))
    return f"""# kubectl -n {namespace} create secret generic {secret} {from_files} {literals}
# The image runs `mirror` (docs/sync.md: "An image for the CronJob").
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
  namespace: {namespace}
spec:
  schedule: {quote(schedule)}
  timeZone: {quote(time_zone)}
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
              args: ["sync", "run", "-c", {quote(str(files[config_key]))}, "-q", "--json"]
              env:{env or " []"}
              volumeMounts:
{mounts}
          volumes:
            - name: files
              secret:
                secretName: {secret}
"""


def _cron_schedule(job: SyncJob) -> str:
    if job.schedule is not None:
        return job.schedule.kubernetes_text()
    if job.interval is not None:
        schedule = interval_cron(job.interval)
        if schedule is None:
            raise UsageError(f"{job.at('interval')} every {int(job.interval)} s is no cron schedule (a CronJob "
                             "runs at times that divide an hour or a day): give schedule: or --schedule")
        return schedule
    raise UsageError(f"no schedule: give --schedule, or an interval: or schedule: key in {job.path}")


def _key(name: str) -> str:
    """A Secret key from a file name (letters, digits, '-', '_', '.')."""
    return re.sub(r"[^-._a-zA-Z0-9]+", "-", name)[:200] or "file"


def host_time_zone(localtime: Path = Path("/etc/localtime")) -> str:
    """This host's IANA time zone (what the config's cron times mean), from /etc/localtime's link; else UTC."""
    try:
        target = str(localtime.readlink())
    except OSError:
        return "Etc/UTC"
    zone = target.partition("zoneinfo/")[2]
    return zone or "Etc/UTC"
