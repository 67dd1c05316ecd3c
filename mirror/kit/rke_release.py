"""Which RKE release to carry for a Kubernetes version: one whose own metadata supports that exact version.

An ``rke`` binary knows the Kubernetes versions of the Kontainer Driver
Metadata (KDM) snapshot built into it (the ``data/data.json`` of its release
tag): a version is usable when it has system images there and its
``K8sVersionInfo`` entry neither sets ``minRKEVersion`` above the release nor
``deprecateRKEVersion`` at or below it (RKE's metadata/metadata.go).
Rancher's live KDM says which RKE releases are meant for a Kubernetes minor
(``K8sVersionInfo["v1.24"]``: ``minRKEVersion`` .. ``maxRKEVersion``; since
v1.23 there are no per-patch entries, and a minor's ``minRKEVersion`` is older
than most of its patches). So: the range from Rancher's KDM, the newest
stable RKE tag in it (GitHub's tag list), and that tag's own snapshot must
list the version, else exit 2 naming it. The answer is cached as the image
lists are; ``--offline-lists`` reads the cache only. ``--rke-version`` names
the release instead (the operator's): only its own metadata is checked.
``MIRROR_GITHUB_API_URL`` replaces https://api.github.com (the tag list).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from urllib.parse import quote

from ..errors import UsageError
from ..lists.releases import ReleaseLists, kdm_branch, kdm_url, read_cached, version_key, write_cached
from .hosts import raw_url

GITHUB_API = "https://api.github.com"
_STABLE_TAG = re.compile(r"refs/tags/(v\d+\.\d+\.\d+)")
_TAG = re.compile(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?")  # an RKE release, a pre-release too


def github_api_url() -> str:
    return os.environ.get("MIRROR_GITHUB_API_URL", GITHUB_API).rstrip("/")


def rke_release_for(lists: ReleaseLists, kubernetes: str, rancher: str, chosen: str | None = None) -> str:
    """``v1.4.3``: ``chosen`` (``--rke-version``) if its built-in metadata supports ``kubernetes``, else the
    newest stable RKE release Rancher's metadata allows for ``kubernetes``'s minor whose metadata does; cached."""
    option = f"--kubernetes-version {kubernetes}"
    if not re.fullmatch(r"v\d+\.\d+\.\d+-rancher\d+(-\d+)?", kubernetes):
        raise UsageError(f"{option}: not an RKE Kubernetes version (like v1.24.4-rancher1-1)")
    if chosen is not None and not _TAG.fullmatch(chosen):
        raise UsageError(f"--rke-version {chosen!r}: not an RKE release tag (like v1.4.3)")
    if chosen:
        where = _snapshot_url(chosen)
        source_id, cache_name = f"{where}#K8sVersionRKESystemImages/{kubernetes}", f"{kubernetes}@{chosen}.txt"
    else:
        where, tags = _kdm(rancher), f"{github_api_url()}/repos/rancher/rke/git/matching-refs/tags/v"
        source_id, cache_name = f"{where}#rke-release/{kubernetes} {tags} {raw_url()}", f"{kubernetes}.txt"
    cached = read_cached(lists.cache / "rke-release" / cache_name, source_id)
    if cached is not None and _TAG.fullmatch(cached[0].strip()):
        return cached[0].strip()
    if lists.offline:
        checked = f" checked against --rke-version {chosen}" if chosen else ""
        raise UsageError(f"{option}: no built-in or cached RKE release for it{checked}, and --offline-lists "
                         f"forbids reading {where}")
    if chosen:
        release, body = chosen, lists.get(where, f"--rke-version {chosen}", "no such RKE release")
        why_not = _unsupported(_json(body, where), chosen, kubernetes)
        if why_not:
            raise UsageError(f"--rke-version {chosen} does not support {option}: its metadata {why_not} ({where})")
    else:
        release, body = _newest_supporting(lists, where, tags, kubernetes)
    write_cached(lists.cache / "rke-release" / cache_name, source_id, hashlib.sha256(body).hexdigest(), f"{release}\n")
    return release


def _kdm(rancher: str) -> str:
    """Rancher's metadata for ``rancher``'s minor."""
    branch = kdm_branch(rancher)
    if not branch:
        raise UsageError(f"--rancher-version {rancher}: not a Rancher 2.x version, whose metadata names the "
                         "RKE releases of a Kubernetes version")
    return f"{kdm_url()}/{branch}/data.json"


def _newest_supporting(lists: ReleaseLists, kdm: str, tags: str, kubernetes: str) -> tuple[str, bytes]:
    """The newest stable RKE tag in the range Rancher's metadata allows whose metadata supports ``kubernetes``,
    and that metadata."""
    option = f"--kubernetes-version {kubernetes}"
    low, high = _allowed_range(_json(lists.get(kdm, "Kontainer Driver Metadata", "no metadata for that Rancher "
                                                                                 "minor"), kdm), kdm, kubernetes)
    listed = lists.get(tags, "RKE releases", "no such repository",
                       "; name the release with --rke-version (docs/kit.md), or run again then: the answer is cached")
    within = [tag for tag in _stable_tags(listed, tags)
              if version_key(low) <= version_key(tag) and (high is None or version_key(tag) <= version_key(high))]
    span = f"RKE {low} to {high}" if high else f"RKE {low} or later"
    if not within:
        raise UsageError(f"{option}: Rancher's metadata ({kdm}) allows {span} for it, and {tags} lists no such "
                         "release")
    release = max(within, key=version_key)
    body = lists.get(_snapshot_url(release), f"RKE {release} metadata", "no data/data.json at that tag")
    why_not = _unsupported(_json(body, _snapshot_url(release)), release, kubernetes)
    if why_not:
        raise UsageError(f"{option}: the metadata of RKE {release}, the newest release of the {span} Rancher's "
                         f"metadata allows for it, {why_not} ({_snapshot_url(release)}); no RKE release supports "
                         "it yet")
    return release, body


def _snapshot_url(release: str) -> str:
    """The metadata built into RKE ``release``'s binary: data/data.json at its tag."""
    return f"{raw_url()}/rancher/rke/{quote(release, safe='')}/data/data.json"


