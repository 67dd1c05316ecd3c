"""mirror prune: real loopback registries holding four versions of one repository and a repository beside it.

The versions come in every shape (OCI and Docker, single image and index), so
prune must delete indexes with their platform manifests and keep what a kept
tag needs: a tag on the same manifest as a kept one, a tag on a kept index's
platform manifest.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

import corpus
import testbed
from conftest import run_mirror
from corpus import AMD64, ARM64
from test_sync import ACCEPT, tag_as, tags_at

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


def head(url: str, repository: str, reference: str) -> int:
    return httpx.head(f"{url}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT}).status_code


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


KEPT_AFTER = {"v1.2.0", "v1.3.0", "current", "v1.2.0-amd64"}


def test_prune_deletes_exactly_the_tags_that_fell_out_and_never_a_manifest_a_kept_tag_needs(
        versions, registry, state_home, tmp_path):
    fill(versions, registry.host)
    before = tags_at(registry, "rancher/app")
    config = keep_latest_config(tmp_path / "sync.yaml", registry.host)

    dry, planned = prune("--keep", config, "--registry", registry.host, "--plain-http", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert tags_at(registry, "rancher/app") == before  # nothing deleted
    assert planned["dry_run"] and planned["manifests_deleted"] == 0

    result, report = prune("--keep", config, "--registry", registry.host, "--plain-http", "--json")
    assert result.returncode == 0, result.stderr
    pruned = {(t["tag"], t["source"]) for t in report["pruned"]}
    assert pruned == {("v1.0.0", f"{APP}:v1.0.0"), ("v1.1.0", f"{APP}:v1.1.0"), ("stable", f"{APP}:stable"),
                      ("v1.2.0-rebuilt", f"{APP}:v1.2.0-rebuilt")}
    assert {t["tag"] for t in planned["pruned"]} == {t for t, _ in pruned}  # the dry run said so
    assert tags_at(registry, "rancher/app") == KEPT_AFTER
    skipped = {t["tag"]: t["reason"] for t in report["skipped"]}
    assert set(skipped) == {"current", "v1.2.0-amd64"}
    assert "kept tag v1.3.0" in skipped["current"] and "platform manifest of kept tag v1.2.0" in skipped["v1.2.0-amd64"]
    assert report["repositories"] == ["rancher/app"] and tags_at(registry, "rancher/other") == {"v1"}

    old_index, kept_index = versions.image(f"{APP}:v1.1.0"), versions.image(f"{APP}:v1.2.0")
    # v1.0.0 (and stable), v1.1.0 and its children, v1.2.0-rebuilt but not its children: v1.2.0's
    assert report["manifests_deleted"] == 3 + len(old_index.platforms)
    for digest in old_index.manifest_digests.values():
        assert head(registry.url, "rancher/app", digest) == 404
    for digest in [kept_index.digest, *kept_index.manifest_digests.values()]:
        assert head(registry.url, "rancher/app", digest) == 200

    again, nothing = prune("--keep", config, "--registry", registry.host, "--plain-http", "--json")
    assert again.returncode == 0 and nothing["pruned"] == [] and len(nothing["skipped"]) == 2


def test_text_report_names_each_pruned_tag_and_what_keeps_the_others(versions, registry, state_home, tmp_path):
    fill(versions, registry.host)
    config = keep_latest_config(tmp_path / "sync.yaml", registry.host)
    result, _ = prune("--keep", config, "--registry", registry.host, "--plain-http", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"would prune {registry.host}/rancher/app:v1.1.0 ({versions.image(f'{APP}:v1.1.0').digest})" in lines
    assert any(line.startswith(f"kept {registry.host}/rancher/app:current: ") for line in lines)
    assert lines[-1] == (f"would prune 4 tags in 1 repositories of {registry.host}; kept 2, "
                         "2 more as a kept tag needs their manifest")


def test_an_inventory_and_a_bundle_keep_what_they_name_together(versions, registry, state_home, tmp_path):
    fill(versions, registry.host)
    mirror_args = corpus.source_mirror_args(versions.registry_host)
    bundle = tmp_path / "b.tar.zst"
    pulled = run_mirror("pull", f"{APP}:v1.0.0", "-o", bundle, *mirror_args, "-q")
    assert pulled.returncode == 0, pulled.stderr
    inventory = tmp_path / "have.json"
    taken = run_mirror("inventory", f"{APP}:v1.3.0", OTHER, "-o", inventory, "--registry", registry.host,
                       "--plain-http")
    assert taken.returncode == 0, taken.stderr

    result, report = prune("--keep", bundle, "--keep", inventory, "--registry", registry.host, "--plain-http",
                           "--json")
    assert result.returncode == 0, result.stderr
    assert tags_at(registry, "rancher/app") == {"v1.0.0", "stable", "v1.3.0", "current"}
    assert {t["tag"] for t in report["pruned"]} == {"v1.1.0", "v1.2.0", "v1.2.0-amd64", "v1.2.0-rebuilt"}
    assert tags_at(registry, "rancher/other") == {"v1"}


def test_a_registry_that_refuses_deletes_is_one_line_exit_2_and_nothing_deleted(
        versions, start_registry, state_home, tmp_path):
    registry = start_registry(delete=False)
    fill(versions, registry.host)
    config = keep_latest_config(tmp_path / "sync.yaml", registry.host)
    result, _ = prune("--keep", config, "--registry", registry.host, "--plain-http")
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"mirror: error: {registry.host} does not allow deletes")
    assert "storage: delete: enabled: true" in line and "nothing was deleted" in line
    assert len(tags_at(registry, "rancher/app")) == 8


@pytest.mark.parametrize("keep, expected", [
    ("missing.json", "--keep {dir}/missing.json: no such file"),
    ("missing.yaml", "--keep {dir}/missing.yaml: no such file"),
    ("junk.json", "--keep {dir}/junk.json: not an inventory or mirror-bundle.json"),
])
def test_a_keep_file_that_is_none_of_the_three_exits_2_naming_it(tmp_path, state_home, keep, expected):
    (tmp_path / "junk.json").write_text('{"images": 3}')
    result, _ = prune("--keep", tmp_path / keep, "--registry", "127.0.0.1:1", "--plain-http")
    assert result.returncode == 2
    assert expected.format(dir=tmp_path) in result.stderr


def test_prune_asks_a_token_server_for_the_delete_action(versions, tmp_path, state_home):
    """Distribution's token auth wants ``delete`` on the repository for a manifest DELETE, not ``push``."""
    plain = testbed.start_registry(tmp_path / "registry")
    try:
        fill(versions, plain.host)
    finally:
        plain.stop()
    tokens = testbed.TokenServer(tmp_path / "signer", {"alice": "s3cret"}, {})
    guarded = testbed.start_registry(tmp_path / "registry", token_auth=tokens.auth_config())  # the same storage
    try:
        config = keep_latest_config(tmp_path / "sync.yaml", guarded.host)
        result, report = prune("--keep", config, "--registry", guarded.host, "--plain-http", "-u", "alice",
                               "--password-stdin", "--json", input="s3cret\n")
        assert result.returncode == 0, result.stderr
        assert {t["tag"] for t in report["pruned"]} == {"v1.0.0", "v1.1.0", "stable", "v1.2.0-rebuilt"}
        assert any("repository:rancher/app:delete" in r.scopes for r in tokens.requests)
    finally:
        guarded.stop()
        tokens.close()


