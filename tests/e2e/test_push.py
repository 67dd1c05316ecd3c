"""mirror push: bundle -> real loopback registry, checked with containerd and skopeo."""

from __future__ import annotations

import json
import tarfile

import httpx
import pytest

from mirror.bundle.reader import BundleReader
from mirror.model.target import target_repository
from mirror.model.reference import Reference
from support.cli import run_mirror
from support.corpus_fixtures import single_platform_image
from support.crafted_bundles import rewrite_bundle
from support.faults import FaultProxy
from support.push_checks import (assert_manifests_follow_their_content, blobs_committed, catalog, tags_of,
                                 tags_pointing_at_incomplete_images, tags_sent)


@pytest.fixture
def bundle(corpus_bundle):
    return corpus_bundle


def push(bundle, registry, *extra, input=None):
    result = run_mirror("push", bundle, "--registry", registry.host, *extra, "--json", input=input)
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, report


def target_of(image, host):
    return f"{host}/{target_repository(Reference.parse(image.source))}"


def test_push_then_containerd_pulls_every_image_by_tag_and_digest(bundle, seeded_source, registry, containerd):
    result, report = push(bundle, registry, "--plain-http")
    assert result.returncode == 0, result.stderr
    assert len(report["images"]) == len(seeded_source.corpus.images)
    for image in seeded_source.corpus.images:
        target = target_of(image, registry.host)
        by_tag = containerd.ctr("images", "pull", "--plain-http", "--all-platforms", f"{target}:{image.tag}")
        assert by_tag.returncode == 0, by_tag.stderr
        by_digest = containerd.ctr("images", "pull", "--plain-http", "--all-platforms", f"{target}@{image.digest}")
        assert by_digest.returncode == 0, by_digest.stderr
        listed = containerd.ctr("images", "ls").stdout
        assert f"{target}:{image.tag}" in listed and image.digest in listed


def test_second_push_sends_nothing_and_manifests_follow_their_content(bundle, seeded_source, registry):
    with FaultProxy(registry.host) as proxy:
        first = run_mirror("push", bundle, "--registry", proxy.host, "--plain-http", "-q")
        assert first.returncode == 0, first.stderr
        assert blobs_committed(proxy)
        assert assert_manifests_follow_their_content(proxy, registry) > len(seeded_source.corpus.images)
    with FaultProxy(registry.host) as proxy:
        second, report = push(bundle, proxy, "--plain-http")
        assert second.returncode == 0, second.stderr
        assert [f"{w.method} {w.path}" for w in proxy.writes()] == []  # seen on the wire, not only counted
    assert report["uploaded_blobs"] == 0 and report["uploaded_bytes"] == 0
    assert report["manifests_pushed"] == 0 and report["tags_pushed"] == 0


def test_shared_blobs_are_uploaded_once_and_mounted_under_a_prefix(bundle, seeded_source, registry):
    with BundleReader(bundle) as reader:
        images = reader.manifest.images
    needs: dict[str, set[str]] = {}
    for record in images:
        repository = target_repository(Reference.parse(record.source))
        for digest in set(record.blobs) - set(record.manifests):
            needs.setdefault(digest, set()).add(repository)
    assert any(len(repos) > 1 for repos in needs.values()), "the corpus must share layers across repositories"

    with FaultProxy(registry.host) as proxy:
        result = run_mirror("push", bundle, "--registry", f"{proxy.host}/harbor-project", "--plain-http", "--json")
        assert result.returncode == 0, result.stderr
        assert sorted(blobs_committed(proxy)) == sorted(needs)  # each blob's bytes sent once
        mounts = [seen for seen in proxy.requests("POST", r"[?&]mount=") if seen.status == 201]
        assert len(mounts) == sum(len(repos) - 1 for repos in needs.values())
        assert assert_manifests_follow_their_content(proxy, registry) > 0
    report = json.loads(result.stdout)
    assert report["uploaded_blobs"] == len(needs)
    assert report["mounted_blobs"] == sum(len(repos) - 1 for repos in needs.values())
    image = seeded_source.corpus.images[0]
    assert image.tag in tags_of(registry, f"harbor-project/{target_repository(Reference.parse(image.source))}")


