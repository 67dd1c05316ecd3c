"""The storage of the registry `up` manages, as the commands that write into it see it.

- Before work: ``up --from-bundle`` checks that the data dir's file system takes the bundle's
  blobs it does not hold yet (``check_bundle_fits``), and a push into it checks the bytes it will
  upload there (transfer/push.py, given ``ManagedRegistry.data_dir``): diskspace.py, exit 2.
- After a run it failed: distribution says "no space left on device" in its error answers
  (transport.py makes those StorageFull) and always in its log; ``ManagedRegistry.explain``
  names the data dir, and reads the log for a 5xx whose answer did not say why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..bundle.reader import BundleReader
from ..clock import parse_time
from ..diskspace import Space
from ..errors import MirrorError, RegistryError, StorageFull, UsageError
from ..model.oci import digest_hex
from .distconfig import STORAGE_TREE
from .state import RegistryState, StatePaths, default_state_dir, load_state

NO_SPACE = "no space left on device"
_LOG_TIME = re.compile(r'\btime="([^"]{1,64})"')  # distribution's (logrus) text lines: time="2026-12-05T21:21:34.96Z"


@dataclass
class ManagedRegistry:
    """The registry `up` started on this host, when a command writes into it."""

    host: str
    data_dir: Path
    state: RegistryState
    paths: StatePaths

    def explain(self, causes: dict[str, MirrorError], since: datetime) -> dict[str, MirrorError]:
        """``causes`` with a full disk named: a StorageFull gets the data dir, and so does a 5xx when the
        registry's log says "no space left on device" after ``since`` (the run's start)."""
        said_full: bool | None = None  # the log is read once, and only for a 5xx that did not say why
        explained: dict[str, MirrorError] = {}
        for image, cause in causes.items():
            if isinstance(cause, StorageFull):
                cause = StorageFull(str(cause), cause.status, self.host, cause.where, str(self.data_dir))
            elif isinstance(cause, RegistryError) and (cause.status or 0) >= 500:
                said_full = self._log_says_full(since) if said_full is None else said_full
                if said_full:
                    cause = StorageFull(f"{cause}; its log says {NO_SPACE}", cause.status, self.host,
                                        data_dir=str(self.data_dir))
            explained[image] = cause
        return explained

    def _log_says_full(self, since: datetime) -> bool:
        from .engines import recorded_engine  # the Docker SDK: imported only when a log is read

        for line in recorded_engine(self.state, self.paths).log_tail():
            stamp = _LOG_TIME.search(line)
            if NO_SPACE in line.lower() and stamp:
                try:
                    if parse_time(stamp[1]) >= since:
                        return True
                except (ValueError, TypeError):  # no time, or one without a zone
                    continue
        return False


def managed_registry(host: str, state_dir: Path | None = None) -> ManagedRegistry | None:
    """The running registry `up` started here, if ``host`` (HOST:PORT) is one of its addresses; else None."""
    paths = StatePaths(state_dir or default_state_dir())
    try:
        state = load_state(paths)
    except UsageError:
        return None  # an unreadable state file is not this command's business unless it needs it
    if state is None or not state.running:
        return None
    name, _, port = host.rpartition(":")
    if host != state.host and not (port == str(state.port) and name.strip("[]") in state.hostnames):
        return None
    return ManagedRegistry(host, Path(state.data_dir), state, paths)


def check_bundle_fits(data_dir: Path, bundle: Path) -> None:
    """`up --from-bundle`: NoRoom (exit 2) unless the data dir takes the bundle's blobs and manifests it
    does not hold yet, each a file of distribution's filesystem driver."""
    with BundleReader(bundle) as reader:
        stored = reader.manifest.stored_blobs
    blobs = data_dir / STORAGE_TREE / "registry" / "v2" / "blobs" / "sha256"
    new = [size for digest, size in stored.items()
           if not (blobs / digest_hex(digest)[:2] / digest_hex(digest) / "data").is_file()]
    space = Space(f"pushing {bundle.name} into it")
    space.where(data_dir, "the registry's data dir", "free some there, or run `mirror registry up` without "
                "--from-bundle to serve what it holds").add_files(new)
    space.check()
