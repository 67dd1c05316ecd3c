"""`mirror sync run --to A --to B` against real registries: one read of the source, a result per target, the worst
exit code."""

from __future__ import annotations

import json

from mirror.model.reference import Reference
from mirror.model.target import target_repository
from support import corpus, testbed
from support.cli import run_mirror
from support.faults import FaultProxy
from support.push_checks import tags_at, tags_pointing_at_incomplete_images


def test_sync_into_two_registries_and_one_that_is_down(seeded_source, start_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    first, second = start_registry(), start_registry()
    down = f"127.0.0.1:{testbed.free_port()}"  # nothing listens there
    images = seeded_source.corpus.images
    with FaultProxy(seeded_source.registry.host) as proxy:
        args = [*(i.source for i in images), "--to", first.host, "--to", down, "--to", second.host,
                "--to-plain-http", *corpus.source_mirror_args(proxy.host)]
        result = run_mirror("--retries", "1", "sync", "run", *args, "--json", "-q")
        blobs = [seen.path for seen in proxy.requests("GET", "/blobs/")]
    assert result.returncode == 1, result.stderr
    assert blobs and len(blobs) == len(set(blobs))  # each blob read from the source once for both registries
    doc = json.loads(result.stdout)
    assert [t["target"] for t in doc["targets"]] == [first.host, down, second.host]
    assert doc["exit_code"] == 1 and doc["result"] == "partial"
    assert [t["result"] for t in doc["targets"]] == ["ok", "failed", "ok"]
    assert all(down in image["error"] for image in doc["targets"][1]["images"])
    for registry in (first, second):
        assert tags_pointing_at_incomplete_images(registry) == []
        for image in images:
            ref = Reference.parse(image.source)
            assert ref.tag in tags_at(registry, target_repository(ref))

    again = run_mirror("sync", "run", *(i.source for i in images), "--to", first.host, "--to", second.host,
                       "--to-plain-http", *seeded_source.mirror_args)
    assert again.returncode == 0, again.stderr
    assert f"images to {first.host}: {len(images)} unchanged" in again.stdout
    assert f"images to {second.host}: {len(images)} unchanged" in again.stdout
