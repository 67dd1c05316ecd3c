"""The pull's work dir: a user's own is never deleted; one that cannot be written, or a full disk, ends the pull
in one line."""

from __future__ import annotations

import os
import re

import pytest

from mirror.bundle.store import PACKED_MAX
from mirror.runlock import RunLock
from support.cli import run_mirror


def test_a_work_dir_given_by_the_user_is_not_deleted(seeded_source, tmp_path):
    work = tmp_path / "cache"
    work.mkdir()
    (work / "notes.txt").write_text("not mirror's")
    result = run_mirror("pull", seeded_source.corpus.images[1].source, "-o", tmp_path / "b.tar.zst",
                        "--work-dir", work, *seeded_source.mirror_args, "-q")
    assert result.returncode == 0, result.stderr
    assert (work / "notes.txt").read_text() == "not mirror's"


@pytest.mark.parametrize("in_the_way", ["a large layer's partial file", "the pack of small content"])
def test_a_work_dir_that_cannot_be_written_ends_the_pull_in_one_line(seeded_source, tmp_path, in_the_way):
    sizes = seeded_source.corpus.sizes
    image = next(i for i in seeded_source.corpus.images  # one manifest, no index; a layer of a file of its own
                 if len(i.platforms) == 1 and any(sizes[d] > PACKED_MAX for d in i.blob_digests))
    layer = max(image.blob_digests, key=lambda d: sizes[d])
    work = tmp_path / "work"
    blocked = (work / "blobs" / "sha256" / f"{layer.split(':')[1]}.partial" if in_the_way.endswith("file")
               else work / "blobs.pack")
    blocked.mkdir(parents=True)  # a directory, in the download's way
    output = tmp_path / "b.tar.zst"
    result = run_mirror("pull", image.source, "-o", output, "--work-dir", work, *seeded_source.mirror_args, "-q",
                        timeout=90)  # a full work dir once hung the pull
    assert result.returncode == 1, result.stderr
    assert (layer if in_the_way.endswith("file") else str(blocked)) in result.stderr and "work dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name != "work"] == []  # no bundle, no temp file


@pytest.mark.parametrize("work_dir", ["beside the bundle", "elsewhere"])
def test_a_full_disk_ends_the_pull_in_one_line_naming_the_directory_and_leaves_no_bundle(
        seeded_source, small_disk, tmp_path, work_dir):
    """The writer's temp bundle was left behind when closing it flushed onto the full disk and raised,
    and the pull said only `[Errno 28] No space left on device`. --no-space-check: the pull starts although
    the space check would stop it, and the disk fills."""
    extra = ["--work-dir", tmp_path / "work"] if work_dir == "elsewhere" else []
    images = [image.source for image in seeded_source.corpus.images]  # far more than 256 KiB
    result = run_mirror("pull", *images, "-o", small_disk / "b.tar.zst", *seeded_source.mirror_args, "-q", *extra,
                        "--no-space-check")
    assert result.returncode == 1, result.stderr
    full = re.escape(str(small_disk)) + (r"(/\.b\.tar\.zst\.work)?" if work_dir == "beside the bundle" else "")
    line = result.stderr.removesuffix("\n")
    assert "\n" not in line
    assert re.fullmatch(rf"mirror: error: {full} is full \(No space left on device\): this pull "
                        r"needs about \d+\.\d MiB more there, (\d+ B|\d+\.\d [KM]iB) is free; free some, or put the "
                        r"work dir \(--work-dir\) or the bundle \(-o\) on a larger disk", line), line
    left = [p.name for p in small_disk.iterdir()]
    assert left == ([".b.tar.zst.work"] if work_dir == "beside the bundle" else [])  # the work dir: the resume point


def test_a_link_planted_as_the_hidden_work_dir_is_refused(seeded_source, tmp_path):
    """The default work dir is .NAME.work beside the bundle: a link there sent every download (and the
    partial files appended to) into a directory of another user's choosing."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / ".b.tar.zst.work").symlink_to(elsewhere)
    result = run_mirror("pull", seeded_source.corpus.images[1].source, "-o", out / "b.tar.zst",
                        *seeded_source.mirror_args, "-q")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"mirror: error: {out / '.b.tar.zst.work'} is not a directory of this user's (a link, "
                             "a file, or another user's): refusing to write in it; remove it\n")
    assert list(elsewhere.iterdir()) == [] and [p.name for p in out.iterdir()] == [".b.tar.zst.work"]


def test_a_second_pull_into_a_work_dir_in_use_exits_7_and_touches_nothing(seeded_source, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    work, bundle = tmp_path / "work", tmp_path / "b.tar.zst"
    work.mkdir()
    with RunLock(f"pull {work.resolve()}", "pull"):  # as the first pull holds it while it runs
        result = run_mirror("pull", seeded_source.corpus.images[1].source, "-o", bundle, "--work-dir", work,
                            *seeded_source.mirror_args, "-q")
    assert result.returncode == 7, result.stderr
    assert f"another pull using the work dir {work} is running (PID {os.getpid()}" in result.stderr
    assert list(work.iterdir()) == [] and not bundle.exists()
