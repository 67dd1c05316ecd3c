"""``mirror sync serve``: a sync job on an interval or a cron schedule (transfer/serve.py runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .common import JobsOption, handle_errors
from .render import REPORT_SCHEMA
from .sync_cmd import sync_app, write_report


@sync_app.command("serve")
@handle_errors
def serve_command(
    config: Path = typer.Option(..., "--config", "-c", help="sync.yaml: the job (see docs/sync.md)."),
    interval: Optional[str] = typer.Option(
        None, "--interval", help="Time between the starts of two runs, e.g. 30m, 6h, 1d [default: the config's]."),
    schedule: Optional[str] = typer.Option(
        None, "--schedule", help="Cron schedule of the runs instead, e.g. '15 2 * * *' [default: the config's]."),
    report_dir: Optional[Path] = typer.Option(
        None, "--report-dir", help="Where each run's report is kept [default: under $XDG_STATE_HOME/mirror]."),
    keep_reports: int = typer.Option(30, "--keep-reports", min=1, help="How many run reports to keep."),
    jobs: int = JobsOption,
) -> None:
    """Run a sync job on an interval or a cron schedule, one run at a time; SIGTERM ends it after the run.

    The config is read again before each run, so edits apply to the next one;
    a run that fails is logged and the schedule goes on.
    """
    import hashlib

    from ..clock import utc_now
    from ..model.cron import CronSchedule
    from ..runlock import lock_dir
    from ..transfer.serve import Reports, Schedule, serve
    from ..transfer.sync_config import load_config, parse_interval

    job = load_config(config, jobs=jobs)  # a bad config ends serve at once (exit 2)
    if interval and schedule:
        raise UsageError("--interval and --schedule: give one")
    try:
        period = parse_interval(interval) if interval else None if schedule else job.interval
        cron = CronSchedule.parse(schedule) if schedule else None if interval else job.schedule
    except ValueError as exc:
        raise UsageError(f"--{'interval' if interval else 'schedule'}: {exc}") from None
    if period is None and cron is None:
        raise UsageError(f"no schedule: give --interval or --schedule, or an interval: or schedule: key in {config}")
    key = hashlib.sha256(str(config.resolve()).encode()).hexdigest()[:12]
    reports = report_dir or lock_dir().parent / "sync-reports" / key
    reports.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        typer.echo(f"{utc_now()} mirror sync serve: {message}", err=True)

    def keep(path: Path, document: dict) -> None:
        write_report(path, {"schema_version": REPORT_SCHEMA, **document})

    serve(config, Schedule(period, cron), Reports(reports, keep_reports, keep), jobs, log)
