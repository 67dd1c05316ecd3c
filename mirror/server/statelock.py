"""One ``registry up`` or ``down`` at a time per state dir.

Two at once could both start a registry, and the state file would then
describe only one of them. The lock is an flock on STATE/lock, released by
the kernel when its holder exits, however it exits; the file holds the
holder's pid so the one refused can say who holds it. It is never
truncated and no link is followed to it (safefiles.py).
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UsageError
from ..safefiles import open_lock, read_holder, write_holder

LOCK_FILE = "lock"
WAIT = 5.0  # seconds a second command waits before it refuses


@contextmanager
def state_lock(root: Path, wait: float = WAIT) -> Iterator[None]:
    """Hold the lock of state dir ``root`` (made if missing) for the block."""
    path = root / LOCK_FILE
    deadline = time.monotonic() + wait
    while True:
        root.mkdir(parents=True, exist_ok=True)
        fd = open_lock(path)
        try:
            if _try_lock(fd):
                if _same_file(fd, path):
                    break
                # `down --purge` deleted the file we locked: lock the one now at that path.
            elif time.monotonic() >= deadline:
                raise UsageError(f"another `mirror registry up` or `down` (pid {read_holder(fd)}) is working on "
                                 f"state dir {root}: wait for it to finish, then run this again")
            else:
                time.sleep(0.1)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        write_holder(fd, os.getpid())
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
