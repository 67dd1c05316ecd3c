"""The Rancher air-gap kit: charts and files pulled beside the images, pushed where Helm and ORAS find them.

Upstream is kit_fixtures.kit_upstream: a loopback server standing in for
GitHub releases, raw.githubusercontent.com and the chart repositories,
reached through mirror's environment overrides. ``--exclude .`` leaves the
topology's images out, so each bundle is the kit alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading

import httpx
import pytest

from mirror.bundle.reader import BundleReader
from support.cli import run_mirror
from support.kitbed import CERT_MANAGER, K3S, RANCHER, make_chart, sums

OCI = "application/vnd.oci.image.manifest.v1+json"


def pull(upstream, tmp_path, *args, name="kit.tar.zst"):
    bundle = tmp_path / name
    result = run_mirror("pull", "--mode", "k3s", "--exclude", ".", "-o", bundle, "-q", *args,
                        env={**upstream.env, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    return result, bundle


def stored(bundle) -> set[str]:
    with BundleReader(bundle) as reader:
        return set(reader.manifest.stored_blobs)


def test_pull_push_puts_the_chart_where_helm_finds_it_and_files_where_oras_does(kit_upstream, registry, tmp_path):
    result, bundle = pull(kit_upstream, tmp_path)
    assert result.returncode == 0, result.stderr
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "-q")
    assert pushed.returncode == 0, pushed.stderr

    base = f"http://{registry.host}/v2"
    manifest = httpx.get(f"{base}/charts/rancher/manifests/{RANCHER}", headers={"Accept": OCI})
    assert manifest.status_code == 200
    doc = manifest.json()
    assert doc["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    assert [layer["mediaType"] for layer in doc["layers"]] == ["application/vnd.cncf.helm.chart.content.v1.tar+gzip"]
    chart = httpx.get(f"{base}/charts/rancher/blobs/{doc['layers'][0]['digest']}")
    assert chart.content == kit_upstream.charts["rancher"][("rancher", RANCHER)][0]  # the .tgz byte for byte
    config = httpx.get(f"{base}/charts/rancher/blobs/{doc['config']['digest']}").json()
    assert (config["name"], config["version"]) == ("rancher", RANCHER)
    assert httpx.get(f"{base}/charts/cert-manager/manifests/{CERT_MANAGER}", headers={"Accept": OCI}).status_code == 200

    import oras.client as oras_client  # a client not written here, from the test extra: never skipped
    client = oras_client.OrasClient(hostname=registry.host, insecure=True)
    tag = K3S.replace("+", "_")
    for component, name in (("k3s", "k3s"), ("k3s-install.sh", "install.sh"),
                            ("cert-manager.crds.yaml", "cert-manager.crds.yaml")):
        version = CERT_MANAGER if component.startswith("cert-manager") else tag
        paths = client.pull(target=f"{registry.host}/files/{component}:{version}", outdir=str(tmp_path / "oras"))
        assert [p.rsplit("/", 1)[-1] for p in paths] == [name]
        served = [data for path, data in kit_upstream.host.files.items() if path.endswith("/" + name)]
        assert open(paths[0], "rb").read() == served[0]


def test_inspect_lists_charts_and_files_with_their_source(kit_upstream, tmp_path):
    result, bundle = pull(kit_upstream, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert report["images"] == []
    chart = {c["name"]: c for c in report["charts"]}["rancher"]
    data = kit_upstream.charts["rancher"][("rancher", RANCHER)][0]
    assert chart == {"name": "rancher", "version": RANCHER, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                     "size": len(data), "url": f"{kit_upstream.host.url}/rancher/rancher-{RANCHER}.tgz",
                     "reference": f"charts/rancher:{RANCHER}"}
    assert sorted(f["name"] for f in report["files"]) == ["cert-manager.crds.yaml", "install.sh", "k3s",
                                                          "sha256sum-amd64.txt"]
    text = run_mirror("inspect", bundle).stdout
    assert f"rancher       {RANCHER}" in text and "2 chart(s), 4 file(s)" in text


def test_platform_and_airgap_images_pick_the_files(kit_upstream, tmp_path):
    result, bundle = pull(kit_upstream, tmp_path, "--platform", "linux/arm64", "--no-charts", "--with-airgap-images")
    # arm64 has no air-gap tarball in the stand-in release: its sha256sum file does not name one
    assert result.returncode == 2
    assert "sha256sum-arm64.txt has no sha256 for k3s-airgap-images-arm64.tar.zst" in result.stderr
    result, bundle = pull(kit_upstream, tmp_path, "--platform", "linux/arm64", "--no-charts")
    assert result.returncode == 0, result.stderr
    report = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert report["charts"] == []
    assert sorted(f["name"] for f in report["files"]) == ["install.sh", "k3s-arm64", "sha256sum-arm64.txt"]


def test_a_tampered_chart_exits_4_and_writes_nothing(kit_upstream, tmp_path):
    genuine, tampered = make_chart("rancher", RANCHER), make_chart("rancher", RANCHER, b"evil: 1\n")
    kit_upstream.add_chart("rancher", "rancher", RANCHER, data=tampered, digest_of=genuine)
    result, bundle = pull(kit_upstream, tmp_path)
    assert result.returncode == 4, result.stderr
    assert f"{kit_upstream.host.url}/rancher/rancher-{RANCHER}.tgz hashes to" in result.stderr
    assert not bundle.exists()
    work = tmp_path / f".{bundle.name}.work" / "blobs" / "sha256"
    assert hashlib.sha256(tampered).hexdigest() not in {p.name for p in work.iterdir()}  # what was served: not kept
    assert not [p for p in work.iterdir() if p.name.startswith(".kit-")]  # no temp left behind


def test_a_tampered_binary_exits_4_and_writes_nothing(kit_upstream, tmp_path):
    path = f"/gh/k3s-io/k3s/releases/download/{K3S.replace('+', '%2B')}/k3s"
    kit_upstream.host.files[path] = b"\x7fELF something else\n"
    result, bundle = pull(kit_upstream, tmp_path, "--no-charts")
    assert result.returncode == 4, result.stderr
    assert "sha256sum-amd64.txt says sha256:" in result.stderr
    assert not bundle.exists()


def test_a_missing_file_exits_2_naming_it_before_anything_is_fetched(kit_upstream, tmp_path):
    path = f"/raw/k3s-io/k3s/{K3S.replace('+', '%2B')}/install.sh"
    del kit_upstream.host.files[path]
    result, bundle = pull(kit_upstream, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith(f"{kit_upstream.host.url}{path} is not there (answered 404)")
    assert not [p for p in kit_upstream.host.requests if p.endswith((".tgz", "/k3s", ".crds.yaml"))]
    assert not bundle.exists()

    kept, bundle = pull(kit_upstream, tmp_path, "--keep-going")
    assert kept.returncode == 1, kept.stderr  # the bundle is written without it; the run names what is missing
    assert f"k3s {K3S} install.sh" in kept.stderr and path in kept.stderr
    report = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert [c["name"] for c in report["charts"]] == ["rancher", "cert-manager"]
    assert sorted(f["name"] for f in report["files"]) == ["cert-manager.crds.yaml", "k3s", "sha256sum-amd64.txt"]


@pytest.mark.parametrize("body, message", [
    (b"entries: [not, a, map\n", "not a Helm repository index"),
    (b"apiVersion: v1\n", "not a Helm repository index (no entries)"),
    (b"apiVersion: v1\nentries:\n  rancher:\n  - version: 2.7.9\n    urls: [x.tgz]\n    digest: abc\n",
     "has digest 'abc', not a sha256"),
    (b"#" * (33 << 20), "serves more than"),
])
def test_a_malformed_or_oversized_index_exits_2_naming_it(kit_upstream, tmp_path, body, message):
    kit_upstream.host.files["/rancher/index.yaml"] = body
    result, bundle = pull(kit_upstream, tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{kit_upstream.host.url}/rancher/index.yaml" in result.stderr and message in result.stderr
    assert not bundle.exists()


@pytest.mark.parametrize("body, message", [
    (b"not a checksum\n", "line 1 is not 'SHA256  NAME'"),
    (sums({"k3s-arm64": b"x"}), "has no sha256 for k3s (it names k3s-arm64)"),
])
def test_a_malformed_sha256sum_file_exits_2_naming_it(kit_upstream, tmp_path, body, message):
    path = f"/gh/k3s-io/k3s/releases/download/{K3S.replace('+', '%2B')}/sha256sum-amd64.txt"
    kit_upstream.host.files[path] = body
    result, bundle = pull(kit_upstream, tmp_path, "--no-charts")
    assert result.returncode == 2, result.stderr
    assert kit_upstream.host.url + path in result.stderr and message in result.stderr


def test_a_delta_after_a_chart_version_bump_carries_only_the_new_chart(kit_upstream, tmp_path):
    repo = f"{kit_upstream.host.url}/extra"
    kit_upstream.add_chart("extra", "longhorn", "1.5.0")
    kit_upstream.add_chart("extra", "longhorn", "1.5.1")
    first, full = pull(kit_upstream, tmp_path, "--chart", f"{repo}/longhorn@1.5.0", name="full.tar.zst")
    assert first.returncode == 0, first.stderr
    second, delta = pull(kit_upstream, tmp_path, "--chart", f"{repo}/longhorn@1.5.1", "--base", full,
                         name="delta.tar.zst")
    assert second.returncode == 0, second.stderr
    with BundleReader(delta) as reader:
        new = [image for image in reader.manifest.images if image.source.endswith("longhorn:1.5.1")]
        assert set(reader.manifest.stored_blobs) == {new[0].digest, *new[0].blobs}
    layer = new[0].artifact.layer
    assert layer == "sha256:" + hashlib.sha256(kit_upstream.charts["extra"][("longhorn", "1.5.1")][0]).hexdigest()


def test_a_file_by_url_is_checked_against_the_digest_given(kit_upstream, tmp_path):
    kit_upstream.host.files["/other/tool"] = b"a tool\n"
    url = f"{kit_upstream.host.url}/other/tool"
    wrong = hashlib.sha256(b"another tool\n").hexdigest()
    result, bundle = pull(kit_upstream, tmp_path, "--no-charts", "--no-files", "--file", f"{url}#sha256={wrong}")
    assert result.returncode == 4, result.stderr
    assert not bundle.exists()
    right = hashlib.sha256(b"a tool\n").hexdigest()
    result, bundle = pull(kit_upstream, tmp_path, "--no-charts", "--no-files", "--file", f"{url}#sha256={right}")
    assert result.returncode == 0, result.stderr
    report = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert [(f["name"], f["version"], f["reference"]) for f in report["files"]] == [
        ("tool", "latest", "files/tool:latest")]


def test_a_large_file_comes_in_parallel_ranges_and_one_short_range_keeps_nothing(kit_upstream, tmp_path):
    """A K3s airgap tarball on one CDN connection takes the link's time several times over: where the host
    takes ranges, a large file comes in several at once, and is still checked whole."""
    from mirror.kit.fetcher import FIRST_RANGE, SEGMENTS

    data = hashlib.shake_256(b"a large kit file").digest(3 * FIRST_RANGE + 12345)
    kit_upstream.host.files["/other/images.tar.zst"] = data
    url = f"{kit_upstream.host.url}/other/images.tar.zst#sha256={hashlib.sha256(data).hexdigest()}"
    result, bundle = pull(kit_upstream, tmp_path, "--no-charts", "--no-files", "--file", url)
    assert result.returncode == 0, result.stderr
    assert kit_upstream.host.ranges_asked == 1 + SEGMENTS  # the first, which tells the size, then the rest
    out = tmp_path / "kit"
    assert run_mirror("extract", bundle, "-o", out).returncode == 0
    assert (out / "files" / "images.tar.zst").read_bytes() == data  # the ranges, put together in order

    kit_upstream.host.files["/other/images.tar.zst"] = data[:-1] + bytes([data[-1] ^ 1])  # one byte off
    result, again = pull(kit_upstream, tmp_path, "--no-charts", "--no-files", "--file", url, name="again.tar.zst")
    assert result.returncode == 4, result.stderr
    assert not again.exists() and "nothing kept" in result.stderr


def test_the_other_ranges_are_asked_for_while_the_first_still_streams(kit_upstream, tmp_path):
    """The first range's answer gives the size: the rest is asked for then, not after its 8 MiB arrived."""
    from mirror.kit.fetcher import FIRST_RANGE, SEGMENTS

    data = hashlib.shake_256(b"a large kit file").digest(2 * FIRST_RANGE)
    kit_upstream.host.files["/other/images.tar.zst"] = data
    all_asked, seen, others, lock = threading.Event(), [], [], threading.Lock()

    def hold_the_first(start):
        if start == 0:  # its headers are out: hold its body until the others came (a bound, should they not)
            seen.append(all_asked.wait(30))
            return None
        with lock:
            others.append(start)
            if len(others) == SEGMENTS:
                all_asked.set()
        return None

    kit_upstream.host.on_range = hold_the_first
    url = f"{kit_upstream.host.url}/other/images.tar.zst#sha256={hashlib.sha256(data).hexdigest()}"
    result, bundle = pull(kit_upstream, tmp_path, "--no-charts", "--no-files", "--file", url)
    assert result.returncode == 0, result.stderr
    assert seen == [True]


