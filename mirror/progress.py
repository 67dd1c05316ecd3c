"""Progress in one place: bars on a terminal, a line at a steady interval in logs, nothing when quiet.

A cron job or a CI log has no terminal: it gets one line per step every
``MIRROR_PROGRESS_INTERVAL`` seconds (30 by default), so a long run shows it
is alive without flooding the log; a run shorter than that prints none.
Sizes are binary units everywhere (KiB, MiB, GiB), bars included.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Union

from .units import human_size

DEFAULT_INTERVAL = 30.0


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


class _Lines:
    """Counts like a bar (from the event loop and worker threads); prints a line per interval."""

    def __init__(self, total: int | None, desc: str, unit: str, interval: float):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.done = 0
        self.started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
        print(f"mirror: {self.desc}: {self._figures(now)}", file=sys.stderr, flush=True)

    def _figures(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-6)
        if self.unit == "B":
            of = f" of {human_size(self.total)}" if self.total else ""
            return f"{human_size(self.done)}{of}, {human_size(int(rate))}/s"
        of = f" of {self.total}" if self.total else ""
        return f"{self.done}{of} {self.unit}"


if TYPE_CHECKING:
    from tqdm import tqdm

Bar = Union["tqdm", _Lines, _Silent]


class Progress:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.terminal = sys.stderr.isatty()
        self.interval = float(os.environ.get("MIRROR_PROGRESS_INTERVAL") or DEFAULT_INTERVAL)

    @contextmanager
    def bar(self, total: int | None, desc: str, unit: str = "B") -> Iterator[Bar]:
        if self.quiet:
            yield _Silent()
        elif not self.terminal:
            yield _Lines(total, desc, unit, self.interval)
        else:
            from tqdm import tqdm  # only a terminal draws bars: cron and --quiet runs start without it

            binary = unit == "B"
            with tqdm(total=total, desc=desc, unit="iB" if binary else unit, unit_scale=binary,
                      unit_divisor=1024 if binary else 1000, dynamic_ncols=True, leave=True,
                      file=sys.stderr) as bar:
                yield bar
