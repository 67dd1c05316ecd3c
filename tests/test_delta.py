"""Resync across the air gap: full bundle -> push -> inventory -> delta against it -> push.

Upstream is a loopback registry seeded with v1 of a small corpus, then
changed to v2: a new tag sharing the base layers, a new image, one tag
re-pushed with a new digest, one image dropped from the list.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import corpus
import testbed
from conftest import run_mirror
from mirror.bundle.reader import BundleReader
from mirror.model.reference import Reference
from mirror.model.target import target_repository
from mirror.transfer.inventory import Inventory

AMD64, ARM64 = corpus.AMD64, corpus.ARM64
KEPT = [
    corpus.ImageSpec("docker.io/rancher/app-a:v1", "docker-list", (AMD64, ARM64), (40,)),
    corpus.ImageSpec("docker.io/rancher/app-b:v1", "oci", (AMD64,), (30,)),
]
V1 = corpus.CorpusSpec("delta-v1", tuple(KEPT + [
    corpus.ImageSpec("quay.io/jetstack/tool:v1", "docker", (AMD64,), (30,)),
    corpus.ImageSpec("docker.io/rancher/gone:v1", "oci", (AMD64,), (20,)),
]), base_kb=60)
V2 = corpus.CorpusSpec("delta-v2", tuple(KEPT + [
    corpus.ImageSpec("docker.io/rancher/app-a:v2", "docker-list", (AMD64, ARM64), (40,)),  # shares the base layers
    corpus.ImageSpec("quay.io/jetstack/tool:v1", "docker", (AMD64,), (35,)),  # same tag, rebuilt
    corpus.ImageSpec("docker.io/rancher/new-image:v1", "oci", (AMD64,), (25,)),
]), base_kb=60)
RETAGGED = "quay.io/jetstack/tool:v1"
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])


@dataclass
class Resync:
    v1: corpus.Corpus
    v2: corpus.Corpus
    target: testbed.Registry  # holds v1, pushed from the full bundle
    full_v1: Path
    inventory: Path  # of the target after that push
    delta: Path  # v2 against the inventory
    full_v2: Path
    mirror_args: list[str]


def everything(seeded: corpus.Corpus) -> set[str]:
    """Every manifest and blob digest the corpus's images reach."""
    found = set()
    for image in seeded.images:
        found |= {image.digest, *image.manifest_digests.values(), *image.blob_digests}
    return found


def pull(refs, output, mirror_args, *extra):
    result = run_mirror("pull", *refs, "-o", output, *mirror_args, "-q", *extra)
    assert result.returncode == 0, result.stderr
    return output


def push(bundle, registry, *extra, prefix: str = ""):
    address = f"{registry.host}/{prefix}" if prefix else registry.host
    return run_mirror("push", bundle, "--registry", address, "--plain-http", "--json", "-q", *extra)


def tag_digest(registry, image: corpus.CorpusImage, reference: str | None = None) -> str | None:
    repository = target_repository(Reference.parse(image.source))
    response = httpx.head(f"{registry.url}/v2/{repository}/manifests/{reference or image.tag}",
                          headers={"Accept": ACCEPT}, timeout=10)
    return response.headers.get("docker-content-digest") if response.status_code == 200 else None


@pytest.fixture(scope="module")
def resync(tmp_path_factory) -> Resync:
    work = tmp_path_factory.mktemp("delta")
    upstream = testbed.start_registry(work / "upstream")
    target = testbed.start_registry(work / "target")
    try:
        mirror_args = corpus.source_mirror_args(upstream.host)
        v1 = corpus.seed_registry(upstream.host, corpus.generate_corpus(work / "corpus", V1))
        full_v1 = pull([i.source for i in v1.images], work / "v1.tar.zst", mirror_args)
        pushed = push(full_v1, target)
        assert pushed.returncode == 0, pushed.stderr
        inventory = work / "have.json"
        taken = run_mirror("inventory", "--registry", target.host, "--plain-http", "-o", inventory)
        assert taken.returncode == 0, taken.stderr
        v2 = corpus.seed_registry(upstream.host, corpus.generate_corpus(work / "corpus", V2))
        refs = [i.source for i in v2.images]
        delta = pull(refs, work / "delta.tar.zst", mirror_args, "--base", inventory)
        full_v2 = pull(refs, work / "v2.tar.zst", mirror_args)
        yield Resync(v1, v2, target, full_v1, inventory, delta, full_v2, mirror_args)
    finally:
        upstream.stop()
        target.stop()


