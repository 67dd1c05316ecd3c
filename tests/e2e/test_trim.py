"""--downstream-versions: Rancher's per-Kubernetes-version images trimmed to the versions a site runs."""

from __future__ import annotations

import json

import pytest

from mirror import downstream, lists
from mirror.downstream import Release, Version
from mirror.errors import UsageError
from mirror.model.reference import Reference
from support.cli import run_mirror


def names(refs: list[Reference]) -> list[str]:
    return [str(r) for r in refs]


def is_per_version(name: str) -> bool:
    return downstream.release_of(Reference.parse(name)) is not None


# --- which images are per-version ---------------------------------------------


@pytest.mark.parametrize("name, release", [
    ("rancher/system-agent-installer-k3s:v1.24.4-k3s1", Release(24, 4, "k3s", 1)),
    ("rancher/system-agent-installer-rke2:v1.21.13-rke2r2", Release(21, 13, "rke2r", 2)),
    ("rancher/k3s-upgrade:v1.24.9-k3s2", Release(24, 9, "k3s", 2)),
    ("rancher/rke2-upgrade:v1.26.6-rke2r1", Release(26, 6, "rke2r", 1)),
    ("rancher/rke2-runtime:v1.24.4-rke2r1", Release(24, 4, "rke2r", 1)),
    ("rancher/hardened-kubernetes:v1.24.4-rke2r1-build20220817", Release(24, 4, "rke2r", 1)),
    ("rancher/hyperkube:v1.23.16-rancher2", Release(23, 16, "rancher", 2)),
    ("registry.rancher.com/rancher/k3s-upgrade:v1.30.4-k3s1", Release(30, 4, "k3s", 1)),  # Rancher Prime's list
])
def test_per_version_images_are_known_by_repository_and_release_tag(name, release):
    assert downstream.release_of(Reference.parse(name)) == release


@pytest.mark.parametrize("name", [
    "rancher/hardened-etcd:v3.5.4-k3s1-build20220504",  # etcd, built for K3s: a K3s-looking tag, not a release
    "rancher/istio-installer:1.14.3-rancher1",  # Istio 1.14
    "rancher/calico-cni:v3.22.0-rancher1",
    "rancher/rancher:v2.7.9",
    "quay.io/jetstack/cert-manager-controller:v1.11.0",
    "rancher/kubectl:v1.28.1",  # one kubectl for all clusters
    "rancher/rke2-cloud-provider:v1.26.3-build20230406",  # shared by several RKE2 releases
    "rancher/mirrored-cloud-provider-vsphere-cpi-release-manager:v1.24.3",
    "rancher/k3s-upgrade:latest",
    "rancher/k3s-upgrade:v1.24.4-k3s1-amd64",  # not a release tag as Rancher's lists spell them: kept
    "rancher/system-agent-installer-k3s@sha256:" + "0" * 64,
    "example.com/mine/k3s-upgrade:v1.24.4-k3s1",  # not Rancher's repository
])
def test_everything_else_is_not_per_version(name):
    assert downstream.release_of(Reference.parse(name)) is None


def test_the_builtin_rancher_list_has_per_version_images_of_each_kind():
    """The rule read against the real v2.7.9 list: the kinds the issue names are all found."""
    _, rancher, _ = lists.component_list("rancher", "v2.7.9")
    found = [r for r in rancher if downstream.release_of(r)]
    assert {r.repository for r in found} == downstream.PER_VERSION_REPOSITORIES
    assert len(found) == 223
    assert {downstream.release_of(r).minor for r in found} == {21, 22, 23, 24, 25, 26}


# --- the versions a user names ------------------------------------------------


