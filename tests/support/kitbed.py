#!/usr/bin/env python3
"""Stand-ins for the kit's upstreams on loopback: GitHub releases, raw.githubusercontent.com, the chart repos.

``standard_upstream()`` serves, for the default versions of every mode,
generated small Helm charts (a real .tgz each, listed with its digest in an
``index.yaml``), fake binaries with the releases' sha256sum files, the
install scripts and cert-manager's CRDs; ``KitUpstream.env`` points
mirror's environment overrides (MIRROR_RELEASES_URL, MIRROR_RANCHER_CHARTS_URL,
MIRROR_JETSTACK_CHARTS_URL, MIRROR_RAW_URL, MIRROR_KDM_URL) at it. The tests
(tests/support/kit_fixtures.py) and scripts/demo.sh (``PYTHONPATH=tests python3 -m support.kitbed serve``)
use it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import signal
import sys
import tarfile
import threading
from dataclasses import dataclass, field
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import yaml

RANCHER, CERT_MANAGER, K3S, RKE2 = "2.7.9", "v1.11.0", "v1.24.4+k3s1", "v1.24.4+rke2r1"


def make_chart(name: str, version: str, extra: bytes = b"") -> bytes:
    """A valid Helm chart archive: NAME/Chart.yaml first, as `helm package` writes it; reproducible bytes."""
    files = {
        f"{name}/Chart.yaml": yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version,
                                              "appVersion": version, "description": f"stand-in {name}"}).encode(),
        f"{name}/values.yaml": b"replicas: 1\n" + extra,
        f"{name}/templates/configmap.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items()).encode()


class KitHost:
    """A loopback HTTP/1.1 server (connections kept alive, as GitHub's and the chart hosts' are) answering GET
    and HEAD from ``files`` (path -> body); records GET paths and counts connections."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.ranges = True  # answers Range requests (and says so), as GitHub's release storage does
        self.ranges_asked = 0
        self.connections = 0
        self.heads = 0
        # Called with a range's first byte between its answer's headers and body (it may wait): a number returned
        # is how many bytes of the body are sent before the connection is cut
        self.on_range: Callable[[int], int | None] | None = None
        self.refused: dict[str, tuple[int, dict[str, str]]] = {}  # path -> (status, headers) answered instead
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                host.connections += 1
                super().setup()

            def _answer(self, body_too: bool) -> None:
                if self.path in host.refused:
                    status, headers = host.refused[self.path]
                    self.send_response(status)
                    for name, value in {**headers, "Content-Length": "0"}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    return
                body = host.files.get(self.path)
                span = self.headers.get("Range", "")
                if body is not None and span.startswith("bytes=") and host.ranges:
                    first, _, last = span[len("bytes="):].partition("-")
                    start, end = int(first), min(int(last), len(body) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                    body = body[start:end + 1]
                else:
                    self.send_response(200 if body is not None else 404)
                if host.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body if body is not None else b"")))
                self.end_headers()
                if body_too and body is not None:
                    ranged = host.ranges and span.startswith("bytes=")
                    if ranged and host.on_range and (cut := host.on_range(start)) is not None:
                        body, self.close_connection = body[:cut], True
                    self.wfile.write(body)

            def do_GET(self):
                host.requests.append(self.path)
                host.ranges_asked += bool(self.headers.get("Range"))
                self._answer(True)

            def do_HEAD(self):
                host.heads += 1
                self._answer(False)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class KitUpstream:
    host: KitHost
    charts: dict[str, dict] = field(default_factory=dict)  # repo -> (name, version) -> (.tgz, what the index hashes)

    @property
    def env(self) -> dict[str, str]:
        url = self.host.url
        return {"MIRROR_RELEASES_URL": f"{url}/gh", "MIRROR_RANCHER_CHARTS_URL": f"{url}/rancher",
                "MIRROR_JETSTACK_CHARTS_URL": f"{url}/jetstack", "MIRROR_RAW_URL": f"{url}/raw",
                "MIRROR_KDM_URL": f"{url}/kdm", "MIRROR_GITHUB_API_URL": f"{url}/api", "NO_PROXY": "127.0.0.1"}

    def add_chart(self, repo: str, name: str, version: str, data: bytes | None = None,
                  digest_of: bytes | None = None) -> bytes:
        """Serve chart NAME-VERSION in ``repo``; the index gives the digest of ``digest_of`` (default: the chart)."""
        data = data if data is not None else make_chart(name, version)
        self.charts.setdefault(repo, {})[(name, version)] = (data, digest_of or data)
        self.host.files[f"/{repo}/{name}-{version}.tgz"] = data
        entries: dict[str, list] = {}
        for (chart, chart_version), (_, digested) in self.charts[repo].items():
            entries.setdefault(chart, []).append({
                "name": chart, "version": chart_version, "apiVersion": "v2",
                "urls": [f"{chart}-{chart_version}.tgz"], "digest": hashlib.sha256(digested).hexdigest()})
        self.host.files[f"/{repo}/index.yaml"] = yaml.safe_dump({"apiVersion": "v1", "entries": entries}).encode()
        return data

    def release(self, project: str, version: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.host.files[f"/gh/{project}/releases/download/{quote(version, safe='')}/{name}"] = data

    def raw(self, project: str, version: str, name: str, data: bytes) -> None:
        self.host.files[f"/raw/{project}/{quote(version, safe='')}/{name}"] = data

    def rke_release(self, tag: str, metadata: dict | None = None) -> bytes:
        """RKE release ``tag``: listed among rancher/rke's tags; with ``metadata`` (the KDM snapshot built
        into its binary) also its ``rke_linux-amd64`` (returned), sha256sum.txt and data/data.json."""
        refs_path = "/api/repos/rancher/rke/git/matching-refs/tags/v"
        refs = json.loads(self.host.files.get(refs_path, b"[]"))
        self.host.files[refs_path] = json.dumps(refs + [{"ref": f"refs/tags/{tag}"}]).encode()
        if metadata is None:
            return b""
        binary = {"rke_linux-amd64": f"\x7fELF stand-in rke {tag}\n".encode()}
        self.release("rancher/rke", tag, {**binary, "sha256sum.txt": sums(binary)})
        self.raw("rancher/rke", tag, "data/data.json", json.dumps(metadata).encode())
        return binary["rke_linux-amd64"]


def standard_upstream() -> KitUpstream:
    """A running stand-in with every mode's default kit."""
    upstream = KitUpstream(KitHost())
    upstream.add_chart("rancher", "rancher", RANCHER)
    upstream.add_chart("jetstack", "cert-manager", CERT_MANAGER)
    crds = b"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
    upstream.release("cert-manager/cert-manager", CERT_MANAGER, {"cert-manager.crds.yaml": crds})
    k3s = {"k3s": b"\x7fELF stand-in k3s amd64\n" * 64, "k3s-arm64": b"\x7fELF stand-in k3s arm64\n" * 64,
           "k3s-airgap-images-amd64.tar.zst": b"(\xb5/\xfd stand-in images\n" * 32}
    amd64 = {name: data for name, data in k3s.items() if "arm64" not in name}
    upstream.release("k3s-io/k3s", K3S, {**k3s, "sha256sum-amd64.txt": sums(amd64),
                                         "sha256sum-arm64.txt": sums({"k3s-arm64": k3s["k3s-arm64"]})})
    upstream.raw("k3s-io/k3s", K3S, "install.sh", b"#!/bin/sh\necho stand-in k3s installer\n")
    rke2 = {"rke2.linux-amd64.tar.gz": gzip.compress(b"stand-in rke2", mtime=0)}
    upstream.release("rancher/rke2", RKE2, {**rke2, "sha256sum-amd64.txt": sums(rke2)})
    upstream.raw("rancher/rke2", RKE2, "install.sh", b"#!/bin/sh\necho stand-in rke2 installer\n")
    rke = {"rke_linux-amd64": b"\x7fELF stand-in rke\n" * 16}
    upstream.release("rancher/rke", "v1.3.15", {**rke, "sha256sum.txt": sums(rke)})
    return upstream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the standard stand-in until killed; print its environment as JSON")
    parser.parse_args()
    upstream = standard_upstream()
    print(json.dumps(upstream.env), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        upstream.host.stop()


if __name__ == "__main__":
    main()