def _json(body: bytes, url: str):
    try:
        return json.loads(body)
    except ValueError:
        raise UsageError(f"{url}: not JSON") from None


def _info(data, url: str) -> dict:
    """``K8sVersionInfo`` of a data.json, which must also have ``K8sVersionRKESystemImages``."""
    if not (isinstance(data, dict) and isinstance(data.get("K8sVersionRKESystemImages"), dict)):
        raise UsageError(f"{url}: not Kontainer Driver Metadata (no K8sVersionRKESystemImages)")
    info = data.get("K8sVersionInfo")
    return info if isinstance(info, dict) else {}


def _bound(entry, name: str, url: str, key: str) -> str | None:
    """``entry[name]`` (an RKE version like ``1.3.13-rc0``) as ``v1.3.13``; None when absent."""
    value = entry.get(name) if isinstance(entry, dict) else None
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _TAG.fullmatch("v" + value.removeprefix("v")):
        raise UsageError(f"{url}: {key}.{name} {str(value)[:40]!r} is not a release version")
    return "v" + value.removeprefix("v").split("-", 1)[0]


def _allowed_range(data, url: str, kubernetes: str) -> tuple[str, str | None]:
    """(lowest, highest or None) RKE release Rancher's metadata allows for ``kubernetes``, which it must have."""
    info = _info(data, url)
    if kubernetes not in data["K8sVersionRKESystemImages"]:
        known = sorted(data["K8sVersionRKESystemImages"], key=version_key)
        raise UsageError(f"--kubernetes-version {kubernetes}: not in {url}; it has {', '.join(known[-5:]) or 'none'}"
                         + (" ..." if len(known) > 5 else ""))
    minor = ".".join(kubernetes.split(".")[:2])
    lows = [b for b in (_bound(info.get(minor), "minRKEVersion", url, minor),
                        _bound(info.get(kubernetes), "minRKEVersion", url, kubernetes)) if b]
    high = _bound(info.get(minor), "maxRKEVersion", url, minor)
    return max(lows, key=version_key, default="v0.0.0"), high


def _stable_tags(body: bytes, url: str) -> list[str]:
    """``v1.4.3`` ... from GitHub's matching-refs answer; pre-releases (``-rc1``) left out."""
    refs = _json(body, url)
    if not isinstance(refs, list):
        raise UsageError(f"{url}: not a list of tags")
    return [m.group(1) for ref in refs if isinstance(ref, dict) and isinstance(ref.get("ref"), str)
            and (m := _STABLE_TAG.fullmatch(ref["ref"]))]


def _unsupported(data, release: str, kubernetes: str) -> str | None:
    """Why RKE ``release``, built with ``data``, does not support ``kubernetes`` (the rule of RKE's
    metadata/metadata.go); None if it does."""
    info = _info(data, "data/data.json").get(kubernetes)
    if kubernetes not in data["K8sVersionRKESystemImages"]:
        return "does not list it"
    low = _bound(info, "minRKEVersion", "data/data.json", kubernetes)
    if low and version_key(release) < version_key(low):
        return f"needs RKE {low} or later for it"
    deprecated = _bound(info, "deprecateRKEVersion", "data/data.json", kubernetes)
    if deprecated and version_key(release) >= version_key(deprecated):
        return f"deprecates it since RKE {deprecated}"
    return None
