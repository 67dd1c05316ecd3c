"""Files whose names another user of the host could predict: made so that no link of theirs is followed.

A report, a lock, a state or cache file has a name anyone can know. In a
directory others may write in, they can plant a symbolic link (or a hard
link) under that name beforehand, and a plain ``open(name, "w")`` run as
root would then truncate whatever the link points at. So here:

- a file is written under a random temporary name beside it, created with
  O_CREAT|O_EXCL|O_NOFOLLOW (never someone else's file, never through a
  link), then renamed over the final name (a rename replaces a link, it
  does not follow it): ``write_file``, ``Replacement``;
- a file kept open by name (a lock, a log) is opened with O_NOFOLLOW and
  refused unless it is a regular file with no other name; a lock is never
  truncated: ``open_lock``, ``open_append``;
- a directory of a predictable name that we fill (pull's hidden work dir)
  is made by us, or refused if it is a link or another user's:
  ``own_directory``;
- a directory others may write in without the sticky bit (where they can
  also rename or delete what we made) is refused outright (exit 2).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import UsageError

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def check_directory(directory: Path) -> None:
    """Refuse (exit 2) a directory other users may write in that lacks the sticky bit."""
    try:
        mode = os.stat(directory).st_mode
    except FileNotFoundError:
        return  # the open that follows names it
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise UsageError(f"directory {directory} is writable by every user and not sticky: refusing to write "
                         "there (another user could swap the files in it); use another directory, or "
                         "`chmod o-w` or `chmod +t` it")


def own_directory(path: Path) -> Path:
    """``path``, made (mode 0700) if missing; refused (exit 2) if it is a link, not a directory, or not ours."""
    check_directory(path.parent)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        found = os.lstat(path)
        if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
            raise UsageError(f"{path} is not a directory of this user's (a link, a file, or another user's): "
                             "refusing to write in it; remove it") from None
    return path


def create_new(path: Path, mode: int = 0o644) -> BinaryIO:
    """``path`` created for writing; FileExistsError if anything, a link included, is there."""
    check_directory(path.parent)
    return os.fdopen(os.open(path, _CREATE, mode), "wb")


class Replacement:
    """A new content for ``path``, written under a random temporary name beside it.

    ``commit()`` renames it over ``path`` (after an fsync when ``sync``);
    ``discard()`` removes it. As a context manager it commits unless the
    block raised or discarded it.
    """

    def __init__(self, path: Path, mode: int = 0o644, sync: bool = False):
        self.path = Path(path)
        self.sync = sync
        while True:
            self.temp = self.path.with_name(f".{self.path.name}.tmp-{secrets.token_hex(6)}")
            try:
                self.file = create_new(self.temp, mode)
                break
            except FileExistsError:  # a name someone took first: draw another
                continue
        self.done = False

    def commit(self) -> None:
        try:
            self.file.flush()
            if self.sync:
                os.fsync(self.file.fileno())
        finally:
            self.file.close()
        os.replace(self.temp, self.path)
        self.done = True

    def discard(self) -> None:
        """Remove the temporary file, whatever closing it raises (a full disk fails the flush)."""
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
        except OSError:
            pass
        finally:
            self.temp.unlink(missing_ok=True)

    def __enter__(self) -> "Replacement":
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None or self.done:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise


def write_file(path: Path, data: bytes, mode: int = 0o644, sync: bool = False) -> None:
    """Replace ``path`` with ``data`` at once: a reader sees the old file or the new one, never half."""
    try:
        with Replacement(path, mode, sync) as new:
            new.file.write(data)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)  # a write that failed names no file: a full disk must say which
        raise


def open_lock(path: Path, mode: int = 0o600) -> int:
    """A descriptor (read-write) of the lock file ``path``, made if missing; never truncated."""
    return _open_own(path, os.O_RDWR | os.O_CREAT, mode, "lock file")


HOLDER_RECORD = 16  # bytes of a lock file: its holder's pid padded with spaces, then a newline


def write_holder(fd: int, pid: int | None) -> None:
    """Name the lock's holder (None: nobody) in a fixed-width record written over the last one."""
    os.pwrite(fd, f"{pid if pid is not None else '':<{HOLDER_RECORD - 1}}\n".encode(), 0)


def read_holder(fd: int) -> str:
    """The pid a lock file names, or "unknown"."""
    try:
        return os.pread(fd, HOLDER_RECORD, 0).decode().strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def open_append(path: Path, mode: int = 0o644) -> BinaryIO:
    """``path`` (made if missing) for appending, as a log is."""
    return os.fdopen(_open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode, "file"), "ab")


def _open_own(path: Path, flags: int, mode: int, what: str) -> int:
    check_directory(path.parent)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError:
        if os.path.islink(path):
            raise UsageError(f"{what} {path} is a symbolic link: refusing to follow it (remove it if it "
                             "is not someone's trap)") from None
        raise
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
        os.close(fd)
        kind = "has other names (hard links)" if stat.S_ISREG(found.st_mode) else "is not a regular file"
        raise UsageError(f"{what} {path} {kind}: refusing to write to it (remove it)")
    os.set_blocking(fd, True)
    return fd
