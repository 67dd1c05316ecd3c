"""Image lists for versions that are not built in: fetched from a loopback server standing in for the release hosts.

The server plays GitHub's release downloads (MIRROR_RELEASES_URL), Rancher's
Kontainer Driver Metadata (MIRROR_KDM_URL) and the K3s release channel
(MIRROR_K3S_CHANNEL_URL); every run gets its own cache dir (XDG_CACHE_HOME).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support import testbed
from support.cli import run_mirror

K3S = "v1.99.1+k3s1"
K3S_PATH = "/k3s-io/k3s/releases/download/v1.99.1%2Bk3s1/k3s-images.txt"
K3S_LIST = b"docker.io/rancher/klipper-helm:v0.9.9-build1\nrancher/mirrored-pause:3.9\n"
KDM_PATH = "/kdm/release-v2.7/data.json"
KDM = {"K8sVersionRKESystemImages": {"v1.99.9-rancher1-1": {
    "etcd": "rancher/mirrored-coreos-etcd:v3.9.9", "kubernetes": "rancher/hyperkube:v1.99.9-rancher1",
    "pause": "rancher/mirrored-pause:3.9", "podInfraContainer": "rancher/mirrored-pause:3.9",
    "windowsPodInfraContainer": "rancher/mirrored-pause-windows:3.9", "aciCniDeployContainer": ""}}}


class ReleaseHost:
    """A loopback HTTP(S) server answering from ``files`` (path -> (status, body, headers)); records requests."""

    def __init__(self, tls: testbed.TLSFiles | None = None):
        self.files: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.requests: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                host.requests.append(self.path)
                status, body, headers = host.files.get(self.path, (404, b"Not Found", {}))
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, path: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.files[path] = (status, body, headers or {})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def host():
    server = ReleaseHost()
    yield server
    server.stop()


@pytest.fixture
def env(host, tmp_path):
    return {"MIRROR_RELEASES_URL": host.url, "MIRROR_KDM_URL": f"{host.url}/kdm",
            "MIRROR_K3S_CHANNEL_URL": f"{host.url}/v1-release/channels/stable",
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1"}


def k3s_lines(stdout: str) -> list[str]:
    """The K3s part of a resolved k3s list: it comes first."""
    return [line for line in stdout.splitlines() if not line.startswith("#")][:2]


def test_a_version_not_built_in_is_fetched_cached_and_announced(host, env, tmp_path):
    host.serve(K3S_PATH, K3S_LIST)
    host.serve(KDM_PATH, kdm_with_k3s_release(K3S, "v2.7.0", "v2.7.99"))  # checked once, then cached too
    url = host.url + K3S_PATH
    digest = hashlib.sha256(K3S_LIST).hexdigest()
    result = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, "--no-registry-image", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"mirror: k3s {K3S}: fetched {url} (sha256 {digest})\n"
    assert k3s_lines(result.stdout) == ["docker.io/rancher/klipper-helm:v0.9.9-build1",
                                        "docker.io/rancher/mirrored-pause:3.9"]
    cached = tmp_path / "cache" / "mirror" / "lists" / "k3s" / f"{K3S}.txt"
    assert cached.read_bytes() == f"# source: {url}\n# sha256: {digest}\n".encode() + K3S_LIST
    assert host.requests == [K3S_PATH, KDM_PATH]

    again = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, "--no-registry-image", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stderr == f"mirror: k3s {K3S}: cached {url} (sha256 {digest})\n"
    assert k3s_lines(again.stdout) == k3s_lines(result.stdout)
    assert host.requests == [K3S_PATH, KDM_PATH]  # the second run did not ask again

    overview = run_mirror("lists", env=env)
    assert f"{K3S} (cached)" in overview.stdout


def test_offline_lists_use_the_cache_and_never_fetch(host, env):
    host.serve(K3S_PATH, K3S_LIST)
    host.serve(KDM_PATH, kdm_with_k3s_release(K3S, "v2.7.0", "v2.7.99"))
    assert run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, env=env).returncode == 0
    offline = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, "--offline-lists", "--json", env=env)
    assert offline.returncode == 0, offline.stderr
    report = json.loads(offline.stdout)
    assert report["sources"]["k3s"] == {"origin": "cached", "url": host.url + K3S_PATH,
                                        "sha256": hashlib.sha256(K3S_LIST).hexdigest()}
    assert report["sources"]["rancher"]["origin"] == "built in"
    assert "docker.io/rancher/klipper-helm:v0.9.9-build1" in report["images"]
    assert host.requests == [K3S_PATH, KDM_PATH]


def test_offline_without_a_cached_list_exits_2_naming_the_url(host, env):
    host.serve(K3S_PATH, K3S_LIST)
    result = run_mirror("pull", "--mode", "k3s", "--k3s-version", K3S, "--offline-lists", "-o", "never.tar.zst",
                        env=env)
    assert result.returncode == 2
    assert result.stderr == (f"mirror: error: --k3s-version {K3S}: no built-in or cached image list, and "
                             f"--offline-lists forbids fetching {host.url + K3S_PATH}\n")
    assert host.requests == []


def test_unknown_release_upstream_exits_2_naming_the_url(host, env, tmp_path):
    result = run_mirror("lists", "--mode", "k3s", "--k3s-version", "v1.99.404+k3s1", env=env)
    assert result.returncode == 2
    url = f"{host.url}/k3s-io/k3s/releases/download/v1.99.404%2Bk3s1/k3s-images.txt"
    assert result.stderr == f"mirror: error: --k3s-version v1.99.404+k3s1: no such release upstream ({url} answered 404)\n"
    assert not (tmp_path / "cache" / "mirror" / "lists" / "k3s").exists()


def test_malformed_list_exits_2_naming_the_line_and_is_not_cached(host, env, tmp_path):
    path = "/rancher/rancher/releases/download/v2.99.0/rancher-images.txt"
    host.serve(path, b"rancher/rancher:v2.99.0\nrancher/fleet v0.99\n")
    result = run_mirror("lists", "--mode", "docker", "--rancher-version", "v2.99.0", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"mirror: error: {host.url}{path}:2: invalid image reference 'rancher/fleet v0.99'")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "cache" / "mirror" / "lists" / "rancher").exists()


def test_rke_system_images_come_from_the_metadata_of_the_rancher_minor(host, env):
    host.serve(KDM_PATH, json.dumps(KDM).encode())
    result = run_mirror("lists", "--mode", "rke", "--kubernetes-version", "v1.99.9-rancher1-1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"][:3] == ["docker.io/rancher/mirrored-coreos-etcd:v3.9.9",
                                    "docker.io/rancher/hyperkube:v1.99.9-rancher1", "docker.io/rancher/mirrored-pause:3.9"]
    assert "docker.io/rancher/mirrored-pause-windows:3.9" not in report["images"]
    assert report["sources"]["kubernetes"]["url"] == f"{host.url}{KDM_PATH}#K8sVersionRKESystemImages/v1.99.9-rancher1-1"

    missing = run_mirror("lists", "--mode", "rke", "--kubernetes-version", "v1.99.8-rancher1-1", env=env)
    assert missing.returncode == 2
    assert f"--kubernetes-version v1.99.8-rancher1-1: not in {host.url}{KDM_PATH}" in missing.stderr


def test_cert_manager_images_follow_from_the_version_without_fetching(host, env):
    result = run_mirror("lists", "--mode", "k3s", "--cert-manager-version", "v1.99.0", "--json", env=env)
    assert result.returncode == 0, result.stderr
    images = json.loads(result.stdout)["images"]
    assert [i for i in images if "cert-manager" in i] == [
        f"quay.io/jetstack/cert-manager-{name}:v1.99.0"
        for name in ("controller", "webhook", "cainjector", "acmesolver", "startupapicheck")]
    assert host.requests == []


def test_latest_asks_the_release_channel(host, env):
    host.serve("/v1-release/channels/stable", b"", status=302,
               headers={"Location": "https://github.com/k3s-io/k3s/releases/tag/v1.99.1%2Bk3s1"})
    host.serve(K3S_PATH, K3S_LIST)
    result = run_mirror("lists", "--mode", "k3s", "--k3s-version", "latest", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["versions"]["k3s"] == K3S
    assert host.requests == ["/v1-release/channels/stable", K3S_PATH, KDM_PATH]  # no metadata there: no warning
    assert "warning" not in result.stderr

    offline = run_mirror("lists", "--mode", "k3s", "--k3s-version", "latest", "--offline-lists", env=env)
    assert offline.returncode == 2
    assert f"asks {host.url}/v1-release/channels/stable, and --offline-lists forbids that" in offline.stderr


def test_tls_release_host_needs_its_ca_file(env, tmp_path):
    tls = testbed.make_tls(tmp_path / "tls")
    server = ReleaseHost(tls)
    try:
        server.serve(K3S_PATH, K3S_LIST)
        env = {**env, "MIRROR_RELEASES_URL": server.url}
        refused = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, env=env)
        assert refused.returncode == 3
        assert f"TLS certificate of {server.url + K3S_PATH} could not be verified" in refused.stderr
        trusted = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, "--ca-file", tls.ca_cert, env=env)
        assert trusted.returncode == 0, trusted.stderr
    finally:
        server.stop()


def test_pull_records_where_each_list_came_from_in_the_bundle(host, env, seeded_source, tmp_path):
    images = [image.source for image in seeded_source.corpus.images][:2]
    path = "/rancher/rancher/releases/download/v2.99.0/rancher-images.txt"
    body = "".join(f"{image}\n" for image in images).encode()
    host.serve(path, body)
    bundle = tmp_path / "bundle.tar.zst"
    result = run_mirror("pull", "--mode", "docker", "--rancher-version", "v2.99.0", "--no-registry-image",
                        "--no-charts", *seeded_source.mirror_args, "-o", bundle, "-q", env=env)
    assert result.returncode == 0, result.stderr
    assert f"mirror: rancher v2.99.0: fetched {host.url}{path}" in result.stderr
    inspected = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert inspected["topology"]["sources"]["rancher"] == {
        "origin": "fetched", "url": host.url + path, "sha256": hashlib.sha256(body).hexdigest()}
    assert inspected["topology"]["versions"] == {"rancher": "v2.99.0"}


RKE2 = "v1.99.2+rke2r1"
RKE2_ARM64_PATH = "/rancher/rke2/releases/download/v1.99.2%2Brke2r1/rke2-images-all.linux-arm64.txt"
RKE2_AMD64_PATH = "/rancher/rke2/releases/download/v1.99.2%2Brke2r1/rke2-images-all.linux-amd64.txt"


def test_rke2_arm64_platform_takes_the_arm64_list_and_records_it(host, env):
    host.serve(RKE2_ARM64_PATH, b"rancher/rke2-runtime:v1.99.2-rke2r1-arm64only\n")
    host.serve(RKE2_AMD64_PATH, b"rancher/rke2-runtime:v1.99.2-rke2r1\n")
    result = run_mirror("lists", "--mode", "rke2", "--rke2-version", RKE2, "--platform", "linux/arm64", "--json",
                        env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"][0] == "docker.io/rancher/rke2-runtime:v1.99.2-rke2r1-arm64only"
    assert report["sources"]["rke2"]["url"] == host.url + RKE2_ARM64_PATH
    assert report["list_arch"] == "arm64"
    assert RKE2_AMD64_PATH not in host.requests

    both = run_mirror("lists", "--mode", "rke2", "--rke2-version", RKE2, "--platform", "linux/amd64,linux/arm64",
                      "--json", env=env)  # a mixed cluster: the amd64 list, every image keeping both platforms
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["list_arch"] == "amd64"
    assert json.loads(both.stdout)["images"][0] == "docker.io/rancher/rke2-runtime:v1.99.2-rke2r1"


def test_rke2_arm64_list_missing_upstream_exits_2_naming_the_url(host, env):
    host.serve(RKE2_AMD64_PATH, b"rancher/rke2-runtime:v1.99.2-rke2r1\n")  # an old release: amd64 only
    result = run_mirror("pull", "--mode", "rke2", "--rke2-version", RKE2, "--platform", "linux/arm64",
                        "-o", "never.tar.zst", env=env)
    assert result.returncode == 2
    assert result.stderr == (f"mirror: error: --rke2-version {RKE2}: no such release upstream, or no linux/arm64 "
                             f"list in it ({host.url + RKE2_ARM64_PATH} answered 404)\n")


def test_the_built_in_rke2_list_is_amd64s_and_arm64_fetches_instead(host, env):
    built_in = run_mirror("lists", "--mode", "rke2", "--json", env=env)
    assert built_in.returncode == 0, built_in.stderr
    assert json.loads(built_in.stdout)["sources"]["rke2"]["origin"] == "built in"
    assert json.loads(built_in.stdout)["list_arch"] == "amd64"
    arm64 = run_mirror("lists", "--mode", "rke2", "--platform", "linux/arm64", "--offline-lists", env=env)
    assert arm64.returncode == 2
    assert ": no cached linux/arm64 image list, and --offline-lists forbids fetching " in arm64.stderr
    assert arm64.stderr.rstrip().endswith("rke2-images-all.linux-arm64.txt")


def kdm_with_k3s_release(version: str, low: str, high: str) -> bytes:
    return json.dumps({"K8sVersionRKESystemImages": {}, "k3s": {"releases": [
        {"version": version, "minChannelServerVersion": low, "maxChannelServerVersion": high,
         "serverArgs": {}}]}}).encode()


def test_warns_when_rancher_does_not_support_the_k3s_version(host, env):
    host.serve(K3S_PATH, K3S_LIST)
    host.serve(KDM_PATH, kdm_with_k3s_release(K3S, "v2.8.0", "v2.9.99"))
    result = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, "--no-registry-image", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[1:] == [
        f"mirror: warning: k3s {K3S} is not supported by Rancher v2.7.9: "
        "Rancher's metadata supports it on Rancher v2.8.0 to v2.9.99"]
    assert KDM_PATH in host.requests

    offline = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, "--offline-lists", env=env)
    assert offline.returncode == 0, offline.stderr  # the metadata was cached with the list
    assert "is not supported by Rancher v2.7.9" in offline.stderr
    assert host.requests.count(KDM_PATH) == 1


def test_no_warning_in_range_or_without_an_entry(host, env):
    host.serve(K3S_PATH, K3S_LIST)
    host.serve(KDM_PATH, kdm_with_k3s_release(K3S, "v2.7.0", "v2.7.99"))
    in_range = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, env=env)
    assert in_range.returncode == 0, in_range.stderr
    assert "warning" not in in_range.stderr
    host.serve(KDM_PATH, kdm_with_k3s_release("v1.99.0+k3s1", "v2.8.0", "v2.9.99"))
    other_entry = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, env=env)
    assert other_entry.returncode == 0, other_entry.stderr
    assert "warning" not in other_entry.stderr


def test_pull_records_the_arm64_rke2_list_in_the_bundle(host, env, seeded_source, tmp_path):
    arm64 = next(i.source for i in seeded_source.corpus.images if "linux/arm64/v8" in i.platforms)
    host.serve(RKE2_ARM64_PATH, f"{arm64}\n".encode())
    host.serve("/rancher/rancher/releases/download/v2.99.0/rancher-images.txt", f"{arm64}\n".encode())
    bundle = tmp_path / "bundle.tar.zst"
    result = run_mirror("pull", "--mode", "rke2", "--rke2-version", RKE2, "--rancher-version", "v2.99.0",
                        "--platform", "linux/arm64", "--no-registry-image", "--exclude", "cert-manager",
                        "--no-charts", "--no-files",
                        *seeded_source.mirror_args, "-o", bundle, "-q", env=env)
    assert result.returncode == 0, result.stderr
    topology = json.loads(run_mirror("inspect", bundle, "--json").stdout)["topology"]
    assert topology["list_arch"] == "arm64"
    assert topology["sources"]["rke2"]["url"] == host.url + RKE2_ARM64_PATH


def test_sync_run_takes_its_lists_as_pull_does_arm64_fetched_then_cached_offline(
        host, env, seeded_source, registry, tmp_path):
    arm64 = next(i for i in seeded_source.corpus.images if "linux/arm64/v8" in i.platforms)
    host.serve(RKE2_ARM64_PATH, f"{arm64.source}\n".encode())
    host.serve(RKE2_AMD64_PATH, b"rancher/rke2-runtime:v1.99.2-rke2r1\n")
    rancher_path = "/rancher/rancher/releases/download/v2.99.0/rancher-images.txt"
    host.serve(rancher_path, f"{arm64.source}\n".encode())
    env = {**env, "XDG_STATE_HOME": str(tmp_path / "state")}  # sync's lock
    args = ["sync", "run", "--mode", "rke2", "--rke2-version", RKE2, "--rancher-version", "v2.99.0",
            "--platform", "linux/arm64", "--no-registry-image", "--exclude", "cert-manager", "--no-charts", "--no-files",
            *seeded_source.mirror_args, "--to", registry.host, "--to-plain-http", "--dry-run", "--json", "-q"]

    offline = run_mirror(*args, "--offline-lists", env=env)
    assert offline.returncode == 2
    assert offline.stderr == (f"mirror: error: --rke2-version {RKE2}: no cached linux/arm64 image list, and "
                              f"--offline-lists forbids fetching {host.url + RKE2_ARM64_PATH}\n")
    assert host.requests == []

    fetched = run_mirror(*args, env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert [(i["source"], i["action"]) for i in json.loads(fetched.stdout)["images"]] == [(arm64.source, "copied")]
    assert f"mirror: rke2 {RKE2}: fetched {host.url + RKE2_ARM64_PATH} (sha256 " in fetched.stderr
    assert f"mirror: rancher v2.99.0: fetched {host.url + rancher_path} (sha256 " in fetched.stderr
    assert RKE2_ARM64_PATH in host.requests and RKE2_AMD64_PATH not in host.requests

    cached = run_mirror(*args, "--offline-lists", env=env)
    assert cached.returncode == 0, cached.stderr
    assert f"mirror: rke2 {RKE2}: cached {host.url + RKE2_ARM64_PATH} (sha256 " in cached.stderr
    assert json.loads(cached.stdout)["images"] == json.loads(fetched.stdout)["images"]
