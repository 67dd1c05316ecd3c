"""Topology image lists: what each mode resolves to, and how bad lists are refused."""

from __future__ import annotations

import json
import shutil

import pytest

from mirror import imagelist, lists
from mirror.errors import UsageError
from support.cli import ROOT, run_mirror

MANIFESTS = ROOT / "manifests"


def data_lines(relative: str) -> list[str]:
    """A manifest file's references, fully qualified the way Rancher's scripts read them."""
    names = [line.strip() for line in (MANIFESTS / relative).read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return [n if "." in n.split("/")[0] else f"docker.io/{n}" for n in names]


def unique(*groups: list[str]) -> list[str]:
    return list(dict.fromkeys(name for group in groups for name in group))


RANCHER = "rancher/v2.7.9.txt"
CERT_MANAGER = "cert-manager/v1.11.0.txt"
REGISTRY = ["docker.io/library/registry:2.8.2"]

EXPECTED = {
    "k3s": unique(data_lines("k3s/v1.24.4+k3s1.txt"), data_lines(RANCHER), data_lines(CERT_MANAGER), REGISTRY),
    "rke": unique(data_lines("rke-system/v1.24.4-rancher1-1.txt"), data_lines(RANCHER), data_lines(CERT_MANAGER),
                  REGISTRY),
    "rke2": unique(data_lines("rke2/v1.24.4+rke2r1.txt"), data_lines(RANCHER), data_lines(CERT_MANAGER), REGISTRY),
    "docker": unique(data_lines(RANCHER), REGISTRY),
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_each_topology_resolves_to_its_default_lists(mode):
    refs, topology = lists.resolve_images(mode)
    assert [str(r) for r in refs] == EXPECTED[mode]
    assert topology.mode == mode


def test_default_versions_are_recorded():
    _, topology = lists.resolve_images("k3s")
    assert topology.versions == {"k3s": "v1.24.4+k3s1", "rancher": "v2.7.9", "cert-manager": "v1.11.0",
                                 "registry": "2.8.2"}


def test_docker_mode_has_no_cert_manager_and_rke_has_rke_system_images():
    docker, _ = lists.resolve_images("docker")
    assert not any("cert-manager" in str(r) for r in docker)
    rke, _ = lists.resolve_images("rke")
    assert "docker.io/rancher/hyperkube:v1.24.4-rancher1" in {str(r) for r in rke}
    assert "docker.io/weaveworks/weave-kube:2.8.1" in {str(r) for r in rke}


def test_chosen_versions_pick_their_files():
    refs, topology = lists.resolve_images("k3s", versions={"k3s": "v1.26.0+k3s1", "cert-manager": "v1.7.1",
                                                           "rancher": None})
    names = [str(r) for r in refs]
    assert names[:8] == data_lines("k3s/v1.26.0+k3s1.txt")
    assert "quay.io/jetstack/cert-manager-controller:v1.7.1" in names
    assert "quay.io/jetstack/cert-manager-controller:v1.11.0" not in names
    assert topology.versions["rancher"] == "v2.7.9"


def test_registry_image_opt_out():
    refs, topology = lists.resolve_images("docker", include_registry_image=False)
    assert REGISTRY[0] not in {str(r) for r in refs}
    assert "registry" not in topology.versions


def test_extras_added_duplicates_removed_order_stable(tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("# mine\nbusybox:1.36\n\nrancher/rancher:v2.7.9\nindex.docker.io/rancher/klipper-lb:v0.3.5\n")
    refs, _ = lists.resolve_images("k3s", extra_files=[extra], extra_refs=["docker.io/library/busybox:1.36",
                                                                           "ghcr.io/org/tool:1"])
    names = [str(r) for r in refs]
    assert names == EXPECTED["k3s"] + ["docker.io/library/busybox:1.36", "ghcr.io/org/tool:1"]


def test_extras_alone_without_mode(tmp_path):
    refs, topology = lists.resolve_images(None, extra_refs=["alpine"])
    assert [str(r) for r in refs] == ["docker.io/library/alpine:latest"] and topology is None


def test_exclude_drops_matching_references():
    refs, _ = lists.resolve_images("k3s", exclude=[r"^docker\.io/rancher/", "registry"])
    assert [str(r) for r in refs] == data_lines(CERT_MANAGER)


def test_rancher_files_are_accepted_as_is(tmp_path):
    """rancher-images.txt / rancher-windows-images.txt: bare names mean docker.io, comments and blanks skipped."""
    windows = tmp_path / "rancher-windows-images.txt"
    windows.write_text("rancher/wins:v0.4.11\r\nrancher/mirrored-pause:3.6  # the pause image\n\n"
                       "mcr.microsoft.com/windows/servercore:ltsc2019\n")
    refs = imagelist.parse_images_file(windows)
    assert [str(r) for r in refs] == ["docker.io/rancher/wins:v0.4.11", "docker.io/rancher/mirrored-pause:3.6",
                                      "mcr.microsoft.com/windows/servercore:ltsc2019"]


def test_adding_a_version_is_adding_a_data_file(tmp_path, monkeypatch):
    manifests = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, manifests)
    (manifests / "k3s" / "v1.99.0+k3s1.txt").write_text("# source: test\ndocker.io/rancher/klipper-lb:v9.9.9\n")
    monkeypatch.setattr(lists, "MANIFESTS_DIR", manifests)
    assert "v1.99.0+k3s1" in lists.available()["k3s"]["k3s"]
    refs, _ = lists.resolve_images("k3s", versions={"k3s": "v1.99.0+k3s1"})
    assert str(refs[0]) == "docker.io/rancher/klipper-lb:v9.9.9"


def test_every_data_file_records_its_source():
    files = [p for p in MANIFESTS.rglob("*.txt")]
    assert len(files) >= 9
    for path in files:
        assert path.read_text().startswith("# source: "), path
        imagelist.parse_images_file(path)  # and every line is a valid reference


def test_available_lists_modes_components_versions():
    found = lists.available()
    assert set(found) == {"k3s", "rke", "rke2", "docker"}
    assert found["k3s"]["k3s"] == ["v1.21.2+k3s1", "v1.24.4+k3s1", "v1.26.0+k3s1"]
    assert found["rke"]["kubernetes"] == ["v1.24.4-rancher1-1"]
    assert "cert-manager" not in found["docker"]


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "k8s"}, "unknown mode 'k8s'; available: k3s, rke, rke2, docker"),
    ({"mode": "k3s", "versions": {"k3s": "v1.0.0+k3s1"}},
     "--k3s-version v1.0.0+k3s1: no image list for this version; available: v1.21.2+k3s1, v1.24.4+k3s1, "
     "v1.26.0+k3s1"),
    ({"mode": "docker", "versions": {"cert-manager": "v1.7.1"}}, "--cert-manager-version does not apply to --mode docker"),
    ({"mode": None, "versions": {"rancher": "v2.7.9"}}, "--rancher-version needs --mode"),
    ({"mode": "k3s", "exclude": ["(rancher"]}, "--exclude '(rancher': invalid regular expression"),
])
def test_bad_choices_name_what_exists(kwargs, message):
    mode = kwargs.pop("mode")
    with pytest.raises(UsageError) as caught:
        lists.resolve_images(mode, **kwargs)
    assert message in str(caught.value)


