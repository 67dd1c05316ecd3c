"""Signatures, attestations, SBOMs and OCI 1.1 referrers cross the gap with their images (docs/signatures.md).

The source is a real loopback registry (distribution 2.8, which has no referrers API) holding images
signed in cosign's exact format (tests/signing.py); the bundle is pushed into another, and what a
policy controller looks for is read back there, by mirror's reader and by skopeo.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

import httpx
import pytest

import testbed
from conftest import run_mirror
from mirror.model.reference import Reference
from mirror.model.target import target_repository
from signing import OCI_INDEX, OCI_MANIFEST, Pushed, Signer, Source

ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST])


@dataclass
class Signed:
    registry: testbed.Registry
    args: list[str]  # --source-mirror flags
    key: str  # the public key file that signed the images
    other_key: str  # a key that signed nothing here
    images: dict[str, Pushed]  # source reference -> its top manifest
    attached: dict[str, dict[str, Pushed]]  # source -> cosign suffix or "referrer" -> the attachment
    children: dict[str, list[Pushed]]  # an index's platform manifests


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> Signed:
    directory = tmp_path_factory.mktemp("signed-source")
    registry = testbed.start_registry(directory / "registry")
    signer, stranger = Signer("p256"), Signer("p256")
    (directory / "cosign.pub").write_bytes(signer.public_pem())
    (directory / "other.pub").write_bytes(stranger.public_pem())
    images, attached, children = {}, {}, {}

    def source(name: str) -> Source:
        return Source(registry.host, f"dockerhub/acme/{name}")

    app = source("app")
    images["docker.io/acme/app:1.0"] = top = app.image("1.0")
    attached["docker.io/acme/app:1.0"] = {
        "sig": app.sign(top.digest, signer, "index.docker.io/acme/app"),
        "att": app.attest(top.digest, signer, "index.docker.io/acme/app"),
        "sbom": app.sbom(top.digest),
        "referrer": app.referrer(top),
    }
    multi = source("multi")
    top, platforms = multi.index("2.0", ["linux/amd64", "linux/arm64"])
    images["docker.io/acme/multi:2.0"], children["docker.io/acme/multi:2.0"] = top, platforms
    attached["docker.io/acme/multi:2.0"] = {
        "sig": multi.sign(top.digest, signer, "docker.io/acme/multi:2.0"),  # newer cosign: the reference signed
        "platform-sig": multi.sign(platforms[0].digest, signer, "index.docker.io/acme/multi"),
    }
    images["docker.io/acme/unsigned:1.0"] = source("unsigned").image("1.0")
    images["docker.io/acme/stranger:1.0"] = top = source("stranger").image("1.0")
    source("stranger").sign(top.digest, stranger, "index.docker.io/acme/stranger")
    images["docker.io/acme/elsewhere:1.0"] = top = source("elsewhere").image("1.0")
    source("elsewhere").sign(top.digest, signer, "index.docker.io/acme/elsewhere",
                             names=images["docker.io/acme/app:1.0"].digest)
    images["docker.io/acme/renamed:1.0"] = top = source("renamed").image("1.0")
    source("renamed").sign(top.digest, signer, "index.docker.io/acme/app")
    images["docker.io/acme/corrupt:1.0"] = top = source("corrupt").image("1.0")
    source("corrupt").sign(top.digest, signer, "index.docker.io/acme/corrupt", corrupt=True)
    try:
        yield Signed(registry, ["--source-mirror", f"docker.io=http://{registry.host}/dockerhub"],
                     str(directory / "cosign.pub"), str(directory / "other.pub"), images, attached, children)
    finally:
        registry.stop()


def pull(signed: Signed, output, *refs: str, extra: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, dict]:
    result = run_mirror("pull", *refs, "-o", output, *signed.args, "-q", "--json", *extra)
    return result, json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}


def at(registry, source: str, reference: str) -> httpx.Response:
    repository = target_repository(Reference.parse(source))
    return httpx.get(f"{registry.url}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})


def tag(digest: str, suffix: str | None = None) -> str:
    return f"sha256-{digest.split(':')[1]}" + (f".{suffix}" if suffix else "")


def test_pull_push_carries_every_attachment_to_where_cosign_and_oras_look(signed, registry, tmp_path):
    bundle = tmp_path / "b.tar.zst"
    app, multi = "docker.io/acme/app:1.0", "docker.io/acme/multi:2.0"
    result, report = pull(signed, bundle, app, multi)
    assert result.returncode == 0, result.stderr
    entry = {image["source"]: image for image in report["images"]}
    assert sorted(entry) == [app, multi]  # attachments are not images of their own in the report
    assert entry[app]["signatures"] == "present"
    assert {a["kind"] for a in entry[app]["attachments"]} == {"signature", "attestation", "sbom", "referrer"}

    inspected = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    listed = {image["source"]: image["attachments"] for image in inspected["images"]}
    assert [s["digest"] for s in listed[app]["signatures"]] == [signed.attached[app]["sig"].digest]
    assert [s["artifact_type"] for s in listed[app]["attestations"]] == ["application/vnd.dsse.envelope.v1+json"]
    assert [s["artifact_type"] for s in listed[app]["sboms"]] == ["text/spdx+json"]
    assert [(r["digest"], r["artifact_type"]) for r in listed[app]["referrers"]] == [
        (signed.attached[app]["referrer"].digest, "application/vnd.example.scan+json")]
    assert sorted(s["digest"] for s in listed[multi]["signatures"]) == sorted(
        [signed.attached[multi]["sig"].digest, signed.attached[multi]["platform-sig"].digest])
    verified = json.loads(run_mirror("verify", bundle, "--json", "-q").stdout)
    assert (verified["images"], verified["attachments"]) == (2, 6)

    # A referrer someone already listed at the target stays listed when ours is added.
    target = Source(registry.host, target_repository(Reference.parse(app)))
    target.image("1.0")
    theirs = target.referrer(signed.images[app], "application/vnd.example.theirs", note="theirs")

    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "--json", "-q")
    assert pushed.returncode == 0, pushed.stderr
    top = signed.images[app].digest
    for suffix in ("sig", "att", "sbom"):
        there = at(registry, app, tag(top, suffix))
        assert there.status_code == 200 and there.headers["docker-content-digest"] == signed.attached[app][suffix].digest
    index = at(registry, app, tag(top)).json()
    assert [m["digest"] for m in index["manifests"]] == [theirs.digest, signed.attached[app]["referrer"].digest]
    assert index["manifests"][1]["artifactType"] == "application/vnd.example.scan+json"
    referrer = at(registry, app, signed.attached[app]["referrer"].digest).json()
    assert referrer["subject"]["digest"] == top
    platform = signed.children[multi][0].digest
    assert at(registry, multi, tag(platform, "sig")).headers["docker-content-digest"] == \
        signed.attached[multi]["platform-sig"].digest

    repository = target_repository(Reference.parse(app))
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.host}/{repository}:{tag(top, 'sig')}"],
                         capture_output=True, check=True).stdout
    assert raw == at(registry, app, tag(top, "sig")).content
    assert json.loads(raw)["layers"][0]["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"


def test_the_right_key_verifies_on_pull_verify_and_push(signed, registry, tmp_path):
    bundle = tmp_path / "b.tar.zst"
    refs = ["docker.io/acme/app:1.0", "docker.io/acme/multi:2.0"]
    result, report = pull(signed, bundle, *refs, extra=("--verify-key", signed.other_key, "--verify-key", signed.key))
    assert result.returncode == 0, result.stderr
    assert {image["signatures"] for image in report["images"]} == {"verified"}
    checked = run_mirror("verify", bundle, "--verify-key", signed.key, "--json", "-q")
    assert checked.returncode == 0, checked.stderr
    assert set(json.loads(checked.stdout)["signatures"].values()) == {"verified"}
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "--verify-key", signed.key, "--json", "-q")
    assert pushed.returncode == 0, pushed.stderr
    images = [image for image in json.loads(pushed.stdout)["images"] if "kind" not in image]
    assert {(image["source"], image["signatures"]) for image in images} == {(ref, "verified") for ref in refs}


@pytest.mark.parametrize("image, why", [
    ("docker.io/acme/stranger:1.0", "no --verify-key verifies its signature"),
    ("docker.io/acme/elsewhere:1.0", "not the image's digest"),
    ("docker.io/acme/renamed:1.0", "its signature is for index.docker.io/acme/app, not docker.io/acme/renamed"),
    ("docker.io/acme/corrupt:1.0", "no --verify-key verifies its signature"),
    ("docker.io/acme/unsigned:1.0", "it has no cosign signature"),
])
def test_an_image_without_a_valid_signature_fails_pull_with_nothing_written(signed, tmp_path, image, why):
    bundle = tmp_path / "b.tar.zst"
    result, _ = pull(signed, bundle, image, extra=("--verify-key", signed.key))
    assert result.returncode == 4, result.stderr
    assert image in result.stderr and why in result.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("b.tar.zst")]  # the work dir resumes


def test_keep_going_skips_and_reports_the_unsigned_image(signed, tmp_path):
    bundle = tmp_path / "b.tar.zst"
    result, report = pull(signed, bundle, "docker.io/acme/app:1.0", "docker.io/acme/unsigned:1.0",
                          extra=("--verify-key", signed.key, "--keep-going"))
    assert result.returncode == 4, result.stderr
    assert [image["source"] for image in report["images"]] == ["docker.io/acme/app:1.0"]
    assert "docker.io/acme/unsigned:1.0" in report["failures"]
    inspected = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert [image["source"] for image in inspected["images"]] == ["docker.io/acme/app:1.0"]


def test_push_tags_no_image_the_key_does_not_verify(signed, registry, tmp_path):
    bundle = tmp_path / "b.tar.zst"
    result, _ = pull(signed, bundle, "docker.io/acme/app:1.0", "docker.io/acme/stranger:1.0")
    assert result.returncode == 0, result.stderr
    checked = run_mirror("verify", bundle, "--verify-key", signed.key, "-q")
    assert checked.returncode == 4 and "docker.io/acme/stranger:1.0" in checked.stderr
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "--verify-key", signed.key, "--json", "-q")
    assert pushed.returncode == 4
    report = json.loads(pushed.stdout)
    stranger = signed.images["docker.io/acme/stranger:1.0"].digest
    signature = f"docker.io/acme/stranger:{tag(stranger, 'sig')}"
    assert sorted(report["failures"]) == ["docker.io/acme/stranger:1.0", signature]
    assert "no --verify-key verifies its signature" in report["failures"]["docker.io/acme/stranger:1.0"]
    assert "the image it is attached to" in report["failures"][signature]
    assert at(registry, "docker.io/acme/app:1.0", "1.0").status_code == 200
    assert at(registry, "docker.io/acme/stranger:1.0", "1.0").status_code == 404
    assert at(registry, "docker.io/acme/stranger:1.0", tag(stranger, "sig")).status_code == 404


def test_no_attachments_leaves_them_out(signed, tmp_path):
    bundle = tmp_path / "b.tar.zst"
    result, report = pull(signed, bundle, "docker.io/acme/app:1.0", extra=("--no-attachments",))
    assert result.returncode == 0, result.stderr
    assert report["images"][0]["attachments"] == [] and report["images"][0]["signatures"] is None
    verified = json.loads(run_mirror("verify", bundle, "--json", "-q").stdout)
    assert verified["attachments"] == 0
    refused = run_mirror("pull", "docker.io/acme/app:1.0", "-o", tmp_path / "c.tar.zst", *signed.args,
                         "--no-attachments", "--verify-key", signed.key)
    assert refused.returncode == 2 and "--no-attachments" in refused.stderr