def test_a_range_cut_short_ends_the_download_naming_it_and_keeps_nothing(kit_upstream, tmp_path):
    """The other ranges stop at their next piece; the error is the cut range's, and no partial file stays."""
    from mirror.kit.fetcher import FIRST_RANGE

    data = hashlib.shake_256(b"a large kit file").digest(2 * FIRST_RANGE)
    kit_upstream.host.files["/other/images.tar.zst"] = data
    cut = threading.Event()

    def cut_the_last(start):
        if start == len(data) - FIRST_RANGE // 8:  # the last of the 8 ranges after the first
            cut.set()
            return 1000
        cut.wait(30)  # the others go on only once it was cut: they stop for it, not end before it
        return None

    kit_upstream.host.on_range = cut_the_last
    url = f"{kit_upstream.host.url}/other/images.tar.zst#sha256={hashlib.sha256(data).hexdigest()}"
    result, bundle = pull(kit_upstream, tmp_path, "--no-charts", "--no-files", "--file", url)
    assert not bundle.exists()
    assert result.returncode == 4, result.stderr  # a truncated download, as a tampered one
    assert f"cut short at byte {len(data) - FIRST_RANGE // 8 + 1000}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / f".{bundle.name}.work").rglob(".kit-*"))


def test_extract_writes_the_kit_that_sha256sum_checks(kit_upstream, tmp_path):
    result, bundle = pull(kit_upstream, tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "kit"
    extracted = run_mirror("extract", bundle, "-o", out)
    assert extracted.returncode == 0, extracted.stderr
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert sorted(checked.stdout.splitlines()) == [
        f"{path}: OK" for path in sorted(["charts/cert-manager-v1.11.0.tgz", f"charts/rancher-{RANCHER}.tgz",
                                          "cert-manager/cert-manager.crds.yaml", "k3s/install.sh", "k3s/k3s",
                                          "k3s/sha256sum-amd64.txt"])]
    assert (out / "charts" / f"rancher-{RANCHER}.tgz").read_bytes() == \
        kit_upstream.charts["rancher"][("rancher", RANCHER)][0]
    assert os.access(out / "k3s" / "k3s", os.X_OK) and os.access(out / "k3s" / "install.sh", os.X_OK)
    assert not os.access(out / "k3s" / "sha256sum-amd64.txt", os.X_OK)

    again = run_mirror("extract", bundle, "-o", out, "--json")  # the same bundle again: nothing to write
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["written"] == []


def test_extract_never_replaces_a_different_file_without_force(kit_upstream, tmp_path):
    result, bundle = pull(kit_upstream, tmp_path)
    out = tmp_path / "kit"
    (out / "k3s").mkdir(parents=True)
    (out / "k3s" / "install.sh").write_bytes(b"my own installer\n")
    refused = run_mirror("extract", bundle, "-o", out)
    assert refused.returncode == 2
    assert f"{out}/k3s/install.sh exists with other content: pass --force" in refused.stderr
    assert sorted(p.name for p in out.rglob("*")) == ["install.sh", "k3s"]  # nothing written
    forced = run_mirror("extract", bundle, "-o", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "k3s" / "install.sh").read_bytes() != b"my own installer\n"


def test_extract_refuses_to_write_through_a_link(kit_upstream, tmp_path):
    result, bundle = pull(kit_upstream, tmp_path)
    out, elsewhere = tmp_path / "kit", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "k3s").symlink_to(elsewhere)
    refused = run_mirror("extract", bundle, "-o", out, "--force")
    assert refused.returncode == 2
    assert f"{out}/k3s is not a directory (a link or a file)" in refused.stderr
    assert list(elsewhere.iterdir()) == []