def test_inventory_lists_every_image_and_digest_of_the_registry(resync):
    doc = json.loads(resync.inventory.read_text())
    assert doc["registry"] == resync.target.host and doc["prefix"] == ""
    assert {i["source"]: i["digest"] for i in doc["images"]} == {i.source: i.digest for i in resync.v1.images}
    assert set(doc["digests"]) == everything(resync.v1)
    assert doc["id"].startswith("sha256:")


def test_delta_stores_only_what_v1_lacks(resync):
    with BundleReader(resync.delta) as reader:
        manifest = reader.manifest
    new = everything(resync.v2) - everything(resync.v1)
    assert manifest.kind == "delta"
    assert manifest.base == [json.loads(resync.inventory.read_text())["id"]]
    assert set(manifest.stored_blobs) == new
    assert manifest.total_size == sum(resync.v2.sizes[d] for d in new)
    assert set(manifest.omitted) == everything(resync.v2) & everything(resync.v1)
    assert {i.source for i in manifest.images} == {i.source for i in resync.v2.images}
    verified = run_mirror("verify", resync.delta)
    assert verified.returncode == 0, verified.stderr
    assert "delta" in verified.stdout and manifest.base[0] in verified.stdout
    inspected = json.loads(run_mirror("inspect", resync.delta, "--json").stdout)
    assert inspected["kind"] == "delta" and inspected["base"] == manifest.base
    assert inspected["omitted"] == len(manifest.omitted)
    assert inspected["omitted_size"] == sum(resync.v2.sizes[d] for d in manifest.omitted)


def test_full_bundle_says_full_and_a_bundle_without_kind_reads_as_full(resync):
    with BundleReader(resync.full_v2) as reader:
        assert reader.manifest.kind == "full" and reader.manifest.omitted == []
    doc = json.loads(reader.manifest.to_json())
    del doc["kind"], doc["base_registry"]
    doc["base"] = None  # as format 1 wrote it before deltas
    from mirror.bundle.format import BundleManifest

    assert BundleManifest.from_json(json.dumps(doc).encode()).kind == "full"


def test_delta_push_leaves_the_registry_as_a_full_push_would(resync):
    old = tag_digest(resync.target, resync.v1.image(RETAGGED))
    result = push(resync.delta, resync.target)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    changes = {image["source"]: image for image in report["images"]}
    new = resync.v2.image(RETAGGED).digest
    assert changes[RETAGGED]["change"] == "updated" and changes[RETAGGED]["previous"] == old != new
    assert changes["docker.io/rancher/app-a:v1"]["change"] == "unchanged"
    assert changes["docker.io/rancher/new-image:v1"]["change"] == "added"
    assert changes["docker.io/rancher/app-a:v2"]["change"] == "added"
    for image in resync.v2.images:
        assert tag_digest(resync.target, image) == image.digest, image.source
        assert tag_digest(resync.target, image, image.digest) == image.digest, image.source
    verified = run_mirror("verify", resync.full_v2, "--registry", resync.target.host, "--plain-http")
    assert verified.returncode == 0, verified.stderr


def test_delta_pushed_to_an_empty_registry_exits_5_writing_nothing(resync, registry):
    result = push(resync.delta, registry)
    assert result.returncode == 5, result.stderr
    with BundleReader(resync.delta) as reader:
        manifest = reader.manifest
    missing = [line for line in result.stderr.splitlines() if line.startswith("mirror: missing: ")]
    assert missing and all(manifest.base[0] in line for line in missing)
    assert f"its base have.json ({manifest.base[0]})" in result.stderr  # the file the operator knows, by name
    assert any("docker.io/rancher/app-a:v1" in line for line in missing)
    catalog = httpx.get(f"{registry.url}/v2/_catalog", timeout=10).json()
    assert catalog.get("repositories") in (None, [])  # no blob, no manifest, no tag


