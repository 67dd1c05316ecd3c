"""Two pushes into one registry at once: the registry's own manifest race is not an integrity failure."""

from __future__ import annotations

import json
import subprocess
import sys

from support.cli import ROOT, run_mirror
from support.faults import FaultProxy

DIGEST_INVALID = json.dumps({"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match"}]})


def test_a_manifest_refused_while_its_blobs_are_present_is_put_once_more(corpus_bundle, registry):
    with FaultProxy(registry.host) as proxy:
        fault = proxy.fail(r"/manifests/sha256:", 400, method="PUT", times=1,
                           headers={"Content-Type": "application/json"})
        fault.body = DIGEST_INVALID.encode()
        result = run_mirror("push", corpus_bundle, "--registry", proxy.host, "--plain-http", "--json")
        assert result.returncode == 0, result.stderr
        puts = proxy.requests("PUT", r"/manifests/sha256:")
        again = [s for s in puts if s.path == puts[0].path]
        assert len(again) == 2  # refused once, sent again after its children were found in place
    check = run_mirror("verify", corpus_bundle, "--registry", registry.host, "--plain-http")
    assert check.returncode == 0, check.stderr


def test_a_manifest_whose_blob_is_really_missing_is_not_retried(corpus_bundle, registry):
    with FaultProxy(registry.host) as proxy:
        # Every blob upload "succeeds" at the proxy without reaching the registry: the blobs are really absent.
        proxy.fail(r"/blobs/uploads/.*digest=", 201, method="PUT", times=None)
        fault = proxy.fail(r"/manifests/sha256:", 400, method="PUT", times=None,
                           headers={"Content-Type": "application/json"})
        fault.body = DIGEST_INVALID.encode()
        result = run_mirror("push", corpus_bundle, "--registry", proxy.host, "--plain-http")
        puts = proxy.requests("PUT", r"/manifests/sha256:")
        assert len(puts) == len({s.path for s in puts})  # each manifest tried once: its blobs are not there
    assert result.returncode == 4, result.stderr


def test_two_pushes_of_one_bundle_at_once_both_succeed(corpus_bundle, registry):
    command = [sys.executable, "-m", "mirror", "push", str(corpus_bundle), "--registry", registry.host,
               "--plain-http", "-q"]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    check = run_mirror("verify", corpus_bundle, "--registry", registry.host, "--plain-http")
    assert check.returncode == 0, check.stderr