def test_a_backup_stays_while_its_tag_stays_and_keep_latest_never_counts_one():
    from mirror.model.reference import Reference
    from mirror.transfer.prune import KeptSet
    from mirror.transfer.selection import TagSelection

    kept = KeptSet(selections=[TagSelection(Reference.parse(APP), keep_latest=2)])
    present = ["v1.0.0", "v1.0.0-prev-0123456789ab", "v1.1.0", "v1.2.0", "v1.2.0-prev-abcdefabcdef"]
    assert kept.tags("rancher/app", "", present) == {"v1.2.0", "v1.2.0-prev-abcdefabcdef", "v1.1.0"}


def sync_job(path, versions, host: str, keep_latest: int, prune_entry: bool, *extra_images: str):
    path.write_text(f"""
target: {{registry: {host}, plain_http: true}}
sources:
  - {{registry: docker.io, mirror: 'http://{versions.registry_host}/dockerhub'}}
images:
  - repository: {APP}
    semver: '>=1.0.0'
    keep_latest: {keep_latest}
    prune: {'true' if prune_entry else 'false'}
  - image: {OTHER}
""" + "".join(f"  - image: {image}\n" for image in extra_images))
    return path


def sync_run(config, *args):
    result = run_mirror("sync", "run", "-c", config, *args)
    return result, (json.loads(result.stdout) if "--json" in args and result.stdout.startswith("{") else None)


