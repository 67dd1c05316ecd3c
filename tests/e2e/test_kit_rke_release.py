"""Which RKE release the kit's rke mode carries for a Kubernetes version not built in.

Upstream is kit_fixtures.kit_upstream: Rancher's metadata (KDM data.json of
the Rancher minor), rancher/rke's tag list (GitHub's API) and each RKE
release's own metadata snapshot (``data/data.json`` at its tag, the one
built into its binary), all on loopback.
"""

from __future__ import annotations

import hashlib
import json

from support.cli import run_mirror

KDM_PATH = "/kdm/release-v2.7/data.json"  # the metadata of the kit's default Rancher (2.7.9)
IMAGES = {"etcd": "rancher/mirrored-coreos-etcd:v3.9.9"}


def snapshot(*kubernetes: str, info: dict | None = None) -> dict:
    """A KDM data.json that has system images for ``kubernetes``."""
    return {"K8sVersionRKESystemImages": {version: IMAGES for version in kubernetes}, "K8sVersionInfo": info or {}}


def pull_rke(upstream, tmp_path, kubernetes: str, *args: str, name: str = "rke.tar.zst"):
    return run_mirror("pull", "--mode", "rke", "--kubernetes-version", kubernetes, "--exclude", ".", "--no-charts",
                      "-o", tmp_path / name, "-q", *args,
                      env={**upstream.env, "XDG_CACHE_HOME": str(tmp_path / "cache")})


def carried(bundle) -> list[tuple[str, str, str]]:
    """(name, version, digest) of each file in the bundle."""
    report = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    return [(f["name"], f["version"], f["digest"]) for f in report["files"]]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def minor_level_upstream(upstream, kubernetes: str) -> dict[str, bytes]:
    """Rancher's metadata as it is since v1.23: no entry for the patch, only its minor's RKE range.

    Tags: one below the range, one in it that predates the patch (the minor's minRKEVersion,
    which the patch is newer than), the newest in range, a pre-release, one above the range.
    """
    upstream.host.files[KDM_PATH] = json.dumps(snapshot(kubernetes, "v1.24.2-rancher1-1", info={
        "v1.24": {"minRKEVersion": "1.3.13-rc0", "maxRKEVersion": "1.4.99", "minRancherVersion": "2.6.7-patch0"},
    })).encode()
    return {
        "v1.3.12": upstream.rke_release("v1.3.12", snapshot()),
        "v1.3.13": upstream.rke_release("v1.3.13", snapshot("v1.24.2-rancher1-1")),
        "v1.4.2": upstream.rke_release("v1.4.2", snapshot("v1.24.2-rancher1-1", kubernetes)),
        "v1.4.3-rc1": upstream.rke_release("v1.4.3-rc1"),
        "v1.5.0": upstream.rke_release("v1.5.0", snapshot(kubernetes)),
    }


def test_a_v1_2x_version_takes_the_newest_rke_release_of_its_minor_range_that_supports_it(kit_upstream, tmp_path):
    binaries = minor_level_upstream(kit_upstream, "v1.24.9-rancher1-1")
    result = pull_rke(kit_upstream, tmp_path, "v1.24.9-rancher1-1")
    assert result.returncode == 0, result.stderr
    assert carried(tmp_path / "rke.tar.zst") == [("rke_linux-amd64", "v1.4.2", sha256(binaries["v1.4.2"]))]


