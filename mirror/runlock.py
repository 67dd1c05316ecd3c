"""One run at a time per job: an fcntl lock file holding the PID of its holder.

The kernel drops an flock when its process dies, however it dies, so a
lock left by a dead process is simply taken over; the PID in the file only
names the holder to whoever finds the lock taken. The file is never
truncated and no link is followed to it (safefiles.py).
"""

from __future__ import annotations

import fcntl
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

from .errors import LockHeld
from .safefiles import open_lock, read_holder, write_holder


def lock_dir() -> Path:
    """``$XDG_STATE_HOME/mirror/locks`` (``~/.local/state``)."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "mirror" / "locks"


def lock_path(key: str) -> Path:
    """The lock file of a job, e.g. ``sync <config>`` or ``sync -> <target>``."""
    return lock_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.lock"


class RunLock:
    """``with RunLock(key, "sync of X"):`` raises LockHeld (exit 7) at once when another run holds it."""

    def __init__(self, key: str, what: str):
        self.path = lock_path(key)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise LockHeld(f"another {self.what} is running (PID {holder}, lock {self.path}); "
                           "this run did nothing") from None
        write_holder(fd, os.getpid())
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            write_holder(self._fd, None)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


@contextlib.contextmanager
def all_held(locks: list[RunLock]) -> Iterator[list[RunLock]]:
    """Every one of ``locks`` (a sync into several registries: one per target), or LockHeld and none kept."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(lock) for lock in locks]
