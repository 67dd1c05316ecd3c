"""`mirror push BUNDLE --registry A --registry B` against real registries: a result per target, the worst exit code."""

from __future__ import annotations

import json

from support import testbed
from support.cli import run_mirror
from support.push_checks import tags_pointing_at_incomplete_images


def test_push_to_two_registries_and_one_that_is_down(corpus_bundle, start_registry):
    first, second = start_registry(), start_registry()
    down = f"127.0.0.1:{testbed.free_port()}"  # nothing listens there
    result = run_mirror("--retries", "1", "push", corpus_bundle, "--registry", first.host, "--registry", down,
                        "--registry", second.host, "--plain-http", "--json")
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert [t["registry"] for t in doc["targets"]] == [first.host, down, second.host] and doc["exit_code"] == 1
    good = [doc["targets"][0], doc["targets"][2]]
    assert all(t["failures"] == {} and t["images"] for t in good)
    assert doc["targets"][1]["failures"] and all(down in why for why in doc["targets"][1]["failures"].values())
    for registry in (first, second):
        verified = run_mirror("verify", corpus_bundle, "--registry", registry.host, "--plain-http", "-q")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert tags_pointing_at_incomplete_images(registry) == []
    assert f"pushed {len(good[0]['images'])} images to {first.host}" not in result.stdout  # --json: the report alone
    text = run_mirror("push", corpus_bundle, "--registry", first.host, "--registry", second.host, "--plain-http")
    assert text.returncode == 0, text.stderr
    assert f"images to {first.host}:" in text.stdout and f"images to {second.host}:" in text.stdout
