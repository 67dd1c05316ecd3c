"""``--downstream-versions``: of Rancher's per-Kubernetes-version images, keep only the versions a site runs.

Rancher's rancher-images.txt names, for every K3s, RKE2 and RKE release
Rancher can provision a downstream cluster at or upgrade one to, the images
that do it: about a third of the list, most of it never used by one site.

An image is such a per-version image when BOTH its repository is one of
PER_VERSION_REPOSITORIES and its tag is a Kubernetes release tag
(``v1.24.4-k3s1``, ``v1.24.4-rke2r1``, ``v1.24.4-rke2r1-build20220817``,
``v1.24.4-rancher1``: the release's ``+`` spelled ``-``, as tags must). The tag
alone would take etcd's ``hardened-etcd:v3.5.4-k3s1`` or Istio's
``istio-installer:1.14.3-rancher1`` for a Kubernetes release; the repository
alone a tag that names none. A per-version repository Rancher adds later stays
whole until it is named here: carried, never lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError
from ..model.reference import Reference

OPTION = "--downstream-versions"
PER_VERSION_REPOSITORIES = frozenset({
    "rancher/system-agent-installer-k3s",  # installs K3s on a node of a cluster Rancher provisions
    "rancher/system-agent-installer-rke2",  # the same for RKE2
    "rancher/k3s-upgrade",  # system-upgrade-controller's plan image: upgrades a cluster to this release
    "rancher/rke2-upgrade",
    "rancher/rke2-runtime",  # an RKE2 release's own binaries and Kubernetes
    "rancher/hardened-kubernetes",
    "rancher/hyperkube",  # RKE's Kubernetes
})
_RELEASE_TAG = re.compile(r"v1\.([0-9]+)\.([0-9]+)-(k3s|rke2r|rancher)([0-9]+)(?:-build[0-9]{8})?")
# v1.30, v1.30.4, v1.30.4+k3s1 (or -k3s1, as in tags), v1.30.4+rke2r1, RKE's v1.30.4-rancher1-1; v optional.
_VERSION = re.compile(r"v?1\.([0-9]+)(?:\.([0-9]+)(?:[-+](k3s|rke2r|rancher)([0-9]+)(-[0-9]+)?)?)?")


@dataclass(frozen=True)
class Release:
    """The Kubernetes release a per-version image is for."""

    minor: int
    patch: int
    flavour: str  # k3s, rke2r or rancher (RKE)
    revision: int


@dataclass(frozen=True)
class Version:
    """A version to keep: a minor (v1.30), a patch (v1.30.4) or one release (v1.30.4+k3s1)."""

    text: str  # as the user wrote it
    minor: int
    patch: int | None = None
    flavour: str | None = None
    revision: int | None = None

    @classmethod
    def parse(cls, text: str) -> Version:
        found = _VERSION.fullmatch(text)
        if not found or (found[5] and found[3] != "rancher"):  # only RKE's names end in -N after the revision
            raise UsageError(f"{OPTION} {text}: not a Kubernetes version (e.g. v1.30, v1.30.4, v1.30.4+k3s1, "
                             "v1.30.4+rke2r1)")
        minor, patch, flavour, revision = found[1], found[2], found[3], found[4]
        return cls(text, int(minor), int(patch) if patch else None, flavour,
                   int(revision) if revision else None)

    def includes(self, release: Release) -> bool:
        return (self.minor == release.minor and self.patch in (None, release.patch)
                and self.flavour in (None, release.flavour) and self.revision in (None, release.revision))


def parse_versions(values: list[str]) -> list[Version]:
    """The versions of ``--downstream-versions`` (repeatable, each comma-separated), in order, once each."""
    texts = [item for value in values for item in (v.strip() for v in value.split(",")) if item]
    if not texts:
        raise UsageError(f"{OPTION}: no version given (e.g. {OPTION} v1.30,v1.31)")
    return [Version.parse(text) for text in dict.fromkeys(texts)]


def release_of(ref: Reference) -> Release | None:
    """The release ``ref`` is a per-version image of; None for every other image."""
    found = _RELEASE_TAG.fullmatch(ref.tag or "") if ref.repository in PER_VERSION_REPOSITORIES else None
    return Release(int(found[1]), int(found[2]), found[3], int(found[4])) if found else None


def own_version(version: str) -> Version | None:
    """A topology's K3s, RKE2 or RKE version as a Version to keep; None if it names no Kubernetes release."""
    try:
        return Version.parse(version)
    except UsageError:
        return None


def trim(images: list[Reference], wanted: list[Version], also_kept: list[Version],
         list_name: str) -> tuple[list[Reference], list[Reference]]:
    """(kept, removed): the per-version images of neither ``wanted`` nor ``also_kept`` go, all others stay.

    A wanted version no image of ``list_name`` is for is refused: a typo (v1.3)
    would otherwise trim every version away. ``also_kept`` is not checked.
    """
    releases = [(ref, release_of(ref)) for ref in images]
    present = [r for _, r in releases if r is not None]
    missing = [v.text for v in wanted if not any(v.includes(r) for r in present)]
    if missing:
        minors = sorted({r.minor for r in present})
        has = f"it has v1.{minors[0]} to v1.{minors[-1]}" if minors else "it has none"
        raise UsageError(f"{OPTION} {', '.join(missing)}: no per-Kubernetes-version image of "
                         f"{'it' if len(missing) == 1 else 'them'} in {list_name} ({has})")
    kept, removed = [], []
    for ref, release in releases:
        keep = release is None or any(v.includes(release) for v in (*wanted, *also_kept))
        (kept if keep else removed).append(ref)
    return kept, removed
