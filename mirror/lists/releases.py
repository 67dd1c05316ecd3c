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
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import httpx

from ..errors import AuthError, MirrorError, UsageError
from .imagelist import ListSource, parse_images_text
from ..model.numbers import ascii_int
from ..model.oci import Platform
from ..model.reference import Reference
from ..registry.settings import RegistrySettings
from ..registry.sender import tls_context
from ..safefiles import write_file

RELEASE_ASSETS = {  # component -> release asset under the releases host
    "k3s": "k3s-io/k3s/releases/download/{version}/k3s-images.txt",
    "rke2": "rancher/rke2/releases/download/{version}/rke2-images-all.linux-{arch}.txt",
    "rancher": "rancher/rancher/releases/download/{version}/rancher-images.txt",
}
CHANNELS = {  # component -> (environment variable, the stable channel, which redirects to the release)
    "k3s": ("MIRROR_K3S_CHANNEL_URL", "https://update.k3s.io/v1-release/channels/stable"),
    "rke2": ("MIRROR_RKE2_CHANNEL_URL", "https://update.rke2.io/v1-release/channels/stable"),
}
CERT_MANAGER_IMAGES = ("controller", "webhook", "cainjector", "acmesolver", "startupapicheck")
# `rke config --system-images` leaves the Windows pause image out; so do the built-in lists.
RKE_SKIPPED_FIELDS = {"windowsPodInfraContainer"}
ARCH_LISTS = {"rke2"}  # components whose release has one list per architecture
DEFAULT_ARCH = "amd64"  # the architecture of the built-in lists
MAX_DOWNLOAD = 64 << 20  # KDM's data.json is a few MB; a list is a few KB
_VERSION = re.compile(r"v?\d+\.\d+[0-9A-Za-z.+_-]*")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mirror" / "lists"


def list_arch(platforms: list[Platform]) -> str:
    """The architecture whose RKE2 list a run uses: the one --platform names, else amd64.

    With several architectures the amd64 list stays: it names the most images,
    and --platform keeps each image's other platforms.
    """
    arches = {p.architecture for p in platforms}
    return arches.pop() if len(arches) == 1 else DEFAULT_ARCH


def releases_url() -> str:
    return os.environ.get("MIRROR_RELEASES_URL", "https://github.com").rstrip("/")


def kdm_url() -> str:
    return os.environ.get("MIRROR_KDM_URL", "https://releases.rancher.com/kontainer-driver-metadata").rstrip("/")


def kdm_branch(rancher_version: str) -> str | None:
    """``release-v2.MINOR``, the metadata branch of a Rancher 2.x version; None for any other version."""
    minor = re.fullmatch(r"v?2\.(\d+)(\.\d+)*(-.*)?", rancher_version)
    return f"release-v2.{minor.group(1)}" if minor else None