def test_sync_with_prune_deletes_what_keep_latest_no_longer_selects_once_the_new_tags_are_in(
        versions, registry, state_home, tmp_path):
    config = tmp_path / "sync.yaml"
    first, _ = sync_run(sync_job(config, versions, registry.host, 4, False), "--json")
    assert first.returncode == 0, first.stderr
    assert tags_at(registry, "rancher/app") == set(VERSIONS)

    sync_job(config, versions, registry.host, 2, True, f"{APP}:v9.9.9")  # one image that is not upstream
    waits, report = sync_run(config, "--json", "--keep-going")
    assert waits.returncode == 1 and report["pruned"] == []
    assert "v9.9.9" in report["not_pruned"]["rancher/app"] and tags_at(registry, "rancher/app") == set(VERSIONS)

    assert "mirror: not pruned: rancher/app: docker.io/rancher/app:v9.9.9 is failed" in waits.stderr

    sync_job(config, versions, registry.host, 2, True)
    said, _ = sync_run(config, "--dry-run")
    assert f"  would prune: {APP}:v1.0.0 ({versions.image(f'{APP}:v1.0.0').digest})" in said.stdout.splitlines()
    dry, would = sync_run(config, "--json", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert {t["tag"] for t in would["pruned"]} == {"v1.0.0", "v1.1.0"}
    assert tags_at(registry, "rancher/app") == set(VERSIONS)

    result, report = sync_run(config, "--json")
    assert result.returncode == 0, result.stderr
    assert {(t["source"], t["digest"]) for t in report["pruned"]} == {
        (f"{APP}:{tag}", versions.image(f"{APP}:{tag}").digest) for tag in ("v1.0.0", "v1.1.0")}
    assert report["not_pruned"] == {} and report["result"] == "ok"
    assert tags_at(registry, "rancher/app") == {"v1.2.0", "v1.3.0"}
    assert tags_at(registry, "rancher/other") == {"v1"}

    text, _ = sync_run(config)  # nothing left to prune: the text report says nothing of it
    assert text.returncode == 0 and "pruned" not in text.stdout, text.stdout


def test_a_list_entry_with_prune_keeps_its_images_and_prunes_the_rest_of_their_repositories(
        versions, registry, state_home, tmp_path):
    fill(versions, registry.host)
    (tmp_path / "images.txt").write_text(f"{APP}:v1.2.0\n{APP}:v1.3.0\n")
    config = tmp_path / "sync.yaml"
    config.write_text(f"""
target: {{registry: {registry.host}, plain_http: true}}
sources:
  - {{registry: docker.io, mirror: 'http://{versions.registry_host}/dockerhub'}}
images:
  - images_files: [images.txt]
    prune: true
""")
    fell_out = {"v1.0.0", "v1.1.0", "stable", "v1.2.0-rebuilt"}
    dry, planned = prune("--keep", config, "--registry", registry.host, "--plain-http", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert {t["tag"] for t in planned["pruned"]} == fell_out

    result, report = sync_run(config, "--json")
    assert result.returncode == 0, result.stderr
    assert {t["tag"] for t in report["pruned"]} == fell_out
    assert {t["tag"] for t in report["prune_skipped"]} == {"current", "v1.2.0-amd64"}
    assert tags_at(registry, "rancher/app") == KEPT_AFTER and tags_at(registry, "rancher/other") == {"v1"}
