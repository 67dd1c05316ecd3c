"""Image lists for versions that are not built in: fetched from the official releases, then cached.

K3s, RKE2 and Rancher publish their image lists as release assets; RKE's
system images are in Rancher's Kontainer Driver Metadata (KDM, one data.json
per Rancher minor); cert-manager's images follow from its version. A fetched
list is checked line by line before it is cached, under the user's cache dir,
with the URL and the sha256 of what was served as its first lines, so later
runs (and ``--offline-lists`` ones) read it without the network.
``MIRROR_RELEASES_URL``, ``MIRROR_KDM_URL`` and ``MIRROR_K3S_CHANNEL_URL`` /
``MIRROR_RKE2_CHANNEL_URL`` replace the hosts (tests serve them on loopback).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import httpx

from .errors import AuthError, MirrorError, UsageError
from .imagelist import ListSource, parse_images_text
from .model.reference import Reference
from .registry.settings import RegistrySettings
from .registry.transport import tls_context

RELEASE_ASSETS = {  # component -> release asset under the releases host
    "k3s": "k3s-io/k3s/releases/download/{version}/k3s-images.txt",
    "rke2": "rancher/rke2/releases/download/{version}/rke2-images-all.linux-amd64.txt",
    "rancher": "rancher/rancher/releases/download/{version}/rancher-images.txt",
}
CHANNELS = {  # component -> (environment variable, the stable channel, which redirects to the release)
    "k3s": ("MIRROR_K3S_CHANNEL_URL", "https://update.k3s.io/v1-release/channels/stable"),
    "rke2": ("MIRROR_RKE2_CHANNEL_URL", "https://update.rke2.io/v1-release/channels/stable"),
}
CERT_MANAGER_IMAGES = ("controller", "webhook", "cainjector", "acmesolver", "startupapicheck")
# `rke config --system-images` leaves the Windows pause image out; so do the built-in lists.
RKE_SKIPPED_FIELDS = {"windowsPodInfraContainer"}
MAX_DOWNLOAD = 64 << 20  # KDM's data.json is a few MB; a list is a few KB
_VERSION = re.compile(r"v?\d+\.\d+[0-9A-Za-z.+_-]*")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mirror" / "lists"


def releases_url() -> str:
    return os.environ.get("MIRROR_RELEASES_URL", "https://github.com").rstrip("/")


def kdm_url() -> str:
    return os.environ.get("MIRROR_KDM_URL", "https://releases.rancher.com/kontainer-driver-metadata").rstrip("/")


@dataclass
class ReleaseLists:
    """Lists of versions not built in: from the cache, else fetched (unless ``offline``)."""

    offline: bool = False
    ca_file: Path | None = None  # added to the system CAs (a proxy that re-signs TLS)
    cache_dir: Path | None = None  # default_cache_dir() unless given

    @property
    def cache(self) -> Path:
        return self.cache_dir or default_cache_dir()

    def cached_versions(self, component: str) -> list[str]:
        """Versions of ``component`` with a list in the cache, for ``mirror lists``."""
        directory = self.cache / component
        return sorted(p.stem for p in directory.glob("*.txt")) if directory.is_dir() else []

    def knows(self, component: str) -> bool:
        return component in RELEASE_ASSETS or component in ("kubernetes", "cert-manager")

    def images(self, component: str, option: str, version: str,
               rancher_version: str) -> tuple[list[Reference], ListSource]:
        """The images of ``component`` at ``version`` and where they came from."""
        if not _VERSION.fullmatch(version):
            raise UsageError(f"{option} {version}: not a release version")
        if component == "cert-manager":  # no list to fetch: the chart's images are named after the version
            return [Reference.parse(f"quay.io/jetstack/cert-manager-{name}:{version}")
                    for name in CERT_MANAGER_IMAGES], ListSource("generated")
        if component == "kubernetes":
            minor = re.fullmatch(r"v?2\.(\d+)(\.\d+)*(-.*)?", rancher_version)
            if not minor:
                raise UsageError(f"--rancher-version {rancher_version}: not a Rancher 2.x version, "
                                 "which RKE's system images are looked up by")
            url = f"{kdm_url()}/release-v2.{minor.group(1)}/data.json"
            source_id = f"{url}#K8sVersionRKESystemImages/{version}"
        else:
            url = source_id = f"{releases_url()}/{RELEASE_ASSETS[component].format(version=quote(version, safe=''))}"
        cache = self.cache / component / f"{version}.txt"
        cached = _read_cached(cache, source_id)
        if cached is not None:
            text, digest = cached
            return parse_images_text(text, str(cache)), ListSource("cached", source_id, digest)
        if self.offline:
            raise UsageError(f"{option} {version}: no built-in or cached image list, and --offline-lists "
                             f"forbids fetching {url}")
        body = self._get(url, f"{option} {version}")
        digest = hashlib.sha256(body).hexdigest()
        if component == "kubernetes":
            text = _rke_system_images(body, url, option, version)
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"{url}: not a text image list") from None
        images = parse_images_text(text, url)  # a malformed list is refused before it is cached
        _write_cached(cache, source_id, digest, text)
        return images, ListSource("fetched", source_id, digest)

    def latest(self, component: str, option: str) -> str:
        """The version the release channel calls stable (K3s, RKE2)."""
        if component not in CHANNELS:
            raise UsageError(f"{option} latest: only --k3s-version and --rke2-version know a latest release")
        variable, default = CHANNELS[component]
        url = os.environ.get(variable, default)
        if self.offline:
            raise UsageError(f"{option} latest: asks {url}, and --offline-lists forbids that")
        with self._client(follow_redirects=False) as client:
            response, _ = self._send(client, url, f"{option} latest")
        location = response.headers.get("location")
        if not response.is_redirect or not location:
            raise MirrorError(f"{option} latest: {url} answered {response.status_code}, not a redirect to a release")
        version = unquote(location.rstrip("/").rsplit("/", 1)[-1])
        if not _VERSION.fullmatch(version):
            raise MirrorError(f"{option} latest: {url} points to {location}, not a release")
        return version

    def _get(self, url: str, what: str) -> bytes:
        with self._client(follow_redirects=True) as client:
            response, body = self._send(client, url, what)
        if response.status_code == 404:
            raise UsageError(f"{what}: no such release upstream ({url} answered 404)")
        if response.status_code != 200:
            raise MirrorError(f"{what}: {url} answered {response.status_code}")
        return body

    def _client(self, *, follow_redirects: bool) -> httpx.Client:
        context = tls_context(RegistrySettings(ca_file=self.ca_file))  # system CAs plus --ca-file
        # trust_env: HTTPS_PROXY / NO_PROXY are honoured as for registries.
        return httpx.Client(verify=context, follow_redirects=follow_redirects, trust_env=True, timeout=60)

    @staticmethod
    def _send(client: httpx.Client, url: str, what: str) -> tuple[httpx.Response, bytes]:
        """The response and, for a 200, its body (bounded by MAX_DOWNLOAD)."""
        body = bytearray()
        try:
            with client.stream("GET", url) as response:
                if response.status_code == 200:
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > MAX_DOWNLOAD:
                            raise MirrorError(f"{what}: {url} serves more than {MAX_DOWNLOAD >> 20} MiB")
            return response, bytes(body)
        except httpx.HTTPError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
                cause = cause.__cause__ or cause.__context__
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise AuthError(f"{what}: TLS certificate of {url} could not be verified "
                                f"({cause.verify_message}); pass --ca-file with the CA that signed it") from None
            raise MirrorError(f"{what}: cannot fetch {url} ({exc or type(exc).__name__})") from None


def _rke_system_images(body: bytes, url: str, option: str, version: str) -> str:
    """The list `rke config --system-images --version V` prints, from KDM's data.json."""
    try:
        catalog = json.loads(body)["K8sVersionRKESystemImages"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{url}: not Kontainer Driver Metadata (no K8sVersionRKESystemImages)") from None
    images = catalog.get(version) if isinstance(catalog, dict) else None
    if not isinstance(images, dict):
        known = sorted(catalog) if isinstance(catalog, dict) else []
        raise UsageError(f"{option} {version}: not in {url}; it has {', '.join(known[-5:]) or 'none'}"
                         + (" ..." if len(known) > 5 else ""))
    names = [v for k, v in images.items() if k not in RKE_SKIPPED_FIELDS and isinstance(v, str) and v]
    return "".join(f"{name}\n" for name in dict.fromkeys(names))


def _read_cached(path: Path, source_id: str) -> tuple[str, str] | None:
    """(list text, sha256) of a cached list fetched from ``source_id``; None if there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    head = text.split("\n", 2)
    if len(head) < 3 or head[0] != f"# source: {source_id}" or not head[1].startswith("# sha256: "):
        return None  # another host's list (MIRROR_RELEASES_URL), or not ours
    return head[2], head[1].removeprefix("# sha256: ")


def _write_cached(path: Path, source_id: str, digest: str, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(f"# source: {source_id}\n# sha256: {digest}\n{text}", encoding="utf-8")
    os.replace(temp, path)  # a reader never sees half a list
