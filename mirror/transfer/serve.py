"""``mirror sync serve``: a sync job run on an interval or a cron schedule, one run at a time.

Each run reads the config again (edits apply to the next one), takes the
job's lock and leaves a report in the report directory. A run that fails
with a MirrorError (a peer's bad answer, a bad config, a registry out of
reach) or an OSError (a full disk: the next run may find room) is logged in
one line, kept as a failed report, and the schedule goes on. What a peer
sends is checked where it is parsed and refused there as a MirrorError, so
any other exception is a bug in mirror: it ends serve with its traceback.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import anyio

from ..clock import parse_time, utc_now
from ..errors import exit_code_of, leaves, reported_error
from ..model.cron import CronSchedule
from ..progress import Progress
from .sync_result import ACTIONS, SyncRequest, SyncResult, runs_to_json

if TYPE_CHECKING:
    from .sync_bundle import BundleTarget


@dataclass(frozen=True)
class Schedule:
    """When runs start: every ``period`` seconds, counted from one start to the next, or at ``cron``'s times."""

    period: float | None = None
    cron: CronSchedule | None = None

    def describe(self) -> str:
        if self.period is not None:
            return f"every {int(self.period)} s"
        assert self.cron is not None
        return f"at {self.cron.text!r}"

    def wait_after(self, started: float) -> float:
        """Seconds until the next run, the last one having started at ``started`` (``time.monotonic()``)."""
        if self.period is not None:
            return max(0.0, self.period - (time.monotonic() - started))
        assert self.cron is not None
        now = datetime.now().astimezone()  # cron times are the host's local time
        return (self.cron.next_after(now) - now).total_seconds()


@dataclass
class Reports:
    """The report directory: a file per run, the newest ``keep`` of them kept."""

    directory: Path
    keep: int
    write: Callable[[Path, dict[str, Any]], None]  # one report, whole or not at all

    def add(self, document: dict[str, Any]) -> None:
        # Named by when it is kept, to the microsecond: serve runs one at a time, so the names sort as
        # the runs ran (two runs can start within one second, and "started" is to the second).
        kept_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%S.%fZ")
        self.write(self.directory / f"sync-{kept_at}-{document['run_id'][:8]}.json", document)
        for old in sorted(self.directory.glob("sync-*.json"))[:-self.keep]:
            old.unlink(missing_ok=True)

    def missed(self, cron: CronSchedule) -> bool:
        """A scheduled time passed since the last kept run started (serve was down): run at once, as
        systemd's Persistent=true does. No report yet: nothing was missed."""
        kept = sorted(self.directory.glob("sync-*.json"))
        try:
            started = json.loads(kept[-1].read_text())["started"] if kept else None
            last = parse_time(started).astimezone() if started else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a damaged report: as if none
            return False
        return last is not None and cron.next_after(last) <= datetime.now().astimezone()


def run_sync(request: SyncRequest, progress: Progress, bundle: "BundleTarget | None" = None,
             topology: dict | None = None) -> list[SyncResult]:
    """One run, into the request's registries (a result each) or, for an air gap, into a delta bundle."""
    if bundle is not None:
        from .sync_bundle import sync_to_bundle

        return [anyio.run(sync_to_bundle, request, bundle, progress, topology)]
    from .sync import sync_all

    return anyio.run(sync_all, request, progress)


def serve(config: Path, schedule: Schedule, reports: Reports, jobs: int, log: Callable[[str], None]) -> None:
    """Run the job of ``config`` on ``schedule`` until SIGTERM or SIGINT, which end it after the current run."""
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    log(f"serving {config} {schedule.describe()}; reports in {reports.directory}")
    if schedule.cron is not None and not reports.missed(schedule.cron):
        stop.wait(schedule.wait_after(0.0))  # a schedule's first run is at its first time, not now
    while not stop.is_set():
        started = time.monotonic()
        _run(config, jobs, reports, log)
        stop.wait(schedule.wait_after(started))
    log("stopped")


def _run(config: Path, jobs: int, reports: Reports, log: Callable[[str], None]) -> None:
    """One run, logged and kept; a failure that is no bug is logged and kept too."""
    from .sync_config import load_config

    started_at = utc_now()
    try:
        job = load_config(config, jobs=jobs)
        for note in job.notes:
            log(note.removeprefix("mirror: "))
        with job.lock():
            results = run_sync(job.request, Progress(True), job.bundle)
        reports.add(runs_to_json(results))
        for result in results:
            counts = ", ".join(f"{result.count(a)} {a}" for a in ACTIONS if result.count(a))
            skipped = sum(entry.count for entry in result.skipped_tags)
            to = f" to {result.target}" if len(results) > 1 else ""
            log(f"run {result.run_id}{to}: {result.result} (exit {int(result.exit_code)}): "
                f"{counts or 'nothing to do'}"
                + (f"; {skipped} listed tag(s) that are no tags skipped (see the report)" if skipped else ""))
    except Exception as exc:
        # A MirrorError or an OSError, alone or in the exception group of a task group; anything else is a bug.
        failed = reported_error(exc)
        if failed is None:
            raise
        more = len(list(leaves(exc))) - 1
        log(f"run failed (exit {int(exit_code_of(failed))}): {failed}" + (f" (and {more} more)" if more else ""))
        try:  # the run is kept as a report too: a script watching the reports sees it failed
            reports.add({"run_id": uuid.uuid4().hex, "started": started_at, "ended": utc_now(), "result": "failed",
                         "exit_code": int(exit_code_of(failed)), "error": str(failed), "images": []})
        except OSError as unkept:
            log(f"the failed run's report was not kept: {unkept}")