@pytest.mark.parametrize("text, version", [
    ("v1.30", Version("v1.30", 30)),
    ("1.30", Version("1.30", 30)),
    ("v1.30.4", Version("v1.30.4", 30, 4)),
    ("v1.30.4+k3s1", Version("v1.30.4+k3s1", 30, 4, "k3s", 1)),
    ("v1.30.4-k3s1", Version("v1.30.4-k3s1", 30, 4, "k3s", 1)),
    ("1.30.4+rke2r2", Version("1.30.4+rke2r2", 30, 4, "rke2r", 2)),
    ("v1.24.4-rancher1-1", Version("v1.24.4-rancher1-1", 24, 4, "rancher", 1)),  # RKE's --kubernetes-version
])
def test_versions_are_minors_patches_or_releases(text, version):
    assert Version.parse(text) == version


@pytest.mark.parametrize("text", ["v1", "1.2x", "v2.7", "v1.30.4+k3s", "v1.30.4+rke2r1-1", "v1.30.4+k3s1-build1",
                                  "v1.30.4.1", "latest", "v1.٣0"])
def test_malformed_versions_are_refused_by_name(text):
    with pytest.raises(UsageError) as caught:
        Version.parse(text)
    assert str(caught.value).startswith(f"--downstream-versions {text}: not a Kubernetes version")


def test_versions_are_comma_separated_and_repeatable_once_each():
    parsed = downstream.parse_versions(["v1.30, 1.31", "v1.30.4+k3s1", "v1.30,"])
    assert [v.text for v in parsed] == ["v1.30", "1.31", "v1.30.4+k3s1"]
    with pytest.raises(UsageError, match="--downstream-versions: no version given"):
        downstream.parse_versions([" , "])


def test_a_version_includes_its_releases_only():
    k3s, rke2 = Release(24, 4, "k3s", 1), Release(24, 4, "rke2r", 1)
    assert Version.parse("v1.24").includes(k3s) and Version.parse("v1.24.4").includes(rke2)
    assert Version.parse("v1.24.4+k3s1").includes(k3s) and not Version.parse("v1.24.4+k3s1").includes(rke2)
    assert not Version.parse("v1.24.4+k3s2").includes(k3s)
    assert not Version.parse("v1.24.5").includes(k3s) and not Version.parse("v1.2").includes(k3s)


# --- a topology's list, trimmed -----------------------------------------------


def test_done_when_k3s_trimmed_to_v1_24_drops_exactly_the_other_minors_per_version_images():
    full, _ = lists.resolve_images("k3s")
    trimmed = lists.select("k3s", downstream_versions=["v1.24"])
    kept = names(trimmed.images)
    per_version = {name: downstream.release_of(Reference.parse(name)) for name in names(full) if is_per_version(name)}
    assert not [n for n in kept if n in per_version and per_version[n].minor != 24]
    # the difference is exactly the per-version images of other minors, in order, and the rest keep their order
    assert [n for n in names(full) if n not in kept] == [n for n, r in per_version.items() if r.minor != 24]
    assert kept == [n for n in names(full) if n not in per_version or per_version[n].minor == 24]
    assert names(trimmed.trimmed) == [n for n in names(full) if n not in kept]
    assert len(trimmed.trimmed) == 154 and "docker.io/rancher/rancher:v2.7.9" in kept
    assert trimmed.topology.downstream_versions == ["v1.24"]


@pytest.mark.parametrize("mode", ["k3s", "rke", "rke2", "docker"])
def test_without_the_flag_nothing_changes(mode):
    selection = lists.select(mode)
    assert names(selection.images) == names(lists.resolve_images(mode)[0])
    assert any(is_per_version(n) for n in names(selection.images))  # there was something a trim would take
    assert selection.trimmed == [] and selection.topology.downstream_versions is None


def test_several_versions_and_exact_releases():
    selection = lists.select("docker", downstream_versions=["v1.25", "v1.24.4+k3s1", "v1.26.6"])
    kept = {downstream.release_of(r) for r in selection.images} - {None}
    assert {r.minor for r in kept} == {24, 25, 26}
    assert {r for r in kept if r.minor == 24} == {Release(24, 4, "k3s", 1)}  # not RKE2's v1.24.4
    assert {(r.patch, r.flavour) for r in kept if r.minor == 26} == {(6, "k3s"), (6, "rke2r")}
    assert all(downstream.release_of(r) is None or downstream.release_of(r) not in kept for r in selection.trimmed)


