"""What an operator meets first: --version, -h, --json on every failure, -o that would clobber or is a directory."""

from __future__ import annotations

import json

import pytest

from mirror import __version__
from support import testbed
from support.faults import FaultProxy
from support.cli import run_mirror


def test_version_and_short_help():
    version = run_mirror("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"mirror {__version__}"
    short = run_mirror("push", "-h")
    assert short.returncode == 0 and "--registry" in short.stdout


def _failure_report(result) -> dict:
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1 and report["exit_code"] == result.returncode
    assert result.stderr.count("mirror: error:") == 1  # and still the one line for a person
    return report


def test_json_reports_a_usage_error():
    result = run_mirror("pull", "--mode", "no-such-topology", "-o", "x.tar.zst", "--json")
    assert result.returncode == 2
    assert "no-such-topology" in _failure_report(result)["error"]


def test_json_reports_a_corrupt_bundle(tmp_path):
    bundle = tmp_path / "b.tar.zst"
    bundle.write_bytes(b"\x28\xb5\x2f\xfd" + b"not a bundle" * 10)
    for command in ("verify", "inspect"):
        result = run_mirror(command, bundle, "--json")
        assert result.returncode == 4, (command, result.stderr)
        assert str(bundle) in _failure_report(result)["error"]


def test_json_reports_an_untrusted_certificate_and_plain_http_to_tls_is_named(corpus_bundle, tmp_path):
    tls = testbed.make_tls(tmp_path / "tls")
    registry = testbed.start_registry(tmp_path / "registry", tls=tls)
    try:
        untrusted = run_mirror("push", corpus_bundle, "--registry", registry.host, "--json")
        assert untrusted.returncode == 3
        assert "--ca-file" in _failure_report(untrusted)["error"]
        plain = run_mirror("push", corpus_bundle, "--registry", registry.host, "--plain-http")
        assert plain.returncode == 2 and "speaks TLS, not plain HTTP" in plain.stderr, plain.stderr
    finally:
        registry.stop()


def test_pull_refuses_to_clobber_a_bundle_without_force(seeded_source, tmp_path):
    image = seeded_source.corpus.images[0].source
    output = tmp_path / "b.tar.zst"
    output.write_bytes(b"an earlier bundle")
    refused = run_mirror("pull", image, "-o", output, *seeded_source.mirror_args)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert output.read_bytes() == b"an earlier bundle"
    forced = run_mirror("pull", image, "-o", output, "--force", *seeded_source.mirror_args, "-q")
    assert forced.returncode == 0, forced.stderr
    assert output.read_bytes() != b"an earlier bundle"


def test_pull_to_a_directory_fails_before_fetching_anything(tmp_path):
    # The source does not exist: reaching it would be exit 1; the -o check comes first.
    result = run_mirror("pull", "127.0.0.1:1/nothing/here:v1", "-o", tmp_path)
    assert result.returncode == 2 and "is a directory" in result.stderr


def test_a_log_gets_progress_lines_at_its_interval_and_a_short_run_none(seeded_source, tmp_path):
    images = [image.source for image in seeded_source.corpus.images[:3]]
    logged = run_mirror("pull", *images, "-o", tmp_path / "a.tar.zst", *seeded_source.mirror_args,
                        env={"MIRROR_PROGRESS_INTERVAL": "0"})
    assert logged.returncode == 0, logged.stderr
    lines = logged.stderr.splitlines()
    assert any(line.startswith("mirror: resolving: ") and line.endswith(f" of {len(images)} img") for line in lines)
    assert any(line.startswith("mirror: downloading: ") and "iB/s" in line for line in lines), lines[-5:]
    quiet_log = run_mirror("pull", *images, "-o", tmp_path / "b.tar.zst", *seeded_source.mirror_args)
    assert quiet_log.returncode == 0 and "mirror: downloading" not in quiet_log.stderr  # shorter than 30 s


def test_an_offline_pull_says_so_once_per_registry_not_once_per_image(tmp_path):
    images = [f"127.0.0.1:1/rancher/image-{n}:v1" for n in range(25)]
    result = run_mirror("--retries", "1", "pull", *images, "-o", tmp_path / "b.tar.zst", "--plain-http-registry",
                        "127.0.0.1:1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines  # the registry once, then the summary
    assert lines[0].startswith("mirror: failed: 25 image(s) from 127.0.0.1:1, which could not be reached")
    assert lines[1].startswith("mirror: error: 25 image(s) failed: ") and lines[1].endswith(" and 15 more")
    assert not (tmp_path / "b.tar.zst").exists()


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_is_how_often_a_request_that_failed_on_the_way_is_sent_again(registry, tmp_path, retries):
    with FaultProxy(registry.host) as proxy:
        proxy.fail("/manifests/", 503, times=None)
        result = run_mirror("--retries", str(retries), "pull", f"{proxy.host}/rancher/image:v1", "-o",
                            tmp_path / "b.tar.zst", "--plain-http-registry", proxy.host)
        asked = proxy.requests("HEAD", "/manifests/")  # the first request: a GET after it is asked as often
    assert result.returncode == 1
    assert len(asked) == retries + 1, asked
    assert f"{retries + 1} attempt(s)" in result.stderr, result.stderr


def test_registry_commands_report_failures_in_json_too(tmp_path):
    result = run_mirror("registry", "up", "--engine", "nonsense", "--state-dir", tmp_path / "state", "--json")
    assert result.returncode == 2
    assert "--engine nonsense" in _failure_report(result)["error"]