def test_github_s_spent_rate_limit_is_named_with_its_reset_time_and_what_to_do_instead(kit_upstream, tmp_path):
    minor_level_upstream(kit_upstream, "v1.24.9-rancher1-1")
    kit_upstream.host.refused["/api/repos/rancher/rke/git/matching-refs/tags/v"] = (403, {
        "x-ratelimit-limit": "60", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1893456000"})
    result = pull_rke(kit_upstream, tmp_path, "v1.24.9-rancher1-1")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]  # after the note on the image list fetched
    assert "rate limit of 60 requests for this address is spent until 2030-01-01 00:00 UTC" in line, line
    assert "--rke-version" in line
    assert not (tmp_path / "rke.tar.zst").exists()


def test_a_patch_level_entry_is_a_lower_bound_not_the_release(kit_upstream, tmp_path):
    """v1.22 patches have their own minRKEVersion, the release that first carried the minor's line:
    a later patch is known only to later releases."""
    kubernetes = "v1.22.17-rancher1-1"
    kit_upstream.host.files[KDM_PATH] = json.dumps(snapshot(kubernetes, info={
        "v1.22": {"maxRKEVersion": "1.3.99"},
        kubernetes: {"minRKEVersion": "1.3.3-rc0", "minRancherVersion": "2.6.3-patch0"}})).encode()
    kit_upstream.rke_release("v1.3.3", snapshot("v1.22.4-rancher1-1"))
    later = kit_upstream.rke_release("v1.3.24", snapshot("v1.22.4-rancher1-1", kubernetes))
    kit_upstream.rke_release("v1.4.0", snapshot(kubernetes))  # above the minor's maxRKEVersion
    result = pull_rke(kit_upstream, tmp_path, kubernetes)
    assert result.returncode == 0, result.stderr
    assert carried(tmp_path / "rke.tar.zst") == [("rke_linux-amd64", "v1.3.24", sha256(later))]


def test_a_version_no_rke_release_supports_yet_is_refused_naming_it(kit_upstream, tmp_path):
    """Rancher's metadata gains a patch before any RKE release is built with it."""
    minor_level_upstream(kit_upstream, "v1.24.9-rancher1-1")
    kit_upstream.rke_release("v1.4.4", snapshot("v1.24.2-rancher1-1"))
    result = pull_rke(kit_upstream, tmp_path, "v1.24.9-rancher1-1")
    assert result.returncode == 2
    assert "--kubernetes-version v1.24.9-rancher1-1: the metadata of RKE v1.4.4" in result.stderr
    assert "does not list it" in result.stderr and "no RKE release supports it yet" in result.stderr
    assert not (tmp_path / "rke.tar.zst").exists()


def test_a_version_rancher_metadata_lacks_is_refused_naming_it(kit_upstream, tmp_path):
    minor_level_upstream(kit_upstream, "v1.24.9-rancher1-1")
    result = pull_rke(kit_upstream, tmp_path, "v1.24.8-rancher1-1")
    assert result.returncode == 2
    assert f"--kubernetes-version v1.24.8-rancher1-1: not in {kit_upstream.host.url}{KDM_PATH}" in result.stderr
    assert not (tmp_path / "rke.tar.zst").exists()


def test_the_rke_release_found_is_cached_for_offline_runs(kit_upstream, tmp_path):
    """As the image lists are: a later --offline-lists run finds the RKE release without asking any host
    but the release's for the binary."""
    binaries = minor_level_upstream(kit_upstream, "v1.24.9-rancher1-1")
    assert pull_rke(kit_upstream, tmp_path, "v1.24.9-rancher1-1", name="first.tar.zst").returncode == 0
    del kit_upstream.host.files[KDM_PATH]
    asked = len(kit_upstream.host.requests)
    result = pull_rke(kit_upstream, tmp_path, "v1.24.9-rancher1-1", "--offline-lists", name="again.tar.zst")
    assert result.returncode == 0, result.stderr
    assert carried(tmp_path / "again.tar.zst") == [("rke_linux-amd64", "v1.4.2", sha256(binaries["v1.4.2"]))]
    assert all(path.startswith("/gh/") for path in kit_upstream.host.requests[asked:])



def test_the_operators_rke_version_is_carried_when_its_metadata_supports_the_version(kit_upstream, tmp_path):
    """--rke-version: the release the site runs, older than the newest; the built-in choice gives way too."""
    binaries = minor_level_upstream(kit_upstream, "v1.24.9-rancher1-1")
    result = pull_rke(kit_upstream, tmp_path, "v1.24.2-rancher1-1", "--rke-version", "v1.3.13")
    assert result.returncode == 0, result.stderr
    assert carried(tmp_path / "rke.tar.zst") == [("rke_linux-amd64", "v1.3.13", sha256(binaries["v1.3.13"]))]
    assert not any(path.startswith("/api/") for path in kit_upstream.host.requests)

    refused = pull_rke(kit_upstream, tmp_path, "v1.24.9-rancher1-1", "--rke-version", "v1.3.13", name="no.tar.zst")
    assert refused.returncode == 2
    assert ("--rke-version v1.3.13 does not support --kubernetes-version v1.24.9-rancher1-1: its metadata does not "
            "list it") in refused.stderr
    assert not (tmp_path / "no.tar.zst").exists()

    missing = pull_rke(kit_upstream, tmp_path, "v1.24.9-rancher1-1", "--rke-version", "v1.9.9", name="no.tar.zst")
    assert missing.returncode == 2
    assert "--rke-version v1.9.9: no such RKE release" in missing.stderr


def test_rke_version_goes_with_the_rke_mode(kit_upstream, tmp_path):
    result = run_mirror("pull", "--mode", "k3s", "--exclude", ".", "--rke-version", "v1.4.2", "-o",
                        tmp_path / "k3s.tar.zst", env={**kit_upstream.env, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 2
    assert "--rke-version v1.4.2: goes with --mode rke" in result.stderr
