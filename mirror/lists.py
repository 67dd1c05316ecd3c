"""Topology image lists: which images a Rancher air-gap install needs.

All names live in data under ``manifests/``: one file per
component version in Rancher's ``rancher-images.txt`` format, and
``manifests/topologies.json`` saying which components each mode uses and
their default versions. Adding a version means adding a file. A version with
no file comes from its release (release_lists.py) when the caller allows it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import downstream
from .errors import UsageError
from .imagelist import ListSource, parse_images_file
from .model.reference import Reference

if TYPE_CHECKING:
    from .model.oci import Platform
    from .release_lists import ReleaseLists

# An installed package carries manifests/ inside it (pyproject maps it there);
# in the repository it is the top-level data folder.
_PACKAGE_DIR = Path(__file__).resolve().parent
MANIFESTS_DIR = next(d for d in (_PACKAGE_DIR / "manifests", _PACKAGE_DIR.parent / "manifests") if d.is_dir())
REGISTRY_COMPONENT = "registry"  # the bastion registry's image, opted out by flag
DOWNSTREAM_CATALOG = "rancher"  # the component whose list names every downstream release's images
LOCAL_CLUSTER_COMPONENTS = ("k3s", "rke2", "kubernetes")  # the version of the cluster Rancher runs on


BUILT_IN = ListSource("built in")


@dataclass
class Topology:
    mode: str
    versions: dict[str, str] = field(default_factory=dict)  # component -> version used
    sources: dict[str, ListSource] = field(default_factory=dict)  # component -> where its list came from
    list_arch: str | None = None  # the architecture of its RKE2 list; None when no list depends on one
    downstream_versions: list[str] | None = None  # --downstream-versions as given; None when not trimmed


@dataclass
class Selection:
    """The images to mirror, the topology they came from, and what --downstream-versions left out."""

    images: list[Reference]
    topology: Topology | None
    trimmed: list[Reference] = field(default_factory=list)  # images the list would have had untrimmed


@lru_cache(maxsize=None)
def _catalog() -> dict[str, Any]:
    path = MANIFESTS_DIR / "topologies.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # a broken install, not user input
        raise RuntimeError(f"{path}: cannot read topology catalog: {exc}") from exc


def _version_key(version: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def component_versions(component: str) -> list[str]:
    """Versions with a data file, oldest first."""
    directory = MANIFESTS_DIR / _catalog()["components"][component]["directory"]
    return sorted((p.stem for p in directory.glob("*.txt")), key=_version_key)


def components() -> dict[str, dict[str, Any]]:
    """Component name -> {directory, option, default, title} from topologies.json."""
    return _catalog()["components"]


def topologies() -> dict[str, dict[str, Any]]:
    """Mode -> {title, components}."""
    return _catalog()["topologies"]


def rancher_settings() -> dict[str, Any]:
    """Rancher facts the client configuration needs (server image, cert-manager helm keys)."""
    return _catalog()["rancher"]


def available() -> dict[str, dict[str, list[str]]]:
    """Mode -> component -> versions, for ``mirror lists``."""
    return {mode: {c: component_versions(c) for c in spec["components"]} for mode, spec in topologies().items()}


def component_images(component: str, version: str | None) -> tuple[str, list[Reference]]:
    """(version used, images) of one component from its built-in lists; None means its default version."""
    version, images, _ = component_list(component, version)
    return version, images


def component_list(component: str, version: str | None, releases: ReleaseLists | None = None,
                   rancher_version: str | None = None) -> tuple[str, list[Reference], ListSource]:
    """(version used, images, their source) of one component; None means its default version.

    A version with no built-in list comes from ``releases`` (fetched or cached;
    ``rancher_version`` picks the RKE metadata); without it, it is refused.
    """
    spec = components()[component]
    version = version or spec["default"]
    if version == "latest" and releases is not None:
        version = releases.latest(component, spec["option"])
    known = component_versions(component)
    if version in known and (releases is None or releases.takes_built_in(component)):
        return version, parse_images_file(MANIFESTS_DIR / spec["directory"] / f"{version}.txt"), BUILT_IN
    what = spec["option"] or component
    if releases is None or not releases.knows(component):
        raise UsageError(f"{what} {version}: no image list for this version; available: {', '.join(known)}")
    images, source = releases.images(component, what, version, rancher_version or components()["rancher"]["default"])
    return version, images, source


def resolve_images(mode: str | None, **options: Any) -> tuple[list[Reference], Topology | None]:
    """select()'s images and topology, for callers that never trim."""
    selection = select(mode, **options)
    return selection.images, selection.topology