def test_auth_and_tls_target(bundle, start_registry, tmp_path):
    from support import testbed

    tls = testbed.make_tls(tmp_path / "tls")
    registry = start_registry(tls=tls, htpasswd=testbed.make_htpasswd(tmp_path / "htpasswd", "admin", "s3cret"))
    ok, report = push(bundle, registry, "--ca-file", tls.ca_cert, "--username", "admin", "--password-stdin",
                      input="s3cret\n")
    assert ok.returncode == 0, ok.stderr
    assert "s3cret" not in ok.stdout + ok.stderr
    untrusted, _ = push(bundle, registry, "--username", "admin", "--password-stdin", input="s3cret\n")
    assert untrusted.returncode == 3, untrusted.stderr
    assert registry.host in untrusted.stderr


def test_wrong_password_is_refused_at_once(bundle, start_registry, tmp_path):
    from support import testbed

    tls = testbed.make_tls(tmp_path / "tls")
    registry = start_registry(tls=tls, htpasswd=testbed.make_htpasswd(tmp_path / "htpasswd", "admin", "right"))
    result, _ = push(bundle, registry, "--ca-file", tls.ca_cert, "--username", "admin", "--password-stdin",
                     input="wrong\n")
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1
    assert "wrong" not in result.stderr
    log = (registry.directory / "registry.log").read_text()
    assert log.count("authentication failure") <= 3  # no retry storm


@pytest.mark.parametrize("which", ["large", "small"])  # spooled to a temp file / in memory
def test_flipped_byte_in_a_layer_is_named_and_never_committed(bundle, seeded_source, registry, tmp_path, which):
    sizes = seeded_source.corpus.sizes
    layers = set().union(*(image.blob_digests for image in seeded_source.corpus.images))
    large = max(layers, key=sizes.get)
    victim = large if which == "large" else max((d for d in layers if sizes[d] < (1 << 20)), key=sizes.get)
    owners = [i for i in seeded_source.corpus.images if victim in i.blob_digests]

    def flip(member, data):
        if member.name.endswith(victim.split(":")[1]):
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
        return [(member, bytes(data))]

    broken = tmp_path / "broken.tar.zst"
    rewrite_bundle(bundle, broken, flip)
    with FaultProxy(registry.host) as proxy:
        result = run_mirror("push", broken, "--registry", proxy.host, "--plain-http")
        assert result.returncode == 4, result.stderr
        assert victim in result.stderr and owners[0].source in result.stderr
        # push's own re-hash refused it: the registry was never asked to commit it (and so never had
        # the chance to refuse it with its own DIGEST_INVALID)
        assert victim not in blobs_committed(proxy)
        for image in owners:
            assert tags_sent(proxy, target_repository(Reference.parse(image.source))) == []
        others = [i for i in seeded_source.corpus.images if i not in owners]
        assert len(tags_sent(proxy)) == len(others)  # every intact image still got its tag
        assert_manifests_follow_their_content(proxy, registry)
    assert tags_pointing_at_incomplete_images(registry) == []


