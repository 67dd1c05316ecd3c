"""sync carries the Rancher kit as it carries images: what pull --mode would carry, copied only where it is missing.

Upstream is kit_fixtures.kit_upstream (support/kitbed.py: loopback stand-ins for the chart repositories, GitHub
releases and raw.githubusercontent.com); the target is a real registry. ``--exclude .`` leaves the topology's
images out, so each run is the kit alone.
"""

from __future__ import annotations

import hashlib
import json

import httpx

from mirror.bundle.reader import BundleReader
from support.cli import run_mirror
from support.kitbed import CERT_MANAGER, K3S, RANCHER, make_chart

OCI = "application/vnd.oci.image.manifest.v1+json"
BUMPED = "2.8.0"
K3S_TAG = K3S.replace("+", "_")
KIT = {f"charts/rancher:{RANCHER}", f"charts/cert-manager:{CERT_MANAGER}",
       f"files/cert-manager.crds.yaml:{CERT_MANAGER}",
       *(f"files/{component}:{K3S_TAG}" for component in ("k3s", "k3s-install.sh", "k3s-sha256sum-amd64.txt"))}
DOWNLOADED = {f"rancher-{RANCHER}.tgz", f"cert-manager-{CERT_MANAGER}.tgz", "cert-manager.crds.yaml", "k3s",
              "install.sh"}  # the sha256sum file is read anyway, to find the others' digests


def sync(upstream, tmp_path, *args, rancher=RANCHER, json_report=True):
    result = run_mirror("sync", "run", "--mode", "k3s", "--rancher-version", f"v{rancher}", "--exclude", ".",
                        "-q", *args, *(["--json"] if json_report else []),
                        env={**upstream.env, "XDG_CACHE_HOME": str(tmp_path / "cache"),
                             "XDG_STATE_HOME": str(tmp_path / "state")})
    return result, json.loads(result.stdout) if json_report and result.stdout else None


def to_registry(upstream, registry, tmp_path, rancher=RANCHER):
    return sync(upstream, tmp_path, "--to", registry.host, "--to-plain-http", rancher=rancher)


def downloads(upstream) -> dict[str, int]:
    """How often each item was asked for (a GET of its path; the index and sha256sum files left out)."""
    asked: dict[str, int] = {}
    for path in upstream.host.requests:
        name = path.rsplit("/", 1)[-1]
        if name in DOWNLOADED:
            asked[name] = asked.get(name, 0) + 1
    return asked


def actions(report) -> dict[str, str]:
    """target repository:tag -> action"""
    return {image["target"].split("/", 1)[1]: image["action"] for image in report["images"]}


def bump_rancher(upstream):
    """Rancher BUMPED: its chart, and its image list (whose images --exclude . leaves out)."""
    upstream.add_chart("rancher", "rancher", BUMPED)
    upstream.release("rancher/rancher", f"v{BUMPED}", {"rancher-images.txt": b"docker.io/rancher/rancher:v2.8.0\n"})


def test_a_first_sync_copies_the_kit_and_a_second_copies_nothing(kit_upstream, registry, tmp_path):
    first, report = to_registry(kit_upstream, registry, tmp_path)
    assert first.returncode == 0, first.stderr
    assert actions(report) == {name: "copied" for name in KIT}
    manifest = httpx.get(f"http://{registry.host}/v2/charts/rancher/manifests/{RANCHER}", headers={"Accept": OCI})
    layer = manifest.json()["layers"][0]["digest"]  # where push puts it, as push builds it: the .tgz byte for byte
    assert layer == "sha256:" + hashlib.sha256(kit_upstream.charts["rancher"][("rancher", RANCHER)][0]).hexdigest()

    assert {image["kind"] for image in report["images"]} == {"kit"}

    kit_upstream.host.requests.clear()
    again, report = to_registry(kit_upstream, registry, tmp_path)
    assert again.returncode == 0, again.stderr
    assert actions(report) == {name: "unchanged" for name in KIT}
    assert (report["blobs"]["uploaded"], report["tags_pushed"]) == (0, 0)
    assert downloads(kit_upstream) == {}  # the target's tags and digests said so: nothing fetched

    said, _ = sync(kit_upstream, tmp_path, "--to", registry.host, "--to-plain-http", json_report=False)
    assert said.returncode == 0, said.stderr
    assert f"synced 0 images and {len(KIT)} kit charts and files to {registry.host}:" in said.stdout, said.stdout


def test_two_targets_each_get_what_they_lack_from_one_download(kit_upstream, start_registry, tmp_path):
    first, second = start_registry(), start_registry()
    assert to_registry(kit_upstream, first, tmp_path)[0].returncode == 0
    kit_upstream.host.requests.clear()
    both, report = sync(kit_upstream, tmp_path, "--to", first.host, "--to", second.host, "--to-plain-http")
    assert both.returncode == 0, both.stderr
    at = {target["target"]: actions(target) for target in report["targets"]}
    assert at == {first.host: {name: "unchanged" for name in KIT}, second.host: {name: "copied" for name in KIT}}
    assert downloads(kit_upstream) == {name: 1 for name in DOWNLOADED}  # once, for the target that lacks it