def test_the_local_clusters_own_release_stays_and_its_own_list_is_never_trimmed():
    """rke2 at v1.24.4+rke2r1 trimmed to v1.26: the local cluster keeps what it runs (rke2-runtime,
    hardened-kubernetes of its list) and the Rancher list's images of that same release, which upgrade
    a cluster to it; no other v1.24 image."""
    selection = lists.select("rke2", downstream_versions=["v1.26"])
    kept = names(selection.images)
    assert "docker.io/rancher/rke2-runtime:v1.24.4-rke2r1" in kept  # only in the RKE2 list
    assert "docker.io/rancher/hardened-kubernetes:v1.24.4-rke2r1-build20220817" in kept
    assert "docker.io/rancher/system-agent-installer-rke2:v1.24.4-rke2r1" in kept  # only in Rancher's list
    assert "docker.io/rancher/rke2-upgrade:v1.24.4-rke2r1" in kept
    assert "docker.io/rancher/system-agent-installer-k3s:v1.24.4-k3s1" not in kept  # another distribution
    assert {downstream.release_of(r).minor for r in selection.images if downstream.release_of(r)} == {24, 26}
    assert {downstream.release_of(r) for r in selection.images
            if downstream.release_of(r) and downstream.release_of(r).minor == 24} == {Release(24, 4, "rke2r", 1)}
    k3s = lists.select("k3s", downstream_versions=["v1.26"])
    assert "docker.io/rancher/k3s-upgrade:v1.24.4-k3s1" in names(k3s.images)
    assert "docker.io/rancher/rke2-upgrade:v1.24.4-rke2r1" not in names(k3s.images)
    rke = lists.select("rke", downstream_versions=["v1.26"])
    assert "docker.io/rancher/hyperkube:v1.24.4-rancher1" in names(rke.images)  # RKE's own system images
    assert "docker.io/rancher/hyperkube:v1.24.17-rancher1" not in names(rke.images)