def test_broken_inventory_is_refused_naming_the_file(resync, tmp_path):
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(resync.inventory.read_bytes()[:200])
    edited = tmp_path / "edited.json"
    doc = json.loads(resync.inventory.read_text())
    doc["digests"] = doc["digests"][1:]
    edited.write_text(json.dumps(doc))
    for bad in (truncated, edited):
        result = run_mirror("pull", "docker.io/rancher/app-b:v1", "-o", tmp_path / "x.tar.zst",
                            *resync.mirror_args, "--base", bad, "-q")
        assert result.returncode == 2, result.stderr
        assert str(bad) in result.stderr
        assert not (tmp_path / "x.tar.zst").exists()


def test_inventory_of_another_prefix_warns_and_push_mounts_from_where_the_base_is(resync, tmp_path):
    """The base is in the registry, under other repositories: found through the catalog."""
    result = push(resync.delta, resync.target, prefix="elsewhere")
    assert result.returncode == 0, result.stderr
    assert "mirror: warning: " in result.stderr and f"{resync.target.host}/elsewhere" in result.stderr
    for image in resync.v2.images:
        repository = "elsewhere/" + target_repository(Reference.parse(image.source))
        response = httpx.head(f"{resync.target.url}/v2/{repository}/manifests/{image.tag}",
                              headers={"Accept": ACCEPT}, timeout=10)
        assert response.headers.get("docker-content-digest") == image.digest


def test_dry_run_with_base_prints_what_would_ship(resync):
    result = run_mirror("pull", *[i.source for i in resync.v2.images], *resync.mirror_args,
                        "--base", resync.inventory, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    new = everything(resync.v2) - everything(resync.v1)
    assert report["download_bytes"] == sum(resync.v2.sizes[d] for d in new)
    assert report["shipped_blobs"] == len(new)


def test_inventory_that_lies_is_caught_by_push_before_any_tag(resync, registry, tmp_path):
    """The inventory claims a layer of the new image the registry never had."""
    assert push(resync.full_v1, registry).returncode == 0
    claimed = next(iter(resync.v2.image("docker.io/rancher/new-image:v1").blob_digests - everything(resync.v1)))
    inventory = Inventory.from_doc(json.loads(resync.inventory.read_text()), resync.inventory)
    inventory.digests.add(claimed)
    lying = tmp_path / "lying.json"
    lying.write_bytes(inventory.to_json())
    delta = pull([i.source for i in resync.v2.images], tmp_path / "d.tar.zst", resync.mirror_args, "--base", lying)
    result = push(delta, registry)
    assert result.returncode == 5, result.stderr
    assert any(claimed in line and "new-image" in line for line in result.stderr.splitlines())
    assert tag_digest(registry, resync.v2.image("docker.io/rancher/new-image:v1")) is None
    assert tag_digest(registry, resync.v1.image(RETAGGED)) == resync.v1.image(RETAGGED).digest


def test_chain_delta_on_delta_with_an_inventory_taken_after_the_first(resync, start_registry, tmp_path):
    target = start_registry()
    assert push(resync.full_v1, target).returncode == 0
    assert push(resync.delta, target).returncode == 0  # delta 1
    after_first = tmp_path / "have-2.json"
    taken = run_mirror("inventory", "--registry", target.host, "--plain-http", "-o", after_first)
    assert taken.returncode == 0, taken.stderr
    v3_spec = corpus.CorpusSpec("delta-v3", V2.images + (
        corpus.ImageSpec("docker.io/rancher/app-c:v3", "docker-list", (AMD64, ARM64), (20,)),), base_kb=60)
    upstream = start_registry()
    v3 = corpus.seed_registry(upstream.host, corpus.generate_corpus(tmp_path / "corpus", v3_spec))
    delta2 = pull([i.source for i in v3.images], tmp_path / "delta2.tar.zst",
                  corpus.source_mirror_args(upstream.host), "--base", after_first)
    with BundleReader(delta2) as reader:
        assert set(reader.manifest.stored_blobs) == everything(v3) - everything(resync.v2) - everything(resync.v1)
    result = push(delta2, target)
    assert result.returncode == 0, result.stderr
    for image in v3.images:
        assert tag_digest(target, image) == image.digest, image.source


def crafted(tmp_path, resync, name: str, change) -> Path:
    """The fixture's inventory changed by ``change(doc)``, its id made to match as anyone can (docs/delta.md)."""
    doc = json.loads(resync.inventory.read_text())
    change(doc)
    content = {key: doc.get(key) for key in ("registry", "prefix", "images", "digests")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    doc["id"] = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("field, change", [
    ("created", lambda doc: doc.update(created=["2024"])),
    ("registry", lambda doc: doc.update(registry="../../etc reg")),
    ("prefix", lambda doc: doc.update(prefix=7)),
    ("images[0].source", lambda doc: doc["images"][0].update(source={"a": 1})),
    ("images[1].digest", lambda doc: doc["images"][1].update(digest="sha256:../../x")),
    ("digests[0]", lambda doc: doc["digests"].insert(0, 5)),
    ("images", lambda doc: doc.update(images="docker.io/rancher/app-a:v1")),
    ("tool_version", lambda doc: doc.update(tool_version=None)),
])
def test_an_inventory_field_of_the_wrong_type_is_refused_naming_the_file_and_the_field(resync, tmp_path, field,
                                                                                      change):
    bad = crafted(tmp_path, resync, "have.json", change)
    result = run_mirror("pull", "docker.io/rancher/app-b:v1", "-o", tmp_path / "x.tar.zst", *resync.mirror_args,
                        "--base", bad, "-q")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"mirror: error: inventory {bad}: {field}: expected "), result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "x.tar.zst").exists()


