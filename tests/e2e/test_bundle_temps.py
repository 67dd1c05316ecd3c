"""The writer's temp files: a failed write removes its own, the next write removes those of killed writers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mirror.bundle.writer import write_bundle
from mirror.errors import MirrorError
from support.bundle_fixtures import generated, manifest_for, store  # noqa: F401  (fixtures)


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(child.stdout)


def test_next_write_removes_temps_of_dead_writers_only(tmp_path, generated, store):  # noqa: F811
    dead = dead_pid()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        left_by_dead = [f".b.tar.zst.tmp-{dead}-0badcafe", f".b.tar.zst.part-004.tmp-{dead}-0badcafe",
                        f".b.tar.zst.sha256.tmp-{dead}-0badcafe"]
        kept = [f".b.tar.zst.tmp-{alive.pid}-cafe0123", f".other.tar.zst.tmp-{dead}-0badcafe"]
        for name in left_by_dead + kept:
            (tmp_path / name).write_bytes(b"x" * 4096)
        written = write_bundle(tmp_path / "b.tar.zst", manifest_for(generated), store)
    finally:
        alive.kill()
        alive.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b.tar.zst", "b.tar.zst.sha256", *kept])
    assert written.path.stat().st_size == written.size


@pytest.mark.parametrize("part_size", [None, 64 * 1024])
def test_full_disk_leaves_nothing_and_names_the_full_directory(small_disk, generated, store, part_size):  # noqa: F811
    """small_disk (256 KiB) is too small for the test bundle (about 390 KiB)."""
    path = small_disk / "b.tar.zst"
    with pytest.raises(MirrorError) as caught:
        write_bundle(path, manifest_for(generated), store, part_size=part_size)
    assert str(caught.value) == f"writing bundle {path} failed: {small_disk} is full (No space left on device)"
    assert list(small_disk.iterdir()) == []