def test_truncated_bundle_tags_no_incomplete_image(bundle, registry, tmp_path):
    truncated = tmp_path / "truncated.tar.zst"
    truncated.write_bytes(bundle.read_bytes()[: bundle.stat().st_size * 2 // 3])
    with FaultProxy(registry.host) as proxy:
        result = run_mirror("push", truncated, "--registry", proxy.host, "--plain-http")
        assert result.returncode == 4, result.stderr
        assert "truncated" in result.stderr or "corrupt" in result.stderr
        assert tags_sent(proxy) == []  # a damaged bundle tags nothing
    assert tags_pointing_at_incomplete_images(registry) == []
    again, report = push(bundle, registry, "--plain-http")  # the real bundle then finishes the job
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("evil, rule", [("../x", "path escapes the bundle"), ("/etc/evil", "path escapes the bundle"),
                                         ("link", "links are not allowed")])
def test_unsafe_tar_entry_is_refused(bundle, registry, tmp_path, evil, rule):
    def inject(member, data):
        if member.name != "oci-layout":  # right after mirror-bundle.json and oci-layout
            return [(member, data)]
        bad = tarfile.TarInfo(evil)
        if evil == "link":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
            return [(member, data), (bad, b"")]
        return [(member, data), (bad, b"evil")]

    poisoned = tmp_path / "poisoned.tar.zst"
    rewrite_bundle(bundle, poisoned, inject)
    result, _ = push(poisoned, registry, "--plain-http")
    assert result.returncode == 4, result.stderr
    assert f"refusing entry {evil!r}: {rule}" in result.stderr
    assert catalog(registry) == []  # refused before anything was written


def test_verify_against_registry(bundle, seeded_source, registry):
    missing = run_mirror("verify", bundle, "--registry", registry.host, "--plain-http")
    assert missing.returncode == 1
    assert seeded_source.corpus.images[0].source in missing.stderr
    pushed, _ = push(bundle, registry, "--plain-http")
    assert pushed.returncode == 0, pushed.stderr
    present = run_mirror("verify", bundle, "--registry", registry.host, "--plain-http")
    assert present.returncode == 0, present.stderr


def test_registry_killed_mid_push_leaves_no_broken_tag_and_a_rerun_completes(bundle, registry):
    class KillsRegistry(FaultProxy):
        """Kills the real registry as the third blob upload arrives, as a crash would."""

        uploads = 0

        def _record(self, seen):
            super()._record(seen)
            if seen.method == "PUT" and "/blobs/uploads/" in seen.path:
                self.uploads += 1
                if self.uploads == 3:
                    registry.kill()

    with KillsRegistry(registry.host) as proxy:
        result = run_mirror("--retries", "1", "push", bundle, "--registry", proxy.host, "--plain-http", "--jobs", "2")
        assert tags_sent(proxy) == []
    assert result.returncode == 1, result.stderr
    assert "mirror: failed:" in result.stderr
    registry.restart()
    assert tags_pointing_at_incomplete_images(registry) == []
    with FaultProxy(registry.host) as proxy:
        again, report = push(bundle, proxy, "--plain-http")
        assert again.returncode == 0, again.stderr
        assert assert_manifests_follow_their_content(proxy, registry) > 0
    assert report["present_blobs"] > 0  # what made it before the crash is not sent again
    check = run_mirror("verify", bundle, "--registry", registry.host, "--plain-http")
    assert check.returncode == 0, check.stderr


def test_push_reads_a_split_bundle(seeded_source, registry, tmp_path):
    image = seeded_source.corpus.images[0]
    output = tmp_path / "split.tar.zst"
    pulled = run_mirror("pull", image.source, "-o", output, *seeded_source.mirror_args, "--split-size", "1M")
    assert pulled.returncode == 0, pulled.stderr
    assert not output.exists() and len(list(tmp_path.glob("split.tar.zst.part-*"))) > 1
    result, report = push(output, registry, "--plain-http")
    assert result.returncode == 0, result.stderr
    assert [i["digest"] for i in report["images"]] == [image.digest]


def test_an_image_from_a_registry_with_a_port_can_be_pushed(seeded_source, registry, tmp_path):
    image = single_platform_image(seeded_source.corpus)
    source = seeded_source.corpus.seeded_reference(image.source)  # 127.0.0.1:PORT/...
    bundle = tmp_path / "b.tar.zst"
    pulled = run_mirror("pull", source, "--plain-http-registry", seeded_source.registry.host, "-o", bundle, "-q")
    assert pulled.returncode == 0, pulled.stderr
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "-q")
    assert pushed.returncode == 0, pushed.stderr[-1500:]
    repository = source.rsplit(":", 1)[0].replace(":", "_")
    assert httpx.get(f"{registry.url}/v2/{repository}/manifests/{image.tag}",
                     headers={"Accept": image.media_type}).status_code == 200
