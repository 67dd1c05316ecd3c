"""mirror pull from a source that meters pulls as Docker Hub does (a FaultProxy PullLimit: manifest GETs
counted in a short window, 429 beyond): the budget is read from free HEADs, what does not fit is deferred
(exit 6, work dir kept, no bundle) and a re-run after the window finishes it; --wait-for-limit finishes in
one run; --dry-run sets the cost against the budget."""

from __future__ import annotations

import json
import time

from mirror.bundle.reader import BundleReader
from support import corpus
from support.cli import run_mirror
from support.faults import FaultProxy

# Manifest GETs (pulls) each costs without --platform: an index and each platform manifest, or one manifest.
COSTS = {
    "docker.io/rancher/klipper-helm:v0.7.3-build20220613": 4,
    "docker.io/rancher/mirrored-pause:3.6": 3,
    "docker.io/library/busybox:1.34.1": 3,
    "docker.io/rancher/fleet:v0.3.10": 1,
    "quay.io/jetstack/cert-manager-webhook:v1.7.1": 4,
}
IMAGES = list(COSTS)
COST = sum(COSTS.values())  # 15
LIMIT, WINDOW = 8, 2  # the rest (7) fits the next window


def expected_digests(seeded_source) -> dict[str, str]:
    return {source: seeded_source.corpus.image(source).digest for source in IMAGES}


def bundle_digests(output) -> dict[str, str]:
    with BundleReader(output) as reader:
        return {record.source: record.digest for record in reader.manifest.images}


def deferral_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mirror: deferred:")]


def test_the_corpus_costs_what_the_tests_count(seeded_source):
    for source, cost in COSTS.items():
        image = seeded_source.corpus.image(source)
        index = image.media_type in (corpus.DOCKER_LIST, corpus.OCI_INDEX)
        assert cost == (1 + len(image.platforms) if index else 1), source


def test_a_spent_limit_defers_the_rest_and_a_rerun_after_the_window_finishes(seeded_source, tmp_path):
    output = tmp_path / "bundle.tar.zst"
    work = tmp_path / ".bundle.tar.zst.work"  # the default work dir, which a complete run removes
    with FaultProxy(seeded_source.registry.host) as proxy:
        proxy.limit_pulls(LIMIT, window=WINDOW)
        args = [*IMAGES, "-o", output, *corpus.source_mirror_args(proxy.host)]
        first = run_mirror("pull", *args, "--json")
        assert first.returncode == 6, first.stderr
        assert not output.exists() and work.is_dir()
        report = json.loads(first.stdout)
        assert report["bundle"] is None and report["exit_code"] == 6 and report["failures"] == {}
        assert report["deferred"] and set(report["deferred"]) <= set(IMAGES)
        assert report["ratelimits"][proxy.host]["limit"] == LIMIT
        assert report["ratelimits"][proxy.host]["spent"] == LIMIT
        [line] = deferral_lines(first.stderr)
        assert f"{len(report['deferred'])} of {len(IMAGES)} image(s) left for the next run" in line
        assert "reopens by" in line and "--wait-for-limit" in line and "docker login" in line
        assert len(proxy.requests("GET", "/manifests/")) == LIMIT  # all that was left, and no more
        assert not [r for r in proxy.requests() if r.status == 429]
        fetched = {r.path for r in proxy.requests("GET", "/blobs/") if r.status == 200}

        time.sleep(WINDOW + 0.5)  # the window passes: a wait, not a timed assertion
        asked = len(proxy.requests())
        second = run_mirror("pull", *args)
        assert second.returncode == 0, second.stderr
        again = proxy.requests()[asked:]
    assert bundle_digests(output) == expected_digests(seeded_source)
    manifests = [r.path for r in proxy.requests("GET", "/manifests/")]
    assert len(manifests) == COST == len(set(manifests))  # every manifest fetched once over both runs
    assert not fetched & {r.path for r in again if r.method == "GET"}  # blobs the first run fetched, kept
    assert not work.exists()


def test_wait_for_limit_waits_for_the_window_and_finishes_in_one_run(seeded_source, tmp_path):
    output = tmp_path / "bundle.tar.zst"
    with FaultProxy(seeded_source.registry.host) as proxy:
        proxy.limit_pulls(LIMIT, window=WINDOW)
        result = run_mirror("pull", *IMAGES, "-o", output, *corpus.source_mirror_args(proxy.host),
                            "--wait-for-limit")
        assert result.returncode == 0, result.stderr
        assert not [r for r in proxy.requests() if r.status == 429]
        assert len(proxy.requests("GET", "/manifests/")) == COST
    waits = [line for line in result.stderr.splitlines() if "waiting until" in line]
    assert len(waits) == 1 and proxy.host in waits[0], result.stderr  # 15 pulls, 8 a window: one wait
    assert not deferral_lines(result.stderr)
    assert bundle_digests(output) == expected_digests(seeded_source)


def test_a_429_without_a_stated_limit_defers_instead_of_failing(seeded_source, tmp_path):
    output = tmp_path / "bundle.tar.zst"
    work = tmp_path / "work"
    with FaultProxy(seeded_source.registry.host) as proxy:
        proxy.limit_pulls(LIMIT, window=3600, stated=False, retry_after=1)  # no headers: only 429s say it
        result = run_mirror("--retries", "1", "pull", *IMAGES, "-o", output, "--work-dir", work,
                            *corpus.source_mirror_args(proxy.host))
        assert [r for r in proxy.requests() if r.status == 429]
    assert result.returncode == 6, result.stderr
    assert not output.exists() and work.is_dir()
    [line] = deferral_lines(result.stderr)
    assert "rate limit is spent" in line and "reopens by" in line, line  # when, from the Retry-After


def test_dry_run_sets_the_cost_against_the_budget(seeded_source):
    with FaultProxy(seeded_source.registry.host) as proxy:
        args = [*IMAGES, *corpus.source_mirror_args(proxy.host), "--dry-run"]
        proxy.limit_pulls(20, window=60)
        fits = run_mirror("pull", *args, "--json")
        assert fits.returncode == 0, fits.stderr
        assert json.loads(fits.stdout)["ratelimits"][proxy.host] == {
            "remaining": 20, "limit": 20, "window": 60, "spent": COST, "left": 20 - COST,
            "unresolved": 0, "reopens": None}

        proxy.limit_pulls(LIMIT, window=60)
        short = run_mirror("pull", *args)
        assert short.returncode == 0, short.stderr
        assert not [r for r in proxy.requests() if r.status == 429]
    [line] = [line for line in short.stderr.splitlines() if line.startswith(f"mirror: {proxy.host}:")]
    assert f"{LIMIT} of {LIMIT} per 60 s were left, 0 once this dry run resolved them" in line
    assert "more for the images not resolved within it" in line and "--wait-for-limit" in line
