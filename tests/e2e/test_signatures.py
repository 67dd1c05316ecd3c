"""Signatures, attestations, SBOMs and OCI 1.1 referrers cross the gap with their images (docs/signatures.md).

The source is a real loopback registry (distribution 2.8, which has no referrers API) holding images
signed in cosign's exact format (tests/signing.py); the bundle is pushed into another, and what a
policy controller looks for is read back there, by mirror's reader and by skopeo.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support import testbed
from support.cli import run_mirror
from support.faults import FaultProxy
from mirror.attach.cosign import Payload
from mirror.attach.keys import VerifyKey, judge, load_keys
from mirror.bundle.format import Attached, BundleManifest, ImageRecord
from mirror.bundle.reader import BundleReader
from mirror.errors import IntegrityError
from mirror.server.imageload import find_registry_image
from mirror.model.oci import Manifest
from mirror.model.reference import Reference
from mirror.model.target import target_repository
from support.signing import (
    OCI_INDEX, OCI_MANIFEST, SIGNATURE_ANNOTATION, SIMPLE_SIGNING, Pushed, Signer, Sigstore, Source, digest_of, payload,
)

ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST])
ANY_TEXT = type("AnyText", (), {"__eq__": lambda self, other: isinstance(other, str) and bool(other)})()
KEYLESS = ("release@acme.example", "https://accounts.acme.example")  # the signer's identity, its OIDC issuer


@dataclass
class Signed:
    registry: testbed.Registry
    args: list[str]  # --source-mirror flags
    key: str  # the public key file that signed the images
    other_key: str  # a key that signed nothing here
    images: dict[str, Pushed]  # source reference -> its top manifest
    attached: dict[str, dict[str, Pushed]]  # source -> cosign suffix or "referrer" -> the attachment
    children: dict[str, list[Pushed]]  # an index's platform manifests
    signer: Signer  # the private half of ``key``
    trusted_root: str  # the Sigstore trusted root that vouches for the keyless signature
    other_root: str  # another one
    other_ca: str  # our log, another certificate authority


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
    sigstore = Sigstore()
    (directory / "trusted_root.json").write_text(json.dumps(sigstore.trusted_root()))
    (directory / "other_root.json").write_text(json.dumps(Sigstore().trusted_root()))
    other_ca = Sigstore()
    other_ca.log_key = sigstore.log_key
    (directory / "other_ca.json").write_text(json.dumps(other_ca.trusted_root()))
    images["docker.io/acme/keyless:1.0"] = top = source("keyless").image("1.0")
    source("keyless").sign_keyless(top.digest, sigstore, "index.docker.io/acme/keyless", *KEYLESS)
    try:
        yield Signed(registry, ["--source-mirror", f"docker.io=http://{registry.host}/dockerhub"],
                     str(directory / "cosign.pub"), str(directory / "other.pub"), images, attached, children, signer,
                     str(directory / "trusted_root.json"), str(directory / "other_root.json"),
                     str(directory / "other_ca.json"))
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
    text = run_mirror("inspect", bundle).stdout
    assert f"+ signature {tag(signed.images[app].digest, 'sig')}" in text and "2 image(s) with 6 signature(s)" in text

    # A referrer someone already listed at the target stays listed when ours is added.
    target = Source(registry.host, target_repository(Reference.parse(app)))
    target.image("1.0")
    theirs = target.referrer(signed.images[app], "application/vnd.example.theirs", note="theirs")

    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "--json", "-q")
    assert pushed.returncode == 0, pushed.stderr
    top = signed.images[app].digest
    for suffix in ("sig", "att", "sbom"):
        there = at(registry, app, tag(top, suffix))
        assert there.status_code == 200
        assert there.headers["docker-content-digest"] == signed.attached[app][suffix].digest
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
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "--verify-key", signed.key,
                        "--json", "-q")
    assert pushed.returncode == 0, pushed.stderr
    images = [image for image in json.loads(pushed.stdout)["images"] if "kind" not in image]
    assert {(image["source"], image["signatures"]) for image in images} == {(ref, "verified") for ref in refs}


def test_a_narrowed_index_is_verified_by_the_signature_of_the_index_it_was_cut_from(signed, registry, tmp_path):
    multi = "docker.io/acme/multi:2.0"
    bundle = tmp_path / "b.tar.zst"
    result, report = pull(signed, bundle, multi, extra=("--platform", "linux/amd64", "--verify-key", signed.key))
    assert result.returncode == 0, result.stderr
    original = signed.images[multi].digest
    assert report["images"][0]["narrowed_from"] == original and report["images"][0]["signatures"] == "verified"
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "-q", "--verify-key", signed.key)
    assert pushed.returncode == 0, pushed.stderr
    assert at(registry, multi, tag(original, "sig")).headers["docker-content-digest"] == \
        signed.attached[multi]["sig"].digest


@pytest.mark.parametrize("image, why", [
    ("docker.io/acme/stranger:1.0", "no --verify-key verifies its signature"),
    ("docker.io/acme/elsewhere:1.0", "not the image's digest"),
    ("docker.io/acme/renamed:1.0", 'its signature is for "index.docker.io/acme/app", not docker.io/acme/renamed'),
    ("docker.io/acme/corrupt:1.0", "no --verify-key verifies its signature"),
    ("docker.io/acme/unsigned:1.0", "it has no cosign signature"),
])
def test_an_image_without_a_valid_signature_fails_pull_with_nothing_written(signed, tmp_path, image, why):
    bundle = tmp_path / "b.tar.zst"
    result, _ = pull(signed, bundle, image, extra=("--verify-key", signed.key))
    assert result.returncode == 4, result.stderr
    assert image in result.stderr and why in result.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("b.tar.zst")]  # the work dir resumes


def test_what_a_signature_or_referrer_says_reaches_messages_and_listings_on_one_line(signed, tmp_path):
    sneaky = Source(signed.registry.host, "dockerhub/acme/sneaky")
    image = sneaky.image("1.0")
    sneaky.sign(image.digest, signed.signer, "index.docker.io/acme/sneaky\n\x1b[2Jmirror: all good")
    sneaky.referrer(image, artifact_type="application/x\n\x1b[2J")
    bundle = tmp_path / "b.tar.zst"
    result, _ = pull(signed, bundle, "docker.io/acme/sneaky:1.0", extra=("--verify-key", signed.key))
    assert result.returncode == 4 and "\x1b" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "all good" in line] == [
        'mirror: failed: docker.io/acme/sneaky:1.0: no valid signature: its signature is for '
        '"index.docker.io/acme/sneaky\\n\\u001b[2Jmirror: all good", not docker.io/acme/sneaky']
    assert pull(signed, bundle, "docker.io/acme/sneaky:1.0")[0].returncode == 0
    listed = json.loads(run_mirror("inspect", bundle, "--json").stdout)["images"][0]["attachments"]
    assert [r["artifact_type"] for r in listed["referrers"]] == [""]


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
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "--verify-key", signed.key,
                        "--json", "-q")
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


def test_a_delta_after_a_new_signature_on_an_old_image_carries_only_the_signature(signed, registry, tmp_path):
    later = Source(signed.registry.host, "dockerhub/acme/later")
    image = later.image("1.0")
    full, delta = tmp_path / "full.tar.zst", tmp_path / "delta.tar.zst"
    assert pull(signed, full, "docker.io/acme/later:1.0")[0].returncode == 0
    signature = later.sign(image.digest, signed.signer, "index.docker.io/acme/later")
    result, report = pull(signed, delta, "docker.io/acme/later:1.0", extra=("--base", str(full)))
    assert result.returncode == 0, result.stderr
    assert report["kind"] == "delta" and report["images"][0]["signatures"] == "present"
    with BundleReader(delta) as reader:
        stored = set(reader.manifest.stored_blobs)
        records = {record.digest: record for record in reader.manifest.images}
    assert stored == {signature.digest, *records[signature.digest].blobs}
    said = []
    for bundle in (full, delta):
        pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "-q")
        assert pushed.returncode == 0, pushed.stderr
        said.append(pushed.stdout)
    assert said[0].startswith("pushed 1 images to")
    assert said[1].startswith("pushed 1 images and 1 signatures, attestations, SBOMs and referrers to")
    there = at(registry, "docker.io/acme/later:1.0", tag(image.digest, "sig"))
    assert there.headers["docker-content-digest"] == signature.digest
    checked = run_mirror("verify", delta, "--verify-key", signed.key, "-q")  # the image's own blobs are the base's
    assert checked.returncode == 0, checked.stderr


def test_sync_copies_attachments_after_the_image_and_a_later_signature_as_attached(signed, registry, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    source = Source(signed.registry.host, "dockerhub/acme/synced")
    image = source.image("1.0")
    sbom = source.sbom(image.digest)
    referrer = source.referrer(image)

    def run() -> dict:
        result = run_mirror("sync", "run", "docker.io/acme/synced:1.0", "--to", registry.host, "--to-plain-http",
                            *signed.args, "--json", "-q")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["images"][0]

    first = run()
    assert first["action"] == "copied" and sorted(first["attachments"]) == sorted([tag(image.digest, "sbom"),
                                                                                  referrer.digest])
    assert at(registry, "docker.io/acme/synced:1.0", tag(image.digest, "sbom")).headers["docker-content-digest"] \
        == sbom.digest
    assert [m["digest"] for m in at(registry, "docker.io/acme/synced:1.0", tag(image.digest)).json()["manifests"]] \
        == [referrer.digest]
    assert run()["action"] == "unchanged"
    signature = source.sign(image.digest, signed.signer, "index.docker.io/acme/synced")
    later = run()
    assert (later["action"], later["attachments"]) == ("attached", [tag(image.digest, "sig")])
    assert at(registry, "docker.io/acme/synced:1.0", tag(image.digest, "sig")).headers["docker-content-digest"] \
        == signature.digest
    assert run()["action"] == "unchanged"


def test_prune_keeps_a_kept_image_s_attachments_and_drops_those_of_an_image_that_goes(signed, registry, tmp_path):
    app = "docker.io/acme/app:1.0"
    full, keep = tmp_path / "full.tar.zst", tmp_path / "keep.tar.zst"
    assert pull(signed, full, app)[0].returncode == 0
    assert pull(signed, keep, app, extra=("--no-attachments",))[0].returncode == 0  # names the image alone
    assert run_mirror("push", full, "--registry", registry.host, "--plain-http", "-q").returncode == 0
    target = Source(registry.host, target_repository(Reference.parse(app)))
    old = target.image("0.9", seed="old")
    target.sign(old.digest, signed.signer, "index.docker.io/acme/app")
    pruned = run_mirror("prune", "--keep", keep, "--registry", registry.host, "--plain-http", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert sorted(t["tag"] for t in json.loads(pruned.stdout)["pruned"]) == ["0.9", tag(old.digest, "sig")]
    top = signed.images[app].digest
    for reference in ("1.0", tag(top, "sig"), tag(top, "att"), tag(top, "sbom"), tag(top)):
        assert at(registry, app, reference).status_code == 200, reference


def test_sync_no_attachments_copies_the_image_alone(signed, registry, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    app = "docker.io/acme/app:1.0"
    result = run_mirror("sync", "run", app, "--to", registry.host, "--to-plain-http", *signed.args,
                        "--no-attachments", "--json", "-q")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"][0]["attachments"] == []
    assert at(registry, app, "1.0").status_code == 200
    assert at(registry, app, tag(signed.images[app].digest, "sig")).status_code == 404


def test_sync_with_a_key_copies_only_what_it_verifies(signed, registry, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    refs = ["docker.io/acme/app:1.0", "docker.io/acme/unsigned:1.0"]

    def run(*extra: str) -> tuple[int, dict]:
        result = run_mirror("sync", "run", *refs, "--to", registry.host, "--to-plain-http", *signed.args,
                            "--verify-key", signed.key, "--json", "-q", *extra)
        return result.returncode, json.loads(result.stdout)

    code, report = run()
    assert code == 4
    assert {i["source"]: i["action"] for i in report["images"]} == {refs[0]: "failed", refs[1]: "failed"}
    assert at(registry, refs[0], "1.0").status_code == 404  # without --keep-going nothing is written
    code, report = run("--keep-going")
    assert code == 4
    entries = {i["source"]: i for i in report["images"]}
    assert (entries[refs[0]]["action"], entries[refs[0]]["signatures"]) == ("copied", "verified")
    assert "it has no cosign signature" in entries[refs[1]]["error"]
    assert at(registry, refs[0], "1.0").status_code == 200 and at(registry, refs[1], "1.0").status_code == 404


def keyless(root: str, identity: str = KEYLESS[0], issuer: str = KEYLESS[1]) -> tuple[str, ...]:
    return ("--trusted-root", root, "--certificate-identity", identity, "--certificate-oidc-issuer", issuer)


def test_a_keyless_signature_verifies_against_the_trusted_root_given(signed, registry, tmp_path):
    bundle = tmp_path / "b.tar.zst"
    result, report = pull(signed, bundle, "docker.io/acme/keyless:1.0", extra=keyless(signed.trusted_root))
    assert result.returncode == 0, result.stderr
    assert report["images"][0]["signatures"] == "verified"
    checked = run_mirror("verify", bundle, "-q", *keyless(signed.trusted_root))
    assert checked.returncode == 0, checked.stderr
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "-q",
                        *keyless(signed.trusted_root))
    assert pushed.returncode == 0, pushed.stderr
    # a key alone does not vouch for a keyless signature, and the key's signatures need no root
    assert run_mirror("verify", bundle, "-q", "--verify-key", signed.key).returncode == 4


@pytest.mark.parametrize("flags, why", [
    (lambda s: keyless(s.other_root), "its Rekor bundle is from a log the trusted root does not list"),
    (lambda s: keyless(s.other_ca), "not issued by a certificate authority of the trusted root"),
    (lambda s: keyless(s.trusted_root, identity="mallory@acme.example"),
     'its certificate is for "release@acme.example", not "mallory@acme.example"'),
    (lambda s: keyless(s.trusted_root, issuer="https://token.actions.githubusercontent.com"),
     'not "https://token.actions.githubusercontent.com"'),
])
def test_a_keyless_signature_fails_with_another_root_identity_or_issuer(signed, tmp_path, flags, why):
    result, _ = pull(signed, tmp_path / "b.tar.zst", "docker.io/acme/keyless:1.0", extra=flags(signed))
    assert result.returncode == 4 and why in result.stderr, result.stderr
    assert not (tmp_path / "b.tar.zst").exists()


def test_keyless_flags_go_together(signed, tmp_path):
    result, _ = pull(signed, tmp_path / "b.tar.zst", "docker.io/acme/keyless:1.0",
                     extra=("--trusted-root", signed.trusted_root))
    assert result.returncode == 2 and "--certificate-identity" in result.stderr


def through(proxy: FaultProxy) -> tuple[str, ...]:
    return ("--source-mirror", f"docker.io=http://{proxy.host}/dockerhub")


def test_the_referrers_api_is_asked_and_an_entry_about_another_image_is_dropped(signed, tmp_path):
    app = "docker.io/acme/app:1.0"
    top, referrer = signed.images[app], signed.attached[app]["referrer"]
    listing = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": referrer.digest, "size": referrer.size},
        {"mediaType": OCI_MANIFEST, "digest": top.digest, "size": top.size},  # in the repository, no subject
        {"mediaType": OCI_MANIFEST, "digest": "../../../v2/_catalog", "size": 1}, "sha256:" + "0" * 64]}
    with FaultProxy(signed.registry.host) as proxy:
        proxy.serve(f"/referrers/{top.digest}$", json.dumps(listing).encode(), method="GET",
                    headers={"Content-Type": OCI_INDEX})
        result = run_mirror("pull", app, "-o", tmp_path / "b.tar.zst", *through(proxy), "-q")
        assert result.returncode == 0, result.stderr
        assert not proxy.requests("HEAD", f"/manifests/{tag(top.digest)}$")  # the API answered: no tag schema
        assert not proxy.requests(None, "_catalog")
    inspected = json.loads(run_mirror("inspect", tmp_path / "b.tar.zst", "--json").stdout)
    assert [r["digest"] for r in inspected["images"][0]["attachments"]["referrers"]] == [referrer.digest]


def test_attachment_manifests_are_pulls_paid_from_the_rate_limit_budget(signed, tmp_path):
    bundle = tmp_path / "b.tar.zst"
    with FaultProxy(signed.registry.host) as proxy:
        proxy.limit_pulls(3, window=600)  # the image's manifest, then 2 of its 5 attachment manifests
        first = run_mirror("pull", "docker.io/acme/app:1.0", "-o", bundle, *through(proxy), "--json", "-q")
        assert first.returncode == 6, first.stderr
        assert json.loads(first.stdout)["deferred"] == {"docker.io/acme/app:1.0": ANY_TEXT}
        assert not bundle.exists()
        assert [r for r in proxy.requests() if r.status == 429] == []  # the budget stopped short of the limit
    with FaultProxy(signed.registry.host) as proxy:  # a new window: the image's manifest is in the work dir
        proxy.limit_pulls(5, window=600)
        again = run_mirror("pull", "docker.io/acme/app:1.0", "-o", bundle, *through(proxy), "--json", "-q")
        assert again.returncode == 0, again.stderr
        assert len(json.loads(again.stdout)["images"][0]["attachments"]) == 4


def test_sync_pays_for_attachment_manifests_from_the_rate_limit_and_defers_what_does_not_fit(signed, registry,
                                                                                           tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    app = "docker.io/acme/app:1.0"
    attachments = signed.attached[app]
    with FaultProxy(signed.registry.host) as proxy:
        proxy.limit_pulls(3, window=600)  # the image's manifest, then 2 of its attachments' manifests
        first = run_mirror("sync", "run", app, "--to", registry.host, "--to-plain-http", *through(proxy), "--json")
        assert [r for r in proxy.requests() if r.status == 429] == []  # the budget stopped short of the limit
    assert first.returncode == 6, first.stderr
    [entry] = json.loads(first.stdout)["images"]
    assert entry["action"] == "deferred" and "rate limit is spent" in entry["error"], entry
    assert at(registry, app, "1.0").status_code == 200  # the image is in; its attachments follow it next time
    assert at(registry, app, tag(signed.images[app].digest, "sig")).status_code == 404
    with FaultProxy(signed.registry.host) as proxy:  # a new window
        proxy.limit_pulls(len(attachments) + 1, window=600)
        again = run_mirror("sync", "run", app, "--to", registry.host, "--to-plain-http", *through(proxy), "--json")
    assert again.returncode == 0, again.stderr
    [entry] = json.loads(again.stdout)["images"]
    assert entry["action"] == "attached", entry
    assert at(registry, app, tag(signed.images[app].digest, "sig")).headers["docker-content-digest"] \
        == attachments["sig"].digest


def test_a_lookup_the_source_refuses_fails_the_image(signed, tmp_path):
    with FaultProxy(signed.registry.host) as proxy:
        proxy.fail(r"/manifests/sha256-[0-9a-f]{64}\.att$", 400, method=None, times=None)  # listed, then asked
        result = run_mirror("pull", "docker.io/acme/app:1.0", "-o", tmp_path / "b.tar.zst", *through(proxy), "-q")
    assert result.returncode == 1
    assert "docker.io/acme/app:1.0: looking up its signatures and attachments" in result.stderr
    assert not (tmp_path / "b.tar.zst").exists()


def test_a_target_serving_the_referrers_api_gets_no_tag_schema_index(signed, registry, tmp_path):
    app = "docker.io/acme/app:1.0"
    assert pull(signed, tmp_path / "b.tar.zst", app)[0].returncode == 0
    empty = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    with FaultProxy(registry.host) as proxy:
        proxy.serve(r"/referrers/", empty, method="GET", times=None, headers={"Content-Type": OCI_INDEX})
        pushed = run_mirror("push", tmp_path / "b.tar.zst", "--registry", proxy.host, "--plain-http", "-q")
        assert pushed.returncode == 0, pushed.stderr
    top = signed.images[app].digest
    assert at(registry, app, signed.attached[app]["referrer"].digest).status_code == 200
    assert at(registry, app, tag(top)).status_code == 404


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


# -- the cosign format and the keys, without a registry ------------------------------------------


def signature_image(body: bytes, signature: str) -> tuple[Manifest, dict[str, bytes]]:
    layer = {"mediaType": SIMPLE_SIGNING, "digest": digest_of(body), "size": len(body),
             "annotations": {SIGNATURE_ANNOTATION: signature}}
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(b"{}"),
                           "size": 2}, "layers": [layer]}
    return Manifest.from_bytes(json.dumps(document).encode()), {digest_of(body): body}


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa", "ed25519"])
def test_each_kind_of_public_key_verifies_what_its_private_key_signed(tmp_path, kind):
    signer, image = Signer(kind), "sha256:" + "ab" * 32
    (tmp_path / "key.pub").write_bytes(signer.public_pem())
    (tmp_path / "other.pub").write_bytes(Signer(kind).public_pem())
    body = payload("index.docker.io/acme/app", image)
    signed = [signature_image(body, signer.sign(body))]
    key, other = load_keys([tmp_path / "key.pub"]), load_keys([tmp_path / "other.pub"])
    assert judge({image}, "docker.io/acme/app", signed, key).status == "verified"
    assert judge({image}, "docker.io/acme/app", signed, other).status == "invalid"
    assert judge({image}, "docker.io/acme/app", signed, other + key).signed_by == [str(tmp_path / "key.pub")]


def test_a_payload_is_judged_on_its_exact_bytes_and_claims():
    signer, image = Signer("p256"), "sha256:" + "ab" * 32
    body = payload("index.docker.io/acme/app", image)
    keys = [VerifyKey("k", signer.key.public_key())]
    manifest, blobs = signature_image(body, signer.sign(body))
    # the same claims re-encoded (a space more) are other bytes: the signature is over the bytes
    respaced = body.replace(b'"optional":null', b'"optional": null')
    assert "not at hand" in judge({image}, "docker.io/acme/app", [(manifest, {digest_of(body): respaced})],
                                  keys).reason
    assert judge({image}, "docker.io/acme/app", [], keys).status == "absent"
    assert judge({image}, "docker.io/acme/app", [(manifest, blobs)], []).status == "present"
    assert Payload.parse(body).names_repository("docker.io/acme/app")
    assert not Payload.parse(body).names_repository("docker.io/acme/application")
    for text, why in [(b"[]", "no cosign"), (b'{"critical": {"type": "atomic container signature"}}', "no cosign"),
                      (b'{"critical": {"type": "cosign container image signature"}}', "names no")]:
        with pytest.raises(ValueError, match=why):
            Payload.parse(text)


def test_a_key_file_that_is_no_public_key_is_named(tmp_path):
    (tmp_path / "cosign.key").write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n")
    result = run_mirror("verify", tmp_path / "b.tar.zst", "--verify-key", tmp_path / "cosign.key")
    assert result.returncode == 2 and "cosign.key: not a PEM public key" in result.stderr
    missing = run_mirror("verify", tmp_path / "b.tar.zst", "--verify-key", tmp_path / "nowhere.pub")
    assert missing.returncode == 2 and "nowhere.pub" in missing.stderr


def test_registry_up_takes_the_registry_image_not_its_signature():
    image = ImageRecord("docker.io/library/registry:2.8.2", "sha256:" + "a" * 64, OCI_MANIFEST, 10, [], [])
    signature = ImageRecord(f"docker.io/library/registry:sha256-{'a' * 64}.sig", "sha256:" + "c" * 64, OCI_MANIFEST,
                            10, [], [], attached_to=Attached("sha256:" + "a" * 64, "signature", SIMPLE_SIGNING))
    manifest = BundleManifest([image, signature], {f"sha256:{c * 64}": 10 for c in "ac"})
    assert find_registry_image(manifest, Path("b.tar.zst")) == image


def test_an_attachment_record_reads_back_and_a_record_without_one_reads_as_before():
    image = ImageRecord("docker.io/acme/app:1.0", "sha256:" + "a" * 64, OCI_MANIFEST, 10, [], ["sha256:" + "b" * 64])
    signature = ImageRecord(f"docker.io/acme/app:sha256-{'a' * 64}.sig", "sha256:" + "c" * 64, OCI_MANIFEST, 10, [],
                            ["sha256:" + "d" * 64],
                            attached_to=Attached("sha256:" + "a" * 64, "signature", SIMPLE_SIGNING))
    sizes = {f"sha256:{c * 64}": 10 for c in "abcd"}
    manifest = BundleManifest([image, signature], sizes)
    doc = json.loads(manifest.to_json())
    assert "attached_to" not in doc["images"][0]  # an image's record is as older mirrors wrote it
    assert doc["totals"]["images"] == 1 and doc["totals"]["attachments"] == 1
    again = BundleManifest.from_json(manifest.to_json())
    assert again == manifest and again.attachments_of(again.images[0]) == [signature]
    doc["images"][1]["attached_to"]["kind"] = "autograph"
    with pytest.raises(IntegrityError, match="unknown attachment kind"):
        BundleManifest.from_json(json.dumps(doc).encode())