@dataclass
class ReleaseLists:
    """Lists of versions not built in: from the cache, else fetched (unless ``offline``)."""

    offline: bool = False
    ca_file: Path | None = None  # added to the system CAs (a proxy that re-signs TLS)
    cache_dir: Path | None = None  # default_cache_dir() unless given
    arch: str = DEFAULT_ARCH  # of the lists in ARCH_LISTS (list_arch())

    @property
    def cache(self) -> Path:
        return self.cache_dir or default_cache_dir()

    def cached_versions(self, component: str) -> list[str]:
        """Versions of ``component`` with a list in the cache, for ``mirror lists``."""
        directory = self.cache / component
        return sorted(p.stem for p in directory.glob("*.txt")) if directory.is_dir() else []

    def knows(self, component: str) -> bool:
        return component in RELEASE_ASSETS or component in ("kubernetes", "cert-manager")

    def arch_of(self, component: str) -> str | None:
        """The architecture of ``component``'s list; None if it has one list for all."""
        return self.arch if component in ARCH_LISTS else None

    def takes_built_in(self, component: str) -> bool:
        """Whether a built-in list is the one wanted: not when it is for another architecture."""
        return self.arch_of(component) in (None, DEFAULT_ARCH)

    def images(self, component: str, option: str, version: str,
               rancher_version: str) -> tuple[list[Reference], ListSource]:
        """The images of ``component`` at ``version`` and where they came from."""
        if not _VERSION.fullmatch(version):
            raise UsageError(f"{option} {version}: not a release version")
        if component == "cert-manager":  # no list to fetch: the chart's images are named after the version
            return [Reference.parse(f"quay.io/jetstack/cert-manager-{name}:{version}")
                    for name in CERT_MANAGER_IMAGES], ListSource("generated")
        if component == "kubernetes":
            branch = kdm_branch(rancher_version)
            if not branch:
                raise UsageError(f"--rancher-version {rancher_version}: not a Rancher 2.x version, "
                                 "which RKE's system images are looked up by")
            url = f"{kdm_url()}/{branch}/data.json"
            source_id = f"{url}#K8sVersionRKESystemImages/{version}"
        else:
            asset = RELEASE_ASSETS[component].format(version=quote(version, safe=''), arch=quote(self.arch, safe=''))
            url = source_id = f"{releases_url()}/{asset}"
        other_arch = not self.takes_built_in(component)  # a list for another architecture than the built-in ones
        cache = self.cache / component / f"{version}.txt"
        if other_arch:
            cache = self.cache / component / f"linux-{self.arch}" / f"{version}.txt"
        cached = read_cached(cache, source_id)
        if cached is not None:
            text, digest = cached
            return parse_images_text(text, str(cache)), ListSource("cached", source_id, digest)
        if self.offline:
            which = f"cached linux/{self.arch}" if other_arch else "built-in or cached"
            raise UsageError(f"{option} {version}: no {which} image list, and --offline-lists "
                             f"forbids fetching {url}")
        missing = "no such release upstream"
        if other_arch:
            missing += f", or no linux/{self.arch} list in it"
        body = self.get(url, f"{option} {version}", missing)
        digest = hashlib.sha256(body).hexdigest()
        if component == "kubernetes":
            text = _rke_system_images(body, url, option, version)
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"{url}: not a text image list") from None
        images = parse_images_text(text, url)  # a malformed list is refused before it is cached
        write_cached(cache, source_id, digest, text)
        return images, ListSource("fetched", source_id, digest)

    def support_warnings(self, versions: dict[str, str], sources: dict[str, ListSource]) -> list[str]:
        """A line for a K3s/RKE2 version that Rancher's metadata says the Rancher version does not support.

        Checked only when either list came from a release (a pairing mirror
        does not carry built in), from the metadata of the Rancher minor:
        cached, else fetched unless offline. No metadata, or no entry for the
        version, is no warning; metadata that cannot be had is one line saying so.
        ``versions`` and ``sources``: a resolved topology's, component -> version and its list's source.
        """
        if "rancher" not in versions:
            return []
        rancher = versions["rancher"]
        warnings = []
        for component in ("k3s", "rke2"):
            if component not in versions:
                continue
            version = versions[component]
            if {sources[component].origin, sources["rancher"].origin}.isdisjoint(
                    {"fetched", "cached"}):
                continue
            try:
                supported = self._support_range(component, version, rancher)
            except MirrorError as exc:
                warnings.append(f"mirror: warning: cannot check {component} {version} against Rancher {rancher}: "
                                f"{exc}")
                continue
            if supported is None:
                continue
            low, high = supported
            if not version_key(low) <= version_key(rancher) <= version_key(high):
                warnings.append(f"mirror: warning: {component} {version} is not supported by Rancher {rancher}: "
                                f"Rancher's metadata supports it on Rancher {low} to {high}")
        return warnings

    def _support_range(self, component: str, version: str, rancher: str) -> tuple[str, str] | None:
        """(min, max) Rancher version for ``component`` ``version`` in KDM; None if it has no entry."""
        branch = kdm_branch(rancher)
        if not branch:
            return None  # KDM is per Rancher 2.x minor
        url = f"{kdm_url()}/{branch}/data.json"
        source_id = f"{url}#releases"
        cache = self.cache / "kdm" / f"{branch}.json"
        cached = read_cached(cache, source_id)
        try:
            ranges = json.loads(cached[0]) if cached else {}
        except ValueError:
            ranges = {}  # a damaged cache is fetched again
        if version not in ranges.get(component, {}) and not self.offline:
            # KDM gains releases after a Rancher release: a version it lacked may be there now.
            with self._client(follow_redirects=True) as client:
                response, body = self._send(client, url, "Kontainer Driver Metadata")
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise MirrorError(f"{url} answered {response.status_code}")
            ranges = _support_ranges(body, url)
            write_cached(cache, source_id, hashlib.sha256(body).hexdigest(), json.dumps(ranges, sort_keys=True))
        entry = ranges.get(component, {}).get(version)
        return tuple(entry) if entry else None

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

    def get(self, url: str, what: str, missing: str, hint: str = "") -> bytes:
        """The body of a 200; a 404 is UsageError saying ``missing``; a spent rate limit says until when, and
        ``hint`` (what else the user can do)."""
        with self._client(follow_redirects=True) as client:
            response, body = self._send(client, url, what)
        if response.status_code == 404:
            raise UsageError(f"{what}: {missing} ({url} answered 404)")
        spent = _limit_spent(response)
        if spent:
            raise MirrorError(f"{what}: {url} answered {response.status_code}: {spent}{hint}")
        if response.status_code != 200:
            raise MirrorError(f"{what}: {url} answered {response.status_code}")
        return body

    def _client(self, *, follow_redirects: bool) -> httpx.Client:
        return http_client(self.ca_file, follow_redirects=follow_redirects)

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
            raise fetch_error(exc, url, what) from None