def test_named_images_and_files_are_never_trimmed(tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("rancher/k3s-upgrade:v1.21.5-k3s1\n")
    named = "docker.io/rancher/system-agent-installer-k3s:v1.22.4-k3s1"  # also in Rancher's list
    selection = lists.select("k3s", extra_files=[extra], extra_refs=[named], downstream_versions=["v1.26"])
    assert names(selection.images)[-2:] == ["docker.io/rancher/k3s-upgrade:v1.21.5-k3s1", named]
    assert named not in names(selection.trimmed)  # it is carried: the trim did not take it


def test_what_exclude_drops_is_not_counted_as_trimmed():
    selection = lists.select("k3s", exclude=["system-agent-installer"], downstream_versions=["v1.24"])
    assert selection.trimmed and not [n for n in names(selection.trimmed) if "system-agent-installer" in n]


@pytest.mark.parametrize("values, named", [
    (["v1.3"], "v1.3"),  # a typo: would trim every version away
    (["v1.24", "v1.99"], "v1.99"),
    (["v1.24.99,v1.24.4+rke2r9"], "v1.24.99, v1.24.4+rke2r9"),
])
def test_a_version_matching_nothing_is_refused_by_name(values, named):
    with pytest.raises(UsageError) as caught:
        lists.select("k3s", downstream_versions=values)
    assert str(caught.value).startswith(f"--downstream-versions {named}: no per-Kubernetes-version image of ")
    assert "in Rancher v2.7.9's image list (it has v1.21 to v1.26)" in str(caught.value)


def test_the_flag_needs_a_mode():
    with pytest.raises(UsageError, match="^--downstream-versions needs --mode$"):
        lists.select(None, extra_refs=["alpine"], downstream_versions=["v1.24"])


# --- the command line -----------------------------------------------------------


def listed(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not line.startswith("#")]


def test_cli_lists_prints_the_trimmed_list_and_one_line_saying_what_it_left_out():
    result = run_mirror("lists", "--mode", "k3s", "--downstream-versions", "v1.24", "--offline-lists")
    assert result.returncode == 0, result.stderr
    assert listed(result.stdout) == names(lists.select("k3s", downstream_versions=["v1.24"]).images)
    said = [line for line in result.stderr.splitlines() if "downstream" in line]
    assert said == ["mirror: --downstream-versions v1.24: left out 154 per-Kubernetes-version images of other "
                    "versions"]


def test_cli_versions_are_comma_separated_and_repeatable_and_json_says_what_was_trimmed():
    result = run_mirror("lists", "--mode", "rke2", "--downstream-versions", "v1.24", "--downstream-versions",
                        "1.25,v1.26.6+rke2r1", "--offline-lists", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    expected = lists.select("rke2", downstream_versions=["v1.24", "1.25", "v1.26.6+rke2r1"])
    assert report["images"] == names(expected.images)
    assert report["downstream_versions"] == ["v1.24", "1.25", "v1.26.6+rke2r1"]
    assert report["trimmed"] == names(expected.trimmed) and expected.trimmed


def test_cli_without_the_flag_lists_what_it_always_did():
    result = run_mirror("lists", "--mode", "k3s", "--offline-lists", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == names(lists.resolve_images("k3s")[0])
    assert "trimmed" not in report and "downstream_versions" not in report
    assert "downstream" not in result.stderr


@pytest.mark.parametrize("value, message", [
    ("v1.3", "--downstream-versions v1.3: no per-Kubernetes-version image of it in Rancher v2.7.9's image list"),
    ("v1.24,1.2x", "--downstream-versions 1.2x: not a Kubernetes version"),
])
@pytest.mark.parametrize("command", ["lists", "pull", "pull-dry-run", "sync"])
def test_cli_a_bad_version_is_exit_2_naming_it_before_anything_is_fetched(command, value, message, tmp_path):
    output = tmp_path / "b.tar.zst"
    args = {"lists": ["lists"], "pull": ["pull", "-o", output], "pull-dry-run": ["pull", "--dry-run"],
            "sync": ["sync", "run", "--to", "127.0.0.1:9"]}[command]
    result = run_mirror(*args, "--mode", "k3s", "--offline-lists", "--downstream-versions", value)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"mirror: error: {message}" + (
        " (it has v1.21 to v1.26)" if "v1.3" in value else " (e.g. v1.30, v1.30.4, v1.30.4+k3s1, v1.30.4+rke2r1)")]
    assert list(tmp_path.iterdir()) == []


def test_cli_sync_with_a_config_refuses_the_flag(tmp_path):
    result = run_mirror("sync", "run", "-c", tmp_path / "sync.yaml", "--downstream-versions", "v1.24")
    assert result.returncode == 2
    assert "drop --downstream-versions" in result.stderr


# --- pull: what the trim saves, measured by the dry run -------------------------------

RANCHER = "v2.99.0"  # served from the cache: no release host is asked
RELEASES_URL = "https://releases.invalid"
KEPT = ["docker.io/rancher/rancher:v2.99.0", "docker.io/rancher/system-agent-installer-k3s:v1.30.4-k3s1"]
TRIMMED = ["docker.io/rancher/system-agent-installer-k3s:v1.29.8-k3s1", "docker.io/rancher/k3s-upgrade:v1.29.8-k3s1"]
UNSEEDED = "docker.io/rancher/rke2-upgrade:v1.29.8-rke2r1"  # trimmed, and missing upstream


@pytest.fixture(scope="module")
def rancher_source(tmp_path_factory):
    """A loopback docker.io with a tiny Rancher release's images (sharing a base layer), and its list cached."""
    from support import corpus
    from support import testbed

    spec = corpus.CorpusSpec("trim", (
        corpus.ImageSpec(KEPT[0], "docker", (corpus.AMD64,), (40,)),
        corpus.ImageSpec(KEPT[1], "docker", (corpus.AMD64,), (30,)),
        corpus.ImageSpec(TRIMMED[0], "docker", (corpus.AMD64,), (30,)),
        corpus.ImageSpec(TRIMMED[1], "docker-list", (corpus.AMD64, corpus.ARM64), (20,)),
    ), base_kb=40)
    registry = testbed.start_registry(tmp_path_factory.mktemp("rancher-source"))
    try:
        seeded = corpus.seed_registry(registry.host, corpus.generate_corpus(tmp_path_factory.mktemp("corpus"), spec))
        cache = tmp_path_factory.mktemp("cache")
        cached = cache / "mirror" / "lists" / "rancher" / f"{RANCHER}.txt"
        cached.parent.mkdir(parents=True)
        source = f"{RELEASES_URL}/rancher/rancher/releases/download/{RANCHER}/rancher-images.txt"
        cached.write_text(f"# source: {source}\n# sha256: {'0' * 64}\n" + "".join(
            f"{name}\n" for name in [*KEPT, *TRIMMED, UNSEEDED]))
        yield seeded, {"XDG_CACHE_HOME": str(cache), "MIRROR_RELEASES_URL": RELEASES_URL}
    finally:
        registry.stop()


def pull_trimmed(rancher_source, *args):
    seeded, env = rancher_source
    return run_mirror("pull", "--mode", "docker", "--rancher-version", RANCHER, "--no-registry-image",
                      "--no-charts", "--no-files",  # the images alone: the kit's hosts are not on loopback here
                      "--offline-lists", "--downstream-versions", "v1.30", *corpus_args(seeded), *args, env=env)


def corpus_args(seeded):
    from support import corpus

    return corpus.source_mirror_args(seeded.registry_host)


def contents(seeded, sources: list[str]) -> dict[str, int]:
    images = [seeded.image(s) for s in sources]
    digests = set().union(*(i.blob_digests | set(i.manifest_digests.values()) | {i.digest} for i in images))
    return {d: seeded.sizes[d] for d in digests}


def test_dry_run_says_how_many_images_and_bytes_the_trim_left_out(rancher_source):
    seeded, _ = rancher_source
    result = pull_trimmed(rancher_source, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr  # the unresolvable trimmed image is not the run's failure
    report = json.loads(result.stdout)
    assert report["images"] == KEPT and report["unresolved"] == {}
    kept, trimmed = contents(seeded, KEPT), contents(seeded, TRIMMED)
    assert report["download_bytes"] == sum(kept.values())
    saved = sum(size for digest, size in trimmed.items() if digest not in kept)  # the shared base layer is not saved
    assert 0 < saved < sum(trimmed.values())
    assert report["trimmed"] == {"images": 3, "bytes": saved, "unresolved": 1}

    text = pull_trimmed(rancher_source, "--dry-run", "-q")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == KEPT
    [summary] = [line for line in text.stderr.splitlines() if "to download" in line]
    assert summary.startswith("2 images, ")
    assert "; --downstream-versions left out 3 images, at least " in summary
    assert "(weighed by resolving their manifests too: 3 or more extra manifest requests; 1 could not be " \
           "resolved)" in summary


def test_pull_writes_only_the_kept_images_and_the_bundle_records_the_versions(rancher_source, tmp_path):
    output = tmp_path / "b.tar.zst"
    result = pull_trimmed(rancher_source, "-o", output, "-q")
    assert result.returncode == 0, result.stderr
    assert "mirror: --downstream-versions v1.30: left out 3 per-Kubernetes-version images" in result.stderr
    inspected = json.loads(run_mirror("inspect", output, "--json").stdout)
    assert [image["source"] for image in inspected["images"]] == KEPT
    assert inspected["topology"]["downstream_versions"] == ["v1.30"]