def test_malformed_line_names_file_and_line(tmp_path):
    bad = tmp_path / "images.txt"
    bad.write_text("# list\nrancher/fleet:v0.3.10\n\nRancher/Fleet:v1\n")
    with pytest.raises(UsageError) as caught:
        imagelist.parse_images_file(bad)
    assert str(caught.value).startswith(f"{bad}:4: invalid image reference 'Rancher/Fleet:v1'")


# --- the command line ---------------------------------------------------------


def test_cli_lists_overview_shows_modes_and_defaults():
    result = run_mirror("lists")
    assert result.returncode == 0, result.stderr
    assert "k3s: Rancher on K3s" in result.stdout
    assert "v1.24.4+k3s1 (default)" in result.stdout
    assert "[--kubernetes-version]" in result.stdout


def test_cli_lists_prints_a_resolved_list_usable_as_images_file(tmp_path):
    result = run_mirror("lists", "--mode", "rke2", "--no-registry-image")
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "rke2.txt"
    saved.write_text(result.stdout)
    assert [str(r) for r in imagelist.parse_images_file(saved)] == EXPECTED["rke2"][:-1]


def test_cli_lists_json():
    result = run_mirror("lists", "--mode", "docker", "--json")
    report = json.loads(result.stdout)
    assert report["versions"] == {"rancher": "v2.7.9", "registry": "2.8.2"}
    assert report["images"] == EXPECTED["docker"]


@pytest.mark.parametrize("args, message", [
    (["--mode", "k8s"], "unknown mode 'k8s'; available: k3s, rke, rke2, docker"),
    (["--mode", "rke", "--kubernetes-version", "v1.2.3", "--offline-lists"],
     "--kubernetes-version v1.2.3: no built-in or cached image list, and --offline-lists forbids fetching "
     "https://releases.rancher.com/kontainer-driver-metadata/release-v2.7/data.json"),
    (["--images-file", "missing.txt"], "missing.txt: no such image list file"),
])
def test_cli_usage_errors_exit_2(args, message, tmp_path):
    result = run_mirror("lists", *args, env={"XDG_CACHE_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_cli_malformed_images_file_exit_2_names_file_and_line(tmp_path):
    bad = tmp_path / "extra.txt"
    bad.write_text("rancher/fleet:v0.3.10\nrancher/fleet v0.3.10\n")
    result = run_mirror("lists", "--images-file", bad)
    assert result.returncode == 2
    assert f"{bad}:2: invalid image reference" in result.stderr