def files_of(bundle) -> list[tuple[str, str]]:
    report = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    return sorted((f["name"], f["version"]) for f in report["files"])


def test_each_mode_carries_its_own_files(kit_upstream, tmp_path):
    env = {**kit_upstream.env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    rke2 = run_mirror("pull", "--mode", "rke2", "--exclude", ".", "--no-charts", "-o", tmp_path / "rke2.tar.zst",
                      "-q", env=env)
    assert rke2.returncode == 0, rke2.stderr
    assert files_of(tmp_path / "rke2.tar.zst") == [(name, "v1.24.4+rke2r1") for name in
                                                    ("install.sh", "rke2.linux-amd64.tar.gz", "sha256sum-amd64.txt")]
    rke = run_mirror("pull", "--mode", "rke", "--exclude", ".", "--no-charts", "-o", tmp_path / "rke.tar.zst",
                     "-q", env=env)
    assert rke.returncode == 0, rke.stderr
    assert files_of(tmp_path / "rke.tar.zst") == [("rke_linux-amd64", "v1.3.15")]  # built in for v1.24.4-rancher1-1
    docker = run_mirror("pull", "--mode", "docker", "--exclude", ".", "-o", tmp_path / "docker.tar.zst", "-q", env=env)
    assert docker.returncode == 0, docker.stderr
    report = json.loads(run_mirror("inspect", tmp_path / "docker.tar.zst", "--json").stdout)
    assert [c["name"] for c in report["charts"]] == ["rancher"] and report["files"] == []


def test_dry_run_names_the_kit_and_fetches_none_of_it(kit_upstream, tmp_path):
    result = run_mirror("pull", "--mode", "k3s", "--exclude", ".", "--dry-run", "--json",
                        env={**kit_upstream.env, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(c["name"], c["version"]) for c in report["charts"]] == [("rancher", RANCHER),
                                                                      ("cert-manager", CERT_MANAGER)]
    assert len(report["files"]) == 4
    assert not [p for p in kit_upstream.host.requests if p.endswith((".tgz", "/k3s", ".crds.yaml", "install.sh"))]


def test_the_kit_reuses_its_connections_across_look_ups_and_downloads(kit_upstream, tmp_path):
    # each new connection to a real host costs a TCP and a TLS handshake: 2-3 round trips over a WAN
    result, _ = pull(kit_upstream, tmp_path)
    assert result.returncode == 0, result.stderr
    host = kit_upstream.host
    sent = len(host.requests) + host.heads
    assert sent >= 8
    assert host.connections <= sent // 2, (host.connections, sent)


def test_index_urls_are_taken_relative_to_the_repository_and_sums_read_both_forms():
    from mirror.kit.checksums import parse_sums
    from mirror.kit.helm_index import chart_location

    digest = "a" * 64
    index = f"entries:\n  x:\n  - version: 1.0.0\n    urls: [charts/x-1.0.0.tgz]\n    digest: {digest}\n".encode()
    assert chart_location(index, "https://h/repo/index.yaml", "x", "1.0.0") == (
        "https://h/repo/charts/x-1.0.0.tgz", digest)
    absolute = index.replace(b"charts/x-1.0.0.tgz", b"https://cdn/x.tgz")
    assert chart_location(absolute, "https://h/repo/index.yaml", "x", "1.0.0")[0] == "https://cdn/x.tgz"
    text = f"{digest}  k3s\r\n{'b' * 64} *install.sh\n\n".encode()
    assert parse_sums(text, "u") == {"k3s": digest, "install.sh": "b" * 64}


@pytest.mark.parametrize("folder, file", [("..", "x"), ("k3s", "../x"), ("k3s", "a/b"), ("/etc", "passwd"),
                                          ("k3s", ".hidden")])
def test_extract_refuses_a_name_that_would_leave_the_directory(folder, file):
    from mirror.bundle.format import ArtifactRecord
    from mirror.errors import IntegrityError
    from mirror.kit.extract import _relative

    record = ArtifactRecord("file", "x", "1", "u", folder, file, "sha256:" + "0" * 64, 1)
    with pytest.raises(IntegrityError, match="not a plain name under the output directory"):
        _relative(record, "b.tar.zst")


def test_an_oversized_sha256sum_file_exits_2_naming_it(kit_upstream, tmp_path):
    path = f"/gh/k3s-io/k3s/releases/download/{K3S.replace('+', '%2B')}/sha256sum-amd64.txt"
    kit_upstream.host.files[path] = b"\n" * (2 << 20)
    result, bundle = pull(kit_upstream, tmp_path, "--no-charts")
    assert result.returncode == 2, result.stderr
    assert f"{kit_upstream.host.url}{path} serves more than 1024 KiB; refused" in result.stderr


def test_a_source_that_drips_is_cut_and_nothing_is_kept(tmp_path):
    """A body under the minimum rate never trips the idle timeout; the rate guard ends it."""
    import socket
    import threading
    import time

    from mirror.bundle.store import BlobStore
    from mirror.errors import MirrorError
    from mirror.kit.fetcher import KitFetcher
    from mirror.registry.settings import RegistrySettings

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    done = threading.Event()

    def drip():
        connection, _ = server.accept()
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        for _ in range(50):  # then it hangs up: without the guard the test fails, never hangs
            if done.is_set():
                break
            try:
                connection.sendall(b"x")
            except OSError:
                break
            time.sleep(0.2)
        connection.close()

    threading.Thread(target=drip, daemon=True).start()
    store = BlobStore(tmp_path / "work")
    fetcher = KitFetcher(pace=RegistrySettings(min_rate=1000, rate_window=1.0))
    url = f"http://127.0.0.1:{server.getsockname()[1]}/k3s"
    try:
        with pytest.raises(MirrorError, match="sends under 1000 bytes/s"):
            fetcher.download(url, "k3s", store, 1 << 20, None, None)
    finally:
        done.set()
        server.close()
    assert list(store.blob_dir.iterdir()) == []


def test_images_and_the_kit_travel_in_one_bundle_and_push_together(kit_upstream, seeded_source, registry, tmp_path):
    images = [image.source for image in seeded_source.corpus.images][:2]
    bundle = tmp_path / "both.tar.zst"
    result = run_mirror("pull", *images, "--chart", f"{kit_upstream.host.url}/rancher/rancher@{RANCHER}",
                        *seeded_source.mirror_args, "-o", bundle, "-q", env=kit_upstream.env)
    assert result.returncode == 0, result.stderr
    assert "2 images, 1 charts" in result.stdout
    report = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert [i["source"] for i in report["images"]] == images and [c["name"] for c in report["charts"]] == ["rancher"]
    assert run_mirror("verify", bundle).returncode == 0
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "--json")
    assert pushed.returncode == 0, pushed.stderr
    verified = run_mirror("verify", bundle, "--registry", registry.host, "--plain-http")
    assert verified.returncode == 0, verified.stderr
    assert httpx.get(f"http://{registry.host}/v2/charts/rancher/manifests/{RANCHER}",
                     headers={"Accept": OCI}).status_code == 200


def test_a_split_kit_bundle_extracts_from_its_parts(kit_upstream, tmp_path):
    result, bundle = pull(kit_upstream, tmp_path, "--split-size", "2K")
    assert result.returncode == 0, result.stderr
    assert not bundle.exists() and len(list(tmp_path.glob("kit.tar.zst.part-*"))) > 1
    out = tmp_path / "kit"
    extracted = run_mirror("extract", bundle, "-o", out)
    assert extracted.returncode == 0, extracted.stderr
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True).returncode == 0