def test_an_inventory_too_large_or_too_deep_is_refused_before_it_is_parsed(resync, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"kind": "mirror-inventory", "format_version": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    nested = crafted(tmp_path, resync, "nested.json", lambda doc: doc.update(extra=json.loads("[" * 20 + "]" * 20)))
    large = tmp_path / "large.json"
    with open(large, "wb") as handle:  # sparse: 256 MiB that take no disk
        handle.write(b'{"kind": "mirror-inventory", "digests": [')
        handle.truncate(256 << 20)
    for bad, why in ((deep, "nested deeper than the 16 levels"), (nested, "nested deeper than the 16 levels"),
                     (large, "268435456 bytes, more than the 64 MiB")):
        result = run_mirror("sync", "run", "docker.io/rancher/app-b:v1", "--to-bundle", tmp_path, "--base", bad,
                            *resync.mirror_args, "-q")
        assert result.returncode == 2, result.stderr
        assert result.stderr == f"mirror: error: --base {bad}: {why}" + result.stderr.split(why, 1)[1], result.stderr
        assert result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*.tar.zst"))


def test_inventory_skips_listed_tags_that_are_no_tags_and_says_so(resync, tmp_path):
    from faults import FaultProxy

    with FaultProxy(resync.target.host) as proxy:
        proxy.serve(r"/v2/rancher/app-a/tags/list", json.dumps(
            {"name": "rancher/app-a", "tags": ["v1", "../../gone/manifests/v1", -3]}).encode(),
                    headers={"Content-Type": "application/json"})
        output = tmp_path / "have.json"
        taken = run_mirror("inventory", "--registry", proxy.host, "--plain-http", "-o", output, "--json")
    assert taken.returncode == 0, taken.stderr
    assert f"mirror: skipped: {proxy.host}/rancher/app-a: 2 listed tag(s) that are no tags\n" in taken.stderr
    assert json.loads(taken.stdout)["skipped_tags"] == {"rancher/app-a": 2}
    sources = {image["source"] for image in json.loads(output.read_text())["images"]}
    assert {s for s in sources if s.startswith("docker.io/rancher/app-a:")} == {"docker.io/rancher/app-a:v1"}


def test_the_search_for_the_base_skips_repositories_the_account_may_not_read(resync):
    """A catalog names repositories the account may not read: a 403 there is no reason to stop looking."""
    from faults import FaultProxy

    catalog = httpx.get(f"{resync.target.url}/v2/_catalog", timeout=10).json()["repositories"]
    with FaultProxy(resync.target.host) as proxy:
        proxy.serve(r"^/v2/_catalog", json.dumps({"repositories": ["aaa/locked", *catalog]}).encode(),
                    headers={"Content-Type": "application/json"})
        proxy.fail(r"^/v2/aaa/locked/", 403, times=None)
        found = run_mirror("push", resync.delta, "--registry", f"{proxy.host}/readable", "--plain-http", "-q")
        assert found.returncode == 0, found.stderr
        assert "this account may not read 1 of its catalog's repositories: skipped" in found.stderr

        proxy.fail(r"^/v2/(?!nowhere/)[^_][^?]*/(blobs|manifests)/", 403, times=None)  # every other one, too
        refused = run_mirror("push", resync.delta, "--registry", f"{proxy.host}/nowhere", "--plain-http", "-q")
    assert refused.returncode == 5, refused.stderr
    assert "of its catalog's repositories: skipped): nothing was written" in refused.stderr
    assert any(line.startswith("mirror: missing: sha256:") for line in refused.stderr.splitlines())
    for image in resync.v2.images:
        repository = "readable/" + target_repository(Reference.parse(image.source))
        response = httpx.head(f"{resync.target.url}/v2/{repository}/manifests/{image.tag}",
                              headers={"Accept": ACCEPT}, timeout=10)
        assert response.headers.get("docker-content-digest") == image.digest
    assert not [r for r in httpx.get(f"{resync.target.url}/v2/_catalog").json()["repositories"]
                if r.startswith("nowhere/")]


def test_an_exclude_pattern_that_backtracks_on_a_catalog_name_is_a_usage_error_naming_it(resync, tmp_path):
    """--exclude runs on names the registry's catalog gives: a pattern that backtracks without end on one of them
    ends the inventory in one line (it hung before), not after minutes."""
    from faults import FaultProxy

    name = "rancher/" + "a" * 40 + "b"
    with FaultProxy(resync.target.host) as proxy:
        proxy.serve(r"^/v2/_catalog", json.dumps({"repositories": [name]}).encode(),
                    headers={"Content-Type": "application/json"})
        proxy.serve(rf"^/v2/{name}/tags/list", json.dumps({"name": name, "tags": ["v1"]}).encode(),
                    headers={"Content-Type": "application/json"})
        taken = run_mirror("inventory", "--registry", proxy.host, "--plain-http", "--exclude", "(a|aa)+b$",
                           "-o", tmp_path / "have.json", timeout=60)
    assert taken.returncode == 2, taken.stderr
    assert "--exclude '(a|aa)+b$' took over" in taken.stderr and taken.stderr.count("\n") == 1


def test_push_names_each_tag_that_now_means_another_image_with_both_digests(resync, start_registry):
    target = start_registry()
    assert push(resync.full_v1, target).returncode == 0
    old, new = resync.v1.image(RETAGGED).digest, resync.v2.image(RETAGGED).digest
    said = run_mirror("push", resync.delta, "--registry", target.host, "--plain-http")
    assert said.returncode == 0, said.stderr
    repository = target_repository(Reference.parse(RETAGGED))
    assert f"  updated: {RETAGGED} -> {target.host}/{repository}:{Reference.parse(RETAGGED).tag} ({old} -> {new})\n" \
        in said.stdout, said.stdout
    assert said.stdout.count("  updated: ") == 1
