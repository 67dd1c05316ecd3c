"""Which charts and files a mode carries, each found upstream and given the digest it must have.

Nothing large is fetched here: the charts' ``index.yaml``, the releases'
sha256sum files and (for RKE) Kubernetes metadata are, and a file no index
or checksum file lists is asked for with a HEAD, so a chart or file missing
upstream stops the pull (exit 2, naming its URL) before anything else is
fetched. With ``keep_going`` such an item is reported and left out.
"""

from __future__ import annotations

import hashlib
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable
from urllib.parse import quote, unquote, urlsplit

from .. import lists
from ..errors import MirrorError, UsageError
from ..lists.releases import ReleaseLists, releases_url
from .checksums import MAX_SUMS, digest_of, parse_sums
from .fetcher import KitFetcher
from .helm_index import MAX_INDEX, chart_location
from .hosts import jetstack_charts_url, rancher_charts_url, raw_url
from .items import CHART, FILE, KitItem

LOOKUPS = 8  # index, checksum and HEAD requests at once
K3S_BINARY = {"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}
RKE2_ARCHES = ("amd64", "arm64", "s390x")
RKE_ARCHES = ("amd64", "arm64", "arm")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass
class KitOptions:
    charts: bool = True
    files: bool = True
    rancher_chart_repo: str = "stable"
    extra_charts: list[str] = field(default_factory=list)  # REPO_URL/NAME@VERSION
    extra_files: list[str] = field(default_factory=list)  # URL[#sha256=HEX]
    with_airgap_images: bool = False
    offline_lists: bool = False  # the RKE release is read from built-in data, never Rancher's metadata
    keep_going: bool = False


@dataclass
class KitPlan:
    fetcher: KitFetcher
    items: list[KitItem] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # item -> why it is left out (keep_going)
    causes: dict[str, MirrorError] = field(default_factory=dict)


Step = tuple[str, Callable[[], KitItem]]  # what is looked up (for --keep-going's report), and the look-up


def plan_kit(mode: str | None, versions: dict[str, str], arches: list[str], options: KitOptions,
             fetcher: KitFetcher) -> KitPlan:
    """The items of ``mode`` at the topology's ``versions`` for ``arches``, plus --chart and --file ones."""
    finder = _Finder(fetcher)
    steps: list[Step] = []
    if mode is not None and options.charts:
        rancher = versions["rancher"].removeprefix("v")  # the chart's version is Rancher's, without the v
        steps.append((f"chart rancher {rancher}", lambda: finder.chart(
            rancher_charts_url(options.rancher_chart_repo), "rancher", rancher)))
        if "cert-manager" in versions:
            cert_manager = versions["cert-manager"]
            steps.append((f"chart cert-manager {cert_manager}", lambda: finder.chart(
                jetstack_charts_url(), "cert-manager", cert_manager)))
            steps.append((f"cert-manager.crds.yaml {cert_manager}", lambda: finder.unlisted(
                f"{releases_url()}/cert-manager/cert-manager/releases/download/{quote(cert_manager, safe='')}"
                "/cert-manager.crds.yaml", "cert-manager.crds.yaml", cert_manager, "cert-manager")))
    if mode is not None and options.files:
        for arch in arches:
            if mode == "k3s":
                steps += _k3s(finder, versions["k3s"], arch, options)
            elif mode == "rke2":
                steps += _rke2(finder, versions["rke2"], arch, options)
            elif mode == "rke":
                steps += _rke(finder, versions, arch, options)
    for spec in options.extra_charts:
        steps.append((f"--chart {spec}", lambda s=spec: finder.chart(*_chart_spec(s))))
    for spec in options.extra_files:
        steps.append((f"--file {spec}", lambda s=spec: _extra_file(finder, s)))
    plan = KitPlan(fetcher)
    # Each look-up is a round trip or two to a far host: all at once, then taken in order, so the
    # first item that fails is the one named
    with ThreadPoolExecutor(LOOKUPS) as pool:
        looked_up = [(what, pool.submit(step)) for what, step in steps]
    for what, done in looked_up:
        try:
            plan.items.append(done.result())
        except MirrorError as exc:
            if not options.keep_going:
                raise
            plan.failures[what], plan.causes[what] = str(exc), exc
    return _once(plan)


def _once(plan: KitPlan) -> KitPlan:
    """An item named twice (--chart of a chart the mode carries) is carried once."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for item in plan.items:
        key = (item.repository, item.tag)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    plan.items = kept
    return plan


class _Finder:
    """Finds items upstream; each index or checksum file is fetched once per run, by the first look-up
    that needs it (look-ups run at once: the others wait for it)."""

    def __init__(self, fetcher: KitFetcher):
        self.fetcher = fetcher
        self._documents: dict[str, Future[bytes]] = {}
        self._lock = threading.Lock()

    def document(self, url: str, what: str, cap: int) -> bytes:
        with self._lock:
            mine = url not in self._documents
            if mine:
                self._documents[url] = Future()
        if mine:
            try:
                self._documents[url].set_result(self.fetcher.document(url, what, cap))
            except BaseException as exc:
                self._documents[url].set_exception(exc)
        return self._documents[url].result()

    def chart(self, repository: str, name: str, version: str) -> KitItem:
        index_url = f"{repository}/index.yaml"
        index = self.document(index_url, f"chart {name} {version}", MAX_INDEX)
        url, digest = chart_location(index, index_url, name, version)
        return KitItem(CHART, name, version, url, "charts", digest, index_url if digest else None)

    def listed(self, base: str, name: str, sums_name: str, version: str, folder: str,
               executable: bool = False) -> KitItem:
        """A release asset, checked against the release's own sha256sum file."""
        sums_url = f"{base}/{sums_name}"
        sums = parse_sums(self.document(sums_url, f"{folder} {version}", MAX_SUMS), sums_url)
        return KitItem(FILE, name, version, f"{base}/{name}", folder, digest_of(sums, name, sums_url), sums_url,
                       executable)

    def unlisted(self, url: str, name: str, version: str, folder: str, sha256: str | None = None,
                 executable: bool = False) -> KitItem:
        """A file no checksum file lists: asked for with a HEAD now, its digest recorded as served."""
        self.fetcher.exists(url, f"{folder} {version}")
        return KitItem(FILE, name, version, url, folder, sha256, "--file" if sha256 else None, executable)

    def sums_file(self, base: str, sums_name: str, version: str, folder: str) -> KitItem:
        """The sha256sum file itself, carried for the installer (RKE2's install.sh checks the tarball with it)."""
        sums_url = f"{base}/{sums_name}"
        body = self.document(sums_url, f"{folder} {version}", MAX_SUMS)  # a malformed one is refused by listed()
        return KitItem(FILE, sums_name, version, sums_url, folder, hashlib.sha256(body).hexdigest(), sums_url)


def _k3s(finder: _Finder, version: str, arch: str, options: KitOptions) -> list[Step]:
    if arch not in K3S_BINARY:
        raise UsageError(f"--platform linux/{arch}: K3s publishes no binary for it ({', '.join(K3S_BINARY)})")
    base = f"{releases_url()}/k3s-io/k3s/releases/download/{quote(version, safe='')}"
    sums = f"sha256sum-{arch}.txt"
    names = [K3S_BINARY[arch]] + ([f"k3s-airgap-images-{arch}.tar.zst"] if options.with_airgap_images else [])
    install = f"{raw_url()}/k3s-io/k3s/{quote(version, safe='')}/install.sh"
    return [
        *((f"k3s {version} {name}", lambda n=name: finder.listed(base, n, sums, version, "k3s", n == names[0]))
          for name in names),
        (f"k3s {version} {sums}", lambda: finder.sums_file(base, sums, version, "k3s")),
        (f"k3s {version} install.sh", lambda: finder.unlisted(install, "install.sh", version, "k3s", executable=True)),
    ]


def _rke2(finder: _Finder, version: str, arch: str, options: KitOptions) -> list[Step]:
    if arch not in RKE2_ARCHES:
        raise UsageError(f"--platform linux/{arch}: RKE2 publishes no release for it ({', '.join(RKE2_ARCHES)})")
    base = f"{releases_url()}/rancher/rke2/releases/download/{quote(version, safe='')}"
    sums = f"sha256sum-{arch}.txt"
    names = [f"rke2.linux-{arch}.tar.gz"] + ([f"rke2-images.linux-{arch}.tar.zst"] if options.with_airgap_images
                                             else [])
    install = f"{raw_url()}/rancher/rke2/{quote(version, safe='')}/install.sh"
    return [
        *((f"rke2 {version} {name}", lambda n=name: finder.listed(base, n, sums, version, "rke2")) for name in names),
        (f"rke2 {version} {sums}", lambda: finder.sums_file(base, sums, version, "rke2")),
        (f"rke2 {version} install.sh", lambda: finder.unlisted(install, "install.sh", version, "rke2",
                                                               executable=True)),
    ]


def _rke(finder: _Finder, versions: dict[str, str], arch: str, options: KitOptions) -> list[Step]:
    if arch not in RKE_ARCHES:
        raise UsageError(f"--platform linux/{arch}: RKE publishes no binary for it ({', '.join(RKE_ARCHES)})")

    def binary() -> KitItem:
        release = rke_release(finder, versions["kubernetes"], versions["rancher"], options.offline_lists)
        base = f"{releases_url()}/rancher/rke/releases/download/{quote(release, safe='')}"
        return finder.listed(base, f"rke_linux-{arch}", "sha256sum.txt", release, "rke", executable=True)

    return [(f"rke_linux-{arch} for {versions['kubernetes']}", binary)]


def rke_release(finder: _Finder, kubernetes: str, rancher: str, offline: bool) -> str:
    """The RKE release that brought ``kubernetes``: built in, else Rancher's metadata (``minRKEVersion``),
    cached as the image lists are (``--offline-lists`` reads the cache only)."""
    built_in = lists.kit_settings().get("rke_releases", {})
    if kubernetes in built_in:
        return built_in[kubernetes]
    return ReleaseLists(offline=offline, ca_file=finder.fetcher.ca_file).rke_release(kubernetes, rancher)


def _chart_spec(spec: str) -> tuple[str, str, str]:
    """``REPO_URL/NAME@VERSION`` -> (repository URL, name, version)."""
    where, _, version = spec.rpartition("@")
    repository, _, name = where.rpartition("/")
    if not version or not name or not repository.startswith(("https://", "http://")):
        raise UsageError(f"--chart {spec!r}: expected REPO_URL/NAME@VERSION, e.g. "
                         "https://charts.rancher.io/rancher-backup@104.0.0")
    return repository.rstrip("/"), name, version


def _extra_file(finder: _Finder, spec: str) -> KitItem:
    """``URL[#sha256=HEX]``: a GitHub release asset takes its release's tag as version, anything else ``latest``."""
    parts = urlsplit(spec)
    url = parts._replace(fragment="").geturl()
    sha256 = None
    if parts.fragment:
        sha256 = parts.fragment.removeprefix("sha256=").lower()
        if not parts.fragment.startswith("sha256=") or not _HEX64.fullmatch(sha256):
            raise UsageError(f"--file {spec!r}: the fragment must be #sha256=<64 hex digits>")
    path = PurePosixPath(unquote(parts.path))
    if parts.scheme not in ("https", "http") or not path.name:
        raise UsageError(f"--file {spec!r}: expected an http(s) URL naming a file")
    version = path.parent.name if path.parent.parent.name == "download" else "latest"
    return finder.unlisted(url, path.name, version, "files", sha256)