def test_keep_going_writes_the_bundle_without_a_tampered_binary_and_exits_4(kit_upstream, tmp_path):
    path = f"/gh/k3s-io/k3s/releases/download/{K3S.replace('+', '%2B')}/k3s"
    kit_upstream.host.files[path] = b"\x7fELF something else\n"
    result, bundle = pull(kit_upstream, tmp_path, "--keep-going")
    assert result.returncode == 4, result.stderr
    assert f"file k3s {K3S}" in result.stderr
    report = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert "k3s" not in [f["name"] for f in report["files"]] and len(report["charts"]) == 2



def test_config_rancher_names_a_chart_the_bundle_lacks():
    from mirror import lists
    from mirror.clientconfig import GENERATORS, NodeRegistry
    from mirror.model.reference import Reference

    images = [Reference.parse("docker.io/rancher/rancher:v2.7.9"), *lists.component_images("cert-manager", None)[1]]
    charts = [Reference.parse(f"charts/rancher:{RANCHER}"), Reference.parse(f"charts/cert-manager:{CERT_MANAGER}")]
    generate = GENERATORS["rancher"]
    assert generate(NodeRegistry("reg.example:5000"), bundled=images + charts).notes == []
    notes = generate(NodeRegistry("reg.example:5000"), bundled=images + charts[1:]).notes
    assert [note for note in notes if "carries no chart" in note] == [
        f"--bundle carries no chart rancher {RANCHER} (pulled with --no-charts, or another version): "
        f"rancher-install.sh's helm install needs charts/rancher:{RANCHER} in the registry"]
