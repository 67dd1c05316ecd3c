"""Room on disk, checked before work: what a run will write, per file system, against what each has free.

pull (its work dir and its bundle), push (its spool; the data dir of the registry `up` manages) and
`registry up --from-bundle` (the data dir) say where they will write how much. Directories on one file
system share its free space: ``f_bavail * f_frsize``, what a write that is not root's may use, measured
when the run began. Each file is rounded up to the file system's blocks, and a reserve of 1 MiB and 1%
is added for what the estimate leaves out (directories, the bundle's index, other writers) wherever
anything is written at all. When that does not fit, NoRoom (exit 2) names the directory, the bytes
needed and the bytes free, before the write that would have filled the disk. ``--no-space-check``
skips all of it (the caller makes no Space).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import NoRoom
from .units import MIB, human_size

RESERVE = MIB  # bytes kept free besides the estimate ...
RESERVE_PART = 100  # ... and one part in this many of it


@dataclass
class FileSystem:
    """One file system a run writes into: what was free at the start, and what the run will write there."""

    directory: Path  # the first of the run's directories on it: the one a refusal names
    free: int
    block: int
    uses: list[str] = field(default_factory=list)  # what goes there, for the message: "the bundle", "the work dir"
    advice: list[str] = field(default_factory=list)  # what to do instead, for each use
    needed: int = 0

    def add(self, size: int) -> None:
        """``size`` bytes more in one stream (a bundle's tar: its own rounding is the caller's)."""
        self.needed += size

    def add_files(self, sizes: Iterable[int]) -> None:
        """One file of each size, each taking whole blocks."""
        self.needed += sum(-(-size // self.block) * self.block for size in sizes)

    @property
    def wanted(self) -> int:
        """What must be free: nothing for a run that writes nothing there."""
        return self.needed + RESERVE + self.needed // RESERVE_PART if self.needed else 0


class Space:
    """The file systems of a run, each charged with what the run will write there; ``doing`` names the run
    in a refusal ("this pull")."""

    def __init__(self, doing: str):
        self.doing = doing
        self._systems: dict[int, FileSystem] = {}

    def where(self, directory: Path, use: str, advice: str) -> FileSystem:
        """The file system ``directory`` (which must exist) is on, measured the first time it is named.

        ``use`` says what goes there ("the bundle"), ``advice`` what else to do about it ("free some,
        or put the bundle (-o) on a larger disk").
        """
        device = os.stat(directory).st_dev
        system = self._systems.get(device)
        if system is None:
            stats = os.statvfs(directory)
            system = FileSystem(Path(directory), stats.f_bavail * stats.f_frsize, stats.f_frsize or 4096)
            self._systems[device] = system
        for words, known in ((use, system.uses), (advice, system.advice)):
            if words not in known:
                known.append(words)
        return system

    def check(self, partial: str | None = None) -> None:
        """NoRoom for the first file system the run does not fit in; ``partial`` says what the need
        counts so far, when the run does not know all it will write yet ("for 2 of 8 images")."""
        for system in self._systems.values():
            if system.wanted > system.free:
                uses = " and ".join(system.uses)
                amount = f"at least {human_size(system.wanted)} there ({partial})" if partial else \
                    f"about {human_size(system.wanted)} there"
                raise NoRoom(f"not enough space in {system.directory} ({uses}): {self.doing} needs {amount}, "
                             f"{human_size(system.free)} is free; {'; '.join(system.advice)}; or pass "
                             "--no-space-check",
                             str(system.directory), system.wanted, system.free)