_LAST_SECOND = 253402300799  # 9999-12-31 23:59:59 UTC: a later reset time is no time datetime can show


def _limit_spent(response: httpx.Response) -> str | None:
    """What a 403 or 429 saying its rate limit is spent (GitHub's API: ``x-ratelimit-remaining: 0``, 60
    requests an hour for an address without a token) says of it; None for any other answer."""
    headers = response.headers
    if response.status_code not in (403, 429) or ascii_int(headers.get("x-ratelimit-remaining", "")) != 0:
        return None
    limit = ascii_int(headers.get("x-ratelimit-limit", ""))
    reset = ascii_int(headers.get("x-ratelimit-reset", ""))
    until = ""
    if reset is not None and reset <= _LAST_SECOND:
        until = f" until {datetime.fromtimestamp(reset, timezone.utc):%Y-%m-%d %H:%M} UTC"
    return f"its rate limit{f' of {limit} requests' if limit is not None else ''} for this address is spent{until}"


def http_client(ca_file: Path | None, *, follow_redirects: bool) -> httpx.Client:
    """A client for release hosts: the system CAs plus ``ca_file``; HTTPS_PROXY / NO_PROXY honoured."""
    context = tls_context(RegistrySettings(ca_file=ca_file))
    return httpx.Client(verify=context, follow_redirects=follow_redirects, trust_env=True, timeout=60)


def fetch_error(exc: httpx.HTTPError, url: str, what: str) -> MirrorError:
    """The error to end on when ``url`` could not be fetched: AuthError for a TLS certificate refused."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return AuthError(f"{what}: TLS certificate of {url} could not be verified "
                         f"({cause.verify_message}); pass --ca-file with the CA that signed it")
    return MirrorError(f"{what}: cannot fetch {url} ({exc or type(exc).__name__})")


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


def _support_ranges(body: bytes, url: str) -> dict[str, dict[str, list[str]]]:
    """component -> version -> [min, max] Rancher version, from KDM's ``k3s`` and ``rke2`` releases."""
    try:
        data = json.loads(body)
    except ValueError:
        raise MirrorError(f"{url}: not Kontainer Driver Metadata (not JSON)") from None
    ranges: dict[str, dict[str, list[str]]] = {}
    for component in ("k3s", "rke2"):
        section = data.get(component) if isinstance(data, dict) else None
        releases = section.get("releases") if isinstance(section, dict) else None
        for release in releases if isinstance(releases, list) else []:
            if not isinstance(release, dict):
                continue
            bounds = [release.get("version"), release.get("minChannelServerVersion"),
                      release.get("maxChannelServerVersion")]
            if all(isinstance(b, str) and _VERSION.fullmatch(b) for b in bounds):
                ranges.setdefault(component, {})[bounds[0]] = bounds[1:]
    return ranges


def version_key(version: str) -> tuple[int, ...]:
    """major, minor, patch of a version (a pre-release counts as its release, as Rancher's range check does)."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-", 1)[0].split("+", 1)[0])[:3])


def read_cached(path: Path, source_id: str) -> tuple[str, str] | None:
    """(list text, sha256) of a cached list fetched from ``source_id``; None if there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    head = text.split("\n", 2)
    if len(head) < 3 or head[0] != f"# source: {source_id}" or not head[1].startswith("# sha256: "):
        return None  # another host's list (MIRROR_RELEASES_URL), or not ours
    return head[2], head[1].removeprefix("# sha256: ")


def write_cached(path: Path, source_id: str, digest: str, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, f"# source: {source_id}\n# sha256: {digest}\n{text}".encode())  # a reader never sees half a list
