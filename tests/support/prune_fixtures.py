"""A source registry holding four versions of one repository (every manifest shape) and a repository beside
it, a target filled from it, and ``mirror prune``: what prune's and registry gc's tests start from.
Test modules import the fixtures by name (``versions``, ``state_home``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from support import corpus, testbed
from support.cli import run_mirror
from support.corpus import AMD64, ARM64
from support.push_checks import ACCEPT, tag_as


APP = "docker.io/rancher/app"
VERSIONS = ("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0")
OTHER = "docker.io/rancher/other:v1"
SPEC = corpus.CorpusSpec("prune", (
    corpus.ImageSpec(f"{APP}:v1.0.0", "oci", (AMD64,), (200,)),
    corpus.ImageSpec(f"{APP}:v1.1.0", "docker-list", (AMD64, ARM64), (200,)),
    corpus.ImageSpec(f"{APP}:v1.2.0", "oci-index", (AMD64, ARM64), (200,)),
    corpus.ImageSpec(f"{APP}:v1.3.0", "docker", (AMD64,), (200,)),
    corpus.ImageSpec(OTHER, "oci", (AMD64,), (50,)),
), base_kb=100)


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """A source registry holding SPEC's images, read as docker.io through --source-mirror."""
    source = testbed.start_registry(tmp_path_factory.mktemp("prune-source"))
    try:
        generated = corpus.generate_corpus(tmp_path_factory.mktemp("prune-corpus"), SPEC)
        yield corpus.seed_registry(source.host, generated)
    finally:
        source.stop()


@pytest.fixture
def state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def fill(versions, host: str) -> tuple[str, int]:
    """Every image of SPEC into ``host``; then ``stable`` on v1.0.0's manifest, ``current`` on v1.3.0's,
    ``v1.2.0-amd64`` on the amd64 manifest of v1.2.0's index, and ``v1.2.0-rebuilt`` on an index with the
    same platform manifests as v1.2.0's (as a rebuild that changed only annotations pushes): its digest
    and size."""
    result = run_mirror("sync", "run", *(i.source for i in versions.images), "--to", host, "--to-plain-http",
                        *corpus.source_mirror_args(versions.registry_host), "-q")
    assert result.returncode == 0, result.stderr
    target = SimpleNamespace(url=f"http://{host}")  # all tag_as needs
    tag_as(target, "rancher/app", "v1.0.0", "stable")
    tag_as(target, "rancher/app", "v1.3.0", "current")
    tag_as(target, "rancher/app", versions.image(f"{APP}:v1.2.0").manifest_digests[AMD64], "v1.2.0-amd64")
    index = httpx.get(f"{target.url}/v2/rancher/app/manifests/v1.2.0", headers={"Accept": ACCEPT})
    rebuilt = json.dumps(index.json() | {"annotations": {"org.example.rebuilt": "1"}}).encode()
    put = httpx.put(f"{target.url}/v2/rancher/app/manifests/v1.2.0-rebuilt", content=rebuilt,
                    headers={"Content-Type": index.headers["content-type"]})
    assert put.status_code == 201, put.text
    return put.headers["docker-content-digest"], len(rebuilt)


def keep_latest_config(path, host: str):
    path.write_text(f"""
target: {{registry: {host}, plain_http: true}}
images:
  - repository: {APP}
    semver: '>=1.0.0'
    keep_latest: 2
""")
    return path


def prune(*args, input=None, env=None):
    result = run_mirror("prune", *args, input=input, env=env)
    report = json.loads(result.stdout) if "--json" in args and result.stdout.startswith("{") else None
    return result, report
