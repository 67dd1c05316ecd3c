"""``mirror registry gc``: distribution's garbage collection for the registry ``up`` runs.

Deleting a manifest (``mirror prune``) only unlinks it: its layers stay on
disk until ``registry garbage-collect`` sweeps every blob no manifest
references. Distribution requires that nothing is pushed meanwhile (a blob
uploaded during the mark phase would be swept), so the registry is stopped
for the run, holding the state dir's lock, and started again exactly as
recorded (``up`` with no flags); one that was not running stays stopped. A
registry run by the operator's systemd unit is theirs to stop and start.

The bytes freed are the data dir's usage before and after; a dry run
(garbage-collect's own ``--dry-run``) reports what the blobs it would sweep
take. garbage-collect's output is kept in STATE/gc.log.

``delete_untagged`` (garbage-collect's ``--delete-untagged``) also deletes
every manifest no tag points at, the ones a sync's moved tag left behind.
Distribution 2.x counts an index's platform manifests among them and so
breaks every multi-platform image; it is refused unless the registry is 3.0
or later (asked with ``--version`` before anything stops).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, MirrorError, UsageError
from ..model.oci import digest_hex
from ..safefiles import Replacement
from .engines import Engine, SystemdEngine, recorded_engine
from .lifecycle import UpResult, disk_usage, stopped
from .probe import log_reason
from .state import RegistryState, StatePaths, load_state

ELIGIBLE = "blob eligible for deletion: "
SUMMARY = re.compile(r"(\d+) blobs marked, (\d+) blobs (?:and (\d+) manifests )?eligible for deletion", re.ASCII)
VERSION = re.compile(r"\bv?(\d+)\.(\d+)", re.ASCII)
BLOBS = "docker/registry/v2/blobs/sha256"  # the filesystem driver's blob store under its rootdirectory
REPOSITORIES = "docker/registry/v2/repositories"  # absent until the first push; garbage-collect then fails


@dataclass
class GcResult:
    state: RegistryState
    dry_run: bool
    before: int  # bytes the data dir took
    after: int
    swept_blobs: int  # blobs deleted (a dry run: that would be)
    swept_bytes: int  # what they took: a dry run's from the files, else before - after
    swept_manifests: int  # untagged manifests deleted (--delete-untagged)
    log: Path | None  # garbage-collect's output; None when there was nothing to collect
    stopped: bool = False  # stopped for the run (it was running, and this is no dry run)
    restarted: UpResult | None = None  # started again as recorded

    def to_json(self) -> dict[str, Any]:
        return {"url": self.state.url, "data_dir": self.state.data_dir, "dry_run": self.dry_run,
                "bytes_before": self.before, "bytes_after": self.after, "bytes_freed": self.swept_bytes,
                "blobs_swept": self.swept_blobs, "manifests_swept": self.swept_manifests,
                "log": str(self.log) if self.log else None, "stopped": self.stopped,
                "restarted": self.restarted is not None}


def collect_garbage(state_dir: Path, *, dry_run: bool = False, delete_untagged: bool = False) -> GcResult:
    """Stop, garbage-collect, start again as recorded. UsageError (nothing stopped) for a refused request;
    MirrorError when garbage-collect fails (the registry started again all the same)."""
    paths = StatePaths(state_dir)
    state = load_state(paths)
    if state is None:
        raise UsageError(f"no registry was set up with state dir {paths.root}: run `mirror registry up` first")
    engine = recorded_engine(state, paths)
    if isinstance(engine, SystemdEngine) and engine.running() and not dry_run:
        raise UsageError("the registry runs as the systemd unit mirror-registry: run `systemctl stop "
                         "mirror-registry`, `mirror registry gc`, then `systemctl start mirror-registry`")
    data_dir = Path(state.data_dir)
    if not (data_dir / REPOSITORIES).is_dir():  # nothing was ever pushed
        usage = disk_usage(data_dir)
        return GcResult(state, dry_run, usage, usage, 0, 0, 0, None)
    if delete_untagged:
        _require_version_3(engine, data_dir)
    flags = (["--dry-run"] if dry_run else []) + (["--delete-untagged"] if delete_untagged else [])
    if dry_run:
        result, status = _sweep(engine, state, paths, flags, dry_run)
    else:
        with stopped(paths.root) as held:
            result, status = _sweep(held.engine, held.state, paths, flags, dry_run)
        result.stopped, result.restarted = held.was_running, held.restarted
    if status != 0:
        lines = paths.gc_log.read_text(errors="replace").splitlines()
        again = "; the registry runs again" if result.restarted else ""
        raise MirrorError(f"garbage-collect failed on {data_dir} (exit {status}): {log_reason(lines)} "
                          f"(its whole output: {paths.gc_log}){again}")
    return result


def _sweep(engine: Engine, state: RegistryState, paths: StatePaths, flags: list[str],
           dry_run: bool) -> tuple[GcResult, int]:
    """garbage-collect over the data dir, its output to gc.log; what it did, and its exit status."""
    data_dir = Path(state.data_dir)
    before = disk_usage(data_dir)
    with Replacement(paths.gc_log) as log:
        status = engine.run_command(["garbage-collect", *flags, engine.sees(paths.config)], data_dir, log.file)
    after = disk_usage(data_dir)
    blobs, manifests, listed_bytes = _read_log(paths.gc_log, data_dir)
    swept = listed_bytes if dry_run else max(0, before - after)
    return GcResult(state, dry_run, before, after, blobs, swept, manifests, paths.gc_log), status


def _require_version_3(engine: Engine, data_dir: Path) -> None:
    with tempfile.TemporaryFile() as output:
        status = engine.run_command(["--version"], data_dir, output)
        output.seek(0)
        said = output.read(4096).decode(errors="replace")
    found = VERSION.search(said) if status == 0 else None
    if found is None or int(found.group(1)) < 3:
        version = f"is {found.group(0)}" if found else f"did not say its version ({said.strip()[:100]!r})"
        raise UsageError(f"--delete-untagged: this registry {version}; before distribution 3.0 garbage-collect "
                         "--delete-untagged deletes the platform manifests of every multi-platform image (no tag "
                         "points at them), breaking them. `mirror prune` already deletes the platform manifests "
                         "of what it prunes; run gc without --delete-untagged")


def _read_log(log: Path, data_dir: Path) -> tuple[int, int, int]:
    """(blobs swept, untagged manifests swept, bytes of the swept blobs still on disk: a dry run's)."""
    blobs = manifests = size = 0
    summary = None
    with open(log, "rb") as lines:
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            summary = SUMMARY.search(line) or summary
            if line.startswith(ELIGIBLE):
                blobs += 1
                size += _blob_size(data_dir, line[len(ELIGIBLE):])
            elif line.startswith("manifest eligible for deletion"):
                manifests += 1  # distribution 2.x names each; 3.x counts them in its summary
    if summary is not None:
        blobs = int(summary.group(2))
        manifests = int(summary.group(3) or manifests)
    return blobs, manifests, size


def _blob_size(data_dir: Path, digest: str) -> int:
    try:
        hex_digest = digest_hex(digest.strip())
        return (data_dir / BLOBS / hex_digest[:2] / hex_digest / "data").lstat().st_size
    except (IntegrityError, OSError):
        return 0