def select(
    mode: str | None,
    *,
    versions: dict[str, str | None] | None = None,
    extra_files: list[Path] | None = None,
    extra_refs: list[str] | None = None,
    exclude: list[str] | None = None,
    include_registry_image: bool = True,
    releases: ReleaseLists | None = None,
    downstream_versions: list[str] | None = None,
) -> Selection:
    """The images to mirror: a topology's lists (if ``mode``) plus extras, minus excludes.

    ``versions`` maps component names (see components()) to a version, or
    None for the default. Duplicates go (by normalised reference), order is
    stable: topology lists in component order, then files, then references.
    ``exclude`` patterns are regexes searched in the normalised reference
    (``docker.io/rancher/x:tag``). ``releases`` supplies the lists of
    versions that are not built in; without it only built-in ones resolve.

    ``downstream_versions`` (--downstream-versions, unparsed) trims Rancher's
    list to the per-Kubernetes-version images of those versions
    (downstream.py), and of the local cluster's own K3s, RKE2 or RKE version:
    a bundle carrying that version can upgrade the local cluster to it. The
    local cluster's own list, files and named images are never trimmed.
    """
    versions = {k: v for k, v in (versions or {}).items() if v is not None}
    unknown = set(versions) - set(components())
    if unknown:
        raise UsageError(f"unknown component(s) {', '.join(sorted(unknown))}; known: {', '.join(components())}")
    try:
        patterns = [re.compile(p) for p in exclude or []]
    except re.error as exc:
        raise UsageError(f"--exclude {exc.pattern!r}: invalid regular expression: {exc}") from None
    wanted = downstream.parse_versions(downstream_versions) if downstream_versions is not None else None

    groups: list[list[Reference]] = []
    removed: list[Reference] = []
    topology = None
    if mode is not None:
        if mode not in topologies():
            raise UsageError(f"unknown mode {mode!r}; available: {', '.join(topologies())}")
        used = [c for c in topologies()[mode]["components"]
                if include_registry_image or c != REGISTRY_COMPONENT]
        stray = [c for c in versions if c not in topologies()[mode]["components"]]
        if stray:
            options = ", ".join(components()[c]["option"] or c for c in stray)
            raise UsageError(f"{options} does not apply to --mode {mode}")
        topology = Topology(mode)
        for component in used:
            version, images, source = component_list(component, versions.get(component), releases,
                                                     versions.get("rancher"))
            topology.versions[component] = version
            topology.sources[component] = source
            if releases is not None and releases.arch_of(component):
                topology.list_arch = releases.arch_of(component)
            groups.append(images)
        if wanted is not None:
            topology.downstream_versions = [v.text for v in wanted]
            local = [v for c in LOCAL_CLUSTER_COMPONENTS if c in topology.versions
                     for v in [downstream.own_version(topology.versions[c])] if v is not None]
            catalog = used.index(DOWNSTREAM_CATALOG)
            groups[catalog], removed = downstream.trim(
                groups[catalog], wanted, local, f"Rancher {topology.versions[DOWNSTREAM_CATALOG]}'s image list")
    elif versions or wanted is not None:
        options = ", ".join([components()[c]["option"] or c for c in versions]
                            + ([downstream.OPTION] if wanted is not None else []))
        raise UsageError(f"{options} needs --mode")
    groups += [parse_images_file(Path(f)) for f in extra_files or []]
    groups.append([Reference.parse(r) for r in extra_refs or []])

    images = _unique(groups, patterns)
    kept = {str(ref) for ref in images}
    # What the list would have had untrimmed and has not: an image also in a list not trimmed stays.
    trimmed = [ref for ref in _unique([removed], patterns) if str(ref) not in kept]
    return Selection(images, topology, trimmed)


def select_from_releases(mode: str | None, versions: dict[str, str | None], *, images: list[str] | None = None,
                         images_file: list[Path] | None = None, exclude: list[str] | None = None,
                         no_registry_image: bool = False, platforms: list[Platform], offline_lists: bool,
                         ca_file: Path | None, downstream_versions: list[str] | None = None
                         ) -> tuple[Selection, list[str]]:
    """select() with lists of versions not built in taken from the cache, else from their release.

    Unless ``offline_lists`` (``ca_file`` trusted for the fetch), RKE2's list for
    the one architecture ``platforms`` names. The notes, one line each for
    stderr: where each fetched or cached list came from, a K3s/RKE2 version
    Rancher's metadata does not pair with the Rancher version, and how many
    images ``downstream_versions`` left out.
    """
    from .release_lists import ReleaseLists, list_arch  # an HTTP client: imported only by what may fetch

    releases = ReleaseLists(offline=offline_lists, ca_file=ca_file, arch=list_arch(platforms))
    selection = select(mode, versions=versions, extra_files=images_file or [], extra_refs=images or [],
                       exclude=exclude or [], include_registry_image=not no_registry_image, releases=releases,
                       downstream_versions=downstream_versions)
    topology, notes = selection.topology, []
    for component, source in (topology.sources.items() if topology else ()):
        if source.origin in ("fetched", "cached"):
            notes.append(f"mirror: {component} {topology.versions[component]}: {source.describe()}")
    notes += releases.support_warnings(topology.versions, topology.sources) if topology else []
    if topology and topology.downstream_versions:
        notes.append(f"mirror: --downstream-versions {','.join(topology.downstream_versions)}: left out "
                     f"{len(selection.trimmed)} per-Kubernetes-version images of other versions")
    return selection, notes


def _unique(groups: list[list[Reference]], excluded: list[re.Pattern[str]]) -> list[Reference]:
    """The groups' references in order, each once, less those an ``excluded`` pattern finds."""
    seen: set[str] = set()
    result = []
    for ref in (r for group in groups for r in group):
        key = str(ref)
        if key in seen or any(p.search(key) for p in excluded):
            continue
        seen.add(key)
        result.append(ref)
    return result