def test_a_rancher_bump_copies_only_the_new_chart_and_a_dry_run_says_so(kit_upstream, registry, tmp_path):
    assert to_registry(kit_upstream, registry, tmp_path)[0].returncode == 0
    bump_rancher(kit_upstream)
    kit_upstream.host.requests.clear()
    dry, report = sync(kit_upstream, tmp_path, "--to", registry.host, "--to-plain-http", "--dry-run", rancher=BUMPED)
    assert dry.returncode == 0, dry.stderr
    assert {name for name, action in actions(report).items() if action != "unchanged"} == {f"charts/rancher:{BUMPED}"}
    assert f"rancher-{BUMPED}.tgz" not in {path.rsplit("/", 1)[-1] for path in kit_upstream.host.requests}
    assert BUMPED not in httpx.get(f"http://{registry.host}/v2/charts/rancher/tags/list").json()["tags"]
    bumped, report = to_registry(kit_upstream, registry, tmp_path, rancher=BUMPED)
    assert bumped.returncode == 0, bumped.stderr
    changed = {name: action for name, action in actions(report).items() if action != "unchanged"}
    assert changed == {f"charts/rancher:{BUMPED}": "copied"}
    assert report["tags_pushed"] == 1


def test_a_tampered_chart_fails_that_item_with_exit_4_and_no_tag(kit_upstream, registry, tmp_path):
    genuine, tampered = make_chart("rancher", RANCHER), make_chart("rancher", RANCHER, b"evil: 1\n")
    kit_upstream.add_chart("rancher", "rancher", RANCHER, data=tampered, digest_of=genuine)
    result, report = to_registry(kit_upstream, registry, tmp_path)
    assert result.returncode == 4, result.stderr
    failed = [image for image in report["images"] if image["action"] == "failed"]
    assert [image["target"].split("/", 1)[1] for image in failed] == [f"charts/rancher:{RANCHER}"]
    assert "hashes to" in failed[0]["error"]
    assert httpx.get(f"http://{registry.host}/v2/charts/rancher/tags/list").status_code == 404  # nothing tagged
    assert {name for name, action in actions(report).items() if action == "copied"} == KIT - {
        f"charts/rancher:{RANCHER}"}  # the other items go on


def test_a_bundle_after_a_rancher_bump_carries_only_the_new_chart(kit_upstream, tmp_path):
    first = run_mirror("pull", "--mode", "k3s", "--exclude", ".", "-o", tmp_path / "full.tar.zst", "-q",
                       env={**kit_upstream.env, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert first.returncode == 0, first.stderr
    bump_rancher(kit_upstream)
    bundles = tmp_path / "out"
    bundles.mkdir()
    result, report = sync(kit_upstream, tmp_path, "--to-bundle", bundles, "--base", tmp_path / "full.tar.zst",
                          rancher=BUMPED)
    assert result.returncode == 0, result.stderr
    changed = {image["source"]: image["action"] for image in report["images"] if image["action"] != "unchanged"}
    assert changed == {f"{kit_upstream.host.url}/rancher/rancher-{BUMPED}.tgz": "copied"}
    with BundleReader(report["bundle"]["path"]) as reader:
        new = [image for image in reader.manifest.images if image.source.endswith(f"rancher:{BUMPED}")]
        assert set(reader.manifest.stored_blobs) == {new[0].digest, *new[0].blobs}


def test_a_mode_entry_carries_what_pull_would_and_its_keys_say_what_not(kit_upstream, tmp_path, monkeypatch):
    from mirror.transfer.sync_config import load_config

    for name, value in {**kit_upstream.env, "XDG_CACHE_HOME": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(name, value)
    kit_upstream.add_chart("extra", "longhorn", "1.5.0")
    job = tmp_path / "sync.yaml"

    def carried(keys: str) -> set[str] | None:
        job.write_text("target: {registry: reg.dmz.corp:5000}\nimages:\n"
                       f"  - {{mode: k3s, offline_lists: true{keys}}}\n")
        kit = load_config(job).request.kit
        return None if kit is None else {f"{item.repository}:{item.tag}" for item in kit.items}

    charts = {f"charts/rancher:{RANCHER}", f"charts/cert-manager:{CERT_MANAGER}",
              f"files/cert-manager.crds.yaml:{CERT_MANAGER}"}
    assert carried("") == KIT
    assert carried(", charts: false") == KIT - charts
    assert carried(f", files: false, charts: ['{kit_upstream.host.url}/extra/longhorn@1.5.0']") == charts | {
        "charts/longhorn:1.5.0"}
    assert carried(", with_airgap_images: true") == KIT | {f"files/k3s-airgap-images-amd64.tar.zst:{K3S_TAG}"}
    assert carried(", kit: false") is None
