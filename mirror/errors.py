"""Errors that end a command, each carrying its exit code (docs/exit-codes.md).

Every user-facing failure is one of these. The CLI prints ``str(error)`` as a
single line and exits with ``error.exit_code``; nothing else decides codes.
"""

from __future__ import annotations

import errno
import sys
from enum import IntEnum
from typing import Iterable, Iterator

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio brings along
    from exceptiongroup import BaseExceptionGroup


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # some images failed (pull/push/verify found something missing)
    USAGE = 2  # bad input: arguments, references, image lists, files
    AUTH = 3  # authentication or TLS refused
    INTEGRITY = 4  # digest mismatch, corrupt or unsafe bundle
    DELTA_BASE_MISSING = 5  # a delta bundle's base is not in the target registry
    DEFERRED = 6  # sync, pull: a source's rate limit left images for the next run
    LOCKED = 7  # sync: another run holds the lock of this config/target


class MirrorError(Exception):
    """Base class: a failure the user must read and act on."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(MirrorError):
    exit_code = ExitCode.USAGE


class AuthError(MirrorError):
    """Credentials refused, or TLS verification failed."""

    exit_code = ExitCode.AUTH


class IntegrityError(MirrorError):
    """Content does not match its digest, or a bundle is corrupt or unsafe."""

    exit_code = ExitCode.INTEGRITY


class LockHeld(MirrorError):
    exit_code = ExitCode.LOCKED


class DiskFull(MirrorError):
    """A write found no room (ENOSPC, or a quota): ``directory`` is where it wrote."""

    ERRNOS = (errno.ENOSPC, errno.EDQUOT)

    @classmethod
    def of(cls, error: OSError, message: str, directory: str) -> MirrorError:
        """A write into ``directory`` that failed: DiskFull when there was no room, else a plain MirrorError."""
        return cls(message, directory, error.strerror) if error.errno in cls.ERRNOS else MirrorError(message)

    def __init__(self, message: str, directory: str, reason: str):
        super().__init__(message)
        self.directory = directory
        self.reason = reason  # the system's words: "No space left on device"


class NoRoom(UsageError):
    """Checked before work: a file system has less free space than the run will write there (diskspace.py)."""

    def __init__(self, message: str, directory: str, needed: int, free: int):
        super().__init__(message)
        self.directory, self.needed, self.free = directory, needed, free


class RegistryError(MirrorError):
    """The registry answered with something we cannot use."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Unreachable(RegistryError):
    """A registry that answered nothing after every retry; later requests to it fail at once."""

    def __init__(self, message: str, host: str):
        super().__init__(message, None)
        self.host = host


class StorageFull(RegistryError):
    """The registry's own disk is full: its error answer says so (or, for the registry `up` manages, its log).

    Not worth a retry, and the same for every image: reported once per registry.
    ``where``: the storage root as the registry names it, when it does; ``data_dir``: the
    data dir of the registry `up` manages, when it is that one.
    """

    def __init__(self, message: str, status: int | None, host: str, where: str | None = None,
                 data_dir: str | None = None):
        super().__init__(message, status)
        self.host, self.where, self.data_dir = host, where, data_dir


class NotFoundError(RegistryError):
    """A manifest, tag or blob does not exist in the registry."""


class DeltaBaseMissing(MirrorError):
    """Content a delta bundle leaves to its base is not in the target; nothing was written."""

    exit_code = ExitCode.DELTA_BASE_MISSING

    def __init__(self, message: str, missing: dict[str, str]):
        self.missing = missing  # digest -> which images need it, and the base expected to hold it
        super().__init__(message)


class ImagesFailed(MirrorError):
    """An operation finished, but some images did not make it.

    ``causes`` (image -> error), where known, lets a report say "N images
    from HOST: unreachable" once instead of once per image.
    """

    def __init__(self, failures: dict[str, str], causes: dict[str, MirrorError] | None = None):
        self.failures = failures
        self.causes = causes or {}
        names = sorted(failures)
        shown = ", ".join(names[:MAX_NAMED]) + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")
        super().__init__(f"{len(failures)} image(s) failed: {shown}")


MAX_NAMED = 10  # images named in one summary line; every one still gets its own line (or its registry's)


def worst_exit_code(errors: Iterable[BaseException]) -> ExitCode:
    """The code a run with several failures ends on: integrity beats auth beats the rest.

    A corrupt blob is the one thing an operator must never overlook, and a
    refused credential explains every other failure of that run.
    """
    errors = list(errors)
    for kind in (IntegrityError, AuthError):
        if any(isinstance(e, kind) for e in errors):
            return kind.exit_code
    return ExitCode.FAILED


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The errors inside ``error``, however deeply task groups nested it; ``error`` itself if no group."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def exit_code_of(error: BaseException) -> ExitCode:
    """A MirrorError's own code; an OSError the operations did not name is a plain failure."""
    return error.exit_code if isinstance(error, MirrorError) else ExitCode.FAILED


def reported_error(error: BaseException) -> BaseException | None:
    """The one error to tell the user about: ``error``, or the worst leaf of an exception group
    (integrity, then auth, then the rest). None unless every leaf is a MirrorError or an OSError:
    anything else is a bug and keeps its traceback."""
    found = list(leaves(error))
    if not all(isinstance(e, (MirrorError, OSError)) for e in found):
        return None
    return max(found, key=lambda e: {ExitCode.INTEGRITY: 2, ExitCode.AUTH: 1}.get(exit_code_of(e), 0))
