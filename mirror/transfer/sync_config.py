"""``sync.yaml``: a sync job as a file (reference: docs/sync.md).

Everything is checked before any registry is contacted; a mistake is one
UsageError naming ``file:line`` and the key. Secrets are never written in
the file: a password is ``{env: NAME}`` or ``{file: PATH}``, or left out
(then docker config files and credential helpers are asked, as everywhere).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import regex
import yaml

from .. import lists
from ..errors import UsageError
from ..model.cron import CronSchedule
from ..model.oci import Platform
from ..model.reference import Reference, endpoint_host
from ..model.semver import Range
from ..model.target import RegistryAddress
from ..model.upstream import SourceMap, SourceMirror
from ..registry.settings import Credentials, RegistrySettings, connections_for
from ..runlock import RunLock, all_held
from .plan import Target
from .selection import TagPattern, TagSelection
from .selection import SyncImage
from .sync_result import RETAG_POLICIES, SyncRequest
from .sync_bundle import NAME_RULE, BundleTarget, bad_name

TOP_KEYS = {"target", "targets", "sources", "platforms", "images", "interval", "schedule", "keep_going"}
REGISTRY_TARGET_KEYS = {"registry", "ca_file", "insecure", "plain_http", "username", "password"}
BUNDLE_TARGET_KEYS = {"bundle", "base", "name"}
TARGET_KEYS = REGISTRY_TARGET_KEYS | BUNDLE_TARGET_KEYS
SOURCE_KEYS = {"registry", "mirror", "ca_file", "insecure", "plain_http", "username", "password"}
ENTRY_KINDS = ("image", "repository", "mode", "images_files")  # what an entry names: exactly one of them
TAG_RULE_KEYS = {"allow", "deny", "semver", "keep_latest"}
# A topology as pull --mode takes it: k3s_version, rancher_version, cert_manager_version, ...
VERSION_KEYS = {f"{component.replace('-', '_')}_version": component for component in lists.components()}
LIST_KEYS = {"downstream_versions", "offline_lists", "no_registry_image", *VERSION_KEYS}
ENTRY_KEYS = {*ENTRY_KINDS, *TAG_RULE_KEYS, *LIST_KEYS, "immutable", "on_retag", "prune"}


_INTERVAL = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class SyncJob:
    path: Path
    request: SyncRequest  # its target is None when the job writes bundles
    bundle: BundleTarget | None = None
    interval: float | None = None  # seconds between the starts of two runs of ``mirror sync serve``
    schedule: CronSchedule | None = None  # or the times ``mirror sync serve`` starts a run at
    env_names: list[str] = field(default_factory=list)  # environment variables its passwords come from
    notes: list[str] = field(default_factory=list)  # one line each: where a topology's lists came from, ...
    files: list[Path] = field(default_factory=list)  # every file it names (CA files, password files)
    secret_files: list[Path] = field(default_factory=list)  # of those, the {file: PATH} passwords
    lines: dict[str, int] = field(default_factory=dict)  # top-level key -> its line, for errors found later

    def at(self, key: str) -> str:
        """``file:line: key:`` of a top-level key, for a mistake found after reading (exit 2 lines)."""
        return f"{self.path}:{self.lines[key]}: {key}:" if key in self.lines else f"{self.path}: {key}:"

    def lock(self) -> ContextManager[object]:
        """One run at a time per config and target registry (each of them), or per bundle directory
        whoever names it."""
        if self.bundle is not None:
            return self.bundle.lock()
        assert self.request.target is not None
        return all_held([RunLock(f"sync {self.path.resolve()} -> {target.address}", f"sync to {target.address}")
                         for target in self.request.targets])


def parse_interval(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``1d`` -> seconds; ValueError otherwise."""
    match = _INTERVAL.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"interval {text!r}: expected a positive number with s, m, h or d, e.g. 6h")
    return int(match.group(1)) * _UNITS[match.group(2)]


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key."""

    line = 0
    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line, mapping.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.MarkedYAMLError("while reading a mapping", node.start_mark,
                                       f"key {key!r} given twice", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Reader:
    """Reads one file, turning every mistake into ``file:line: key: why``."""

    def __init__(self, path: Path, secrets: bool = True, lists: bool | None = None):
        self.path = path
        self.secrets = secrets  # False: check how secrets are referenced, read none
        self.lists = secrets if lists is None else lists  # resolve mode:/images_files: entries' image lists
        self.env_names: list[str] = []  # every {env: NAME} referenced
        self.notes: list[str] = []  # what resolving a topology's lists had to say
        self.files: list[Path] = []  # every file named, read or not
        self.secret_files: list[Path] = []  # every {file: PATH} password, read or not

    def at(self, mapping: Any, key: str | None) -> str:
        """``file:line: key:`` of ``key`` in ``mapping`` (``file:line:`` without a key)."""
        line = mapping.lines.get(key, mapping.line) if isinstance(mapping, _Mapping) else 0
        where = f"{self.path}:{line}" if line else str(self.path)
        return f"{where}: {key}:" if key else f"{where}:"

    def error(self, mapping: Any, key: str | None, why: str) -> UsageError:
        return UsageError(f"{self.at(mapping, key)} {why}")

    def mapping(self, parent: Any, key: str, value: Any, allowed: set[str]) -> _Mapping:
        if not isinstance(value, _Mapping):
            raise self.error(parent, key, "expected a mapping of keys")
        for name in value:
            if name not in allowed:
                raise self.error(value, name, f"unknown key (known: {', '.join(sorted(allowed))})")
        return value

    def string(self, mapping: _Mapping, key: str, default: str | None = None) -> str | None:
        value = mapping.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.error(mapping, key, "expected a string")
        return value

    def flag(self, mapping: _Mapping, key: str) -> bool:
        value = mapping.get(key, False)
        if not isinstance(value, bool):
            raise self.error(mapping, key, "expected true or false")
        return value

    def strings(self, mapping: _Mapping, key: str) -> list[str]:
        value = mapping.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(mapping, key, "expected a string or a list of strings")
        return value

    def patterns(self, mapping: _Mapping, key: str) -> list[TagPattern]:
        compiled = []
        for text in self.strings(mapping, key):
            try:
                compiled.append(TagPattern(regex.compile(text), self.at(mapping, key)))
            except regex.error as exc:
                raise self.error(mapping, key, f"invalid regular expression {text!r}: {exc}") from None
        return compiled

    def file(self, mapping: _Mapping, key: str) -> Path | None:
        value = self.string(mapping, key)
        if value is None:
            return None
        path = self.path.parent / os.path.expanduser(value)
        if not path.is_file():
            raise self.error(mapping, key, f"no such file {path}")
        self.files.append(path)
        return path

    def credentials(self, mapping: _Mapping, read: bool = True) -> Credentials | None:
        username = self.string(mapping, "username")
        secret = mapping.get("password")
        if secret is None:
            if username is not None:
                raise self.error(mapping, "username", "needs a password: {env: NAME} or {file: PATH}")
            return None
        if not isinstance(secret, _Mapping):
            raise self.error(mapping, "password", "a password is never written in the file: "
                                                  "use {env: NAME} or {file: PATH}")
        if username is None:
            raise self.error(mapping, "password", "needs a username")
        self.mapping(mapping, "password", secret, {"env", "file"})
        if len(secret) != 1:
            raise self.error(mapping, "password", "exactly one of env or file")
        if "env" in secret:
            name = self.string(secret, "env") or ""
            self.env_names.append(name)
        else:  # it lives where the job runs: named, not checked, when secrets are not read
            named = self.path.parent / os.path.expanduser(self.string(secret, "file") or "")
            self.secret_files.append(named)
            self.files.append(named)
        if not (self.secrets and read):
            return None
        if "env" in secret:
            if name not in os.environ:
                raise self.error(secret, "env", f"environment variable {name!r} is not set")
            password = os.environ[name]
        else:
            if not named.is_file():
                raise self.error(secret, "file", f"no such file {named}")
            password = named.read_text().rstrip("\r\n")
        if not password:
            raise self.error(mapping, "password", "is empty")
        return Credentials(username, password)


def load_config(path: Path, *, jobs: int = 8, dry_run: bool = False, keep_going: bool = False,
                secrets: bool = True, bundle: BundleTarget | None = None, lists: bool | None = None) -> SyncJob:
    """Read and check ``path`` whole; raises UsageError (exit 2) naming file:line and key.

    ``secrets=False`` checks the config without reading any password (for
    printing units that run it elsewhere), nor resolving a topology's image
    lists unless ``lists`` (``mirror prune --keep`` needs the images). ``bundle`` (``--to-bundle``)
    replaces the config's target: a registry target is then only checked,
    its password not read, and the target may be left out.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"-c {path}: cannot read it: {exc.strerror}") from None
    try:
        document = yaml.load(data, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark else ""
        raise UsageError(f"{path}{line}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    reader = _Reader(path, secrets, lists)
    top = reader.mapping(None, "", document, TOP_KEYS)
    target: Target | None = None
    also: list[Target] = []
    if "target" in top and "targets" in top:
        raise reader.error(top, "targets", "give target (one) or targets (a list), not both")
    if "targets" in top:
        items = top["targets"]
        if not isinstance(items, list) or not items:
            raise reader.error(top, "targets", "targets: expected a list of registries ({registry: HOST[:PORT]"
                                               "[/PREFIX], ...}); a bundle target is `target:`")
        checked_all = [_target(reader, reader.mapping(top, "targets", item, REGISTRY_TARGET_KEYS), jobs,
                               read_secrets=bundle is None) for item in items]
        addresses = [str(t.address) for t in checked_all]
        if len(set(addresses)) != len(addresses):
            raise reader.error(top, "targets", f"{', '.join(addresses)}: each registry once")
        if bundle is None:
            target, *also = checked_all
    elif "target" in top:
        mapping = reader.mapping(top, "target", top["target"], TARGET_KEYS)
        if "bundle" in mapping:
            configured = _bundle_target(reader, mapping)
            bundle = bundle or configured
        else:
            checked = _target(reader, mapping, jobs, read_secrets=bundle is None)
            target = None if bundle else checked
    elif bundle is None:
        raise reader.error(top, None, "target: missing (a registry to sync into, or a bundle directory; targets: several registries)")
    sources, settings_for = _sources(reader, top, jobs)
    platforms = []
    for text in reader.strings(top, "platforms"):
        try:
            platforms.append(Platform.parse(text))
        except ValueError as exc:
            raise reader.error(top, "platforms", str(exc)) from None
    entries = top.get("images")
    if not isinstance(entries, list) or not entries:
        raise reader.error(top, "images" if "images" in top else None, "images: expected a list of entries")
    images: list[SyncImage] = []
    selections: list[TagSelection] = []
    pruned: list[Reference] = []
    for entry in entries:
        mapping = reader.mapping(top, "images", entry, ENTRY_KEYS)
        found = len(images)
        _entry(reader, mapping, images, selections, bundle is not None, platforms)
        if _prunes(reader, mapping, bundle is not None):
            pruned += [selections[-1].repository] if "repository" in mapping else [i.ref for i in images[found:]]
    interval = None
    if "interval" in top:
        try:
            interval = parse_interval(top["interval"])
        except ValueError as exc:
            raise reader.error(top, "interval", str(exc)) from None
    schedule = None
    if "schedule" in top:
        if interval is not None:
            raise reader.error(top, "schedule", "give interval or schedule, not both")
        try:
            schedule = CronSchedule.parse(top["schedule"])
        except ValueError as exc:
            raise reader.error(top, "schedule", str(exc)) from None
    keep_going = keep_going or reader.flag(top, "keep_going")
    request = SyncRequest(images, target, sources, settings_for, platforms=platforms, jobs=jobs,
                          dry_run=dry_run, keep_going=keep_going, config_sha256=hashlib.sha256(data).hexdigest(),
                          selections=selections, prune=list(dict.fromkeys(ref.name for ref in pruned)),
                          also=tuple(also))
    return SyncJob(path, request, bundle, interval, schedule, reader.env_names, reader.notes,
                   list(dict.fromkeys(reader.files)),
                   list(dict.fromkeys(reader.secret_files)), dict(top.lines))


def _target(reader: _Reader, mapping: _Mapping, jobs: int, read_secrets: bool) -> Target:
    registry = reader.string(mapping, "registry")
    if registry is None:
        raise reader.error(mapping, None, "target: registry or bundle missing (HOST[:PORT][/PREFIX], or DIR)")
    misplaced = sorted(BUNDLE_TARGET_KEYS & set(mapping))
    if misplaced:
        raise reader.error(mapping, misplaced[0], "belongs to a bundle target (target: {bundle: DIR, base: [...]})")
    try:
        address = RegistryAddress.parse(registry, "registry")
    except UsageError as exc:
        raise reader.error(mapping, "registry", str(exc)) from None
    settings = RegistrySettings(plain_http=reader.flag(mapping, "plain_http") or address.plain_http,
                                insecure=reader.flag(mapping, "insecure"), ca_file=reader.file(mapping, "ca_file"),
                                credentials=reader.credentials(mapping, read_secrets), max_connections=connections_for(jobs))
    return Target(address, settings)


def _bundle_target(reader: _Reader, mapping: _Mapping) -> BundleTarget:
    """``target: {bundle: DIR, base: [FILE, ...], name: NAME}``: paths relative to the config file."""
    misplaced = sorted(REGISTRY_TARGET_KEYS & set(mapping))
    if misplaced:
        raise reader.error(mapping, misplaced[0], "a bundle target has no registry settings (bundle, base, name)")
    directory = reader.path.parent / os.path.expanduser(reader.string(mapping, "bundle") or "")
    if not directory.is_dir():
        raise reader.error(mapping, "bundle", f"no such directory {directory}")
    if "base" not in mapping:
        raise reader.error(mapping, "bundle", "needs base: the inventories (or bundles) the bastion holds")
    base = []
    for text in reader.strings(mapping, "base"):
        path = reader.path.parent / os.path.expanduser(text)
        if not path.is_file():
            raise reader.error(mapping, "base", f"no such file {path}")
        base.append(path)
    if not base:
        raise reader.error(mapping, "base", "expected at least one inventory or bundle")
    name = reader.string(mapping, "name", "mirror") or ""
    if bad_name(name):
        raise reader.error(mapping, "name", f"{name!r}: {NAME_RULE}")
    return BundleTarget(directory, base, name)


def _sources(reader: _Reader, top: _Mapping, jobs: int) -> tuple[SourceMap, Callable[[str], RegistrySettings]]:
    entries = top.get("sources", [])
    if not isinstance(entries, list):
        raise reader.error(top, "sources", "expected a list of registries")
    mirrors: list[SourceMirror] = []
    by_host: dict[str, RegistrySettings] = {}
    for entry in entries:
        mapping = reader.mapping(top, "sources", entry, SOURCE_KEYS)
        registry = reader.string(mapping, "registry")
        if registry is None:
            raise reader.error(mapping, None, "sources: registry missing (e.g. docker.io)")
        mirror = reader.string(mapping, "mirror")
        host = endpoint_host(Reference.parse(f"{registry}/x/y").registry)
        plain = reader.flag(mapping, "plain_http")
        if mirror is not None:
            try:
                found = SourceMirror.parse(f"{registry}={mirror}")
            except UsageError as exc:
                raise reader.error(mapping, "mirror", str(exc)) from None
            mirrors.append(found)
            host, plain = found.host, plain or found.plain_http
        by_host[host] = RegistrySettings(plain_http=plain, insecure=reader.flag(mapping, "insecure"),
                                         ca_file=reader.file(mapping, "ca_file"),
                                         credentials=reader.credentials(mapping), max_connections=connections_for(jobs))
    default = RegistrySettings(max_connections=connections_for(jobs))

    def settings_for(host: str) -> RegistrySettings:
        return by_host.get(host, default)

    return SourceMap(mirrors), settings_for


def _entry(reader: _Reader, mapping: _Mapping, images: list[SyncImage], selections: list[TagSelection],
           to_bundle: bool, platforms: list[Platform]) -> None:
    on_retag = reader.string(mapping, "on_retag", "update")
    if on_retag not in RETAG_POLICIES:
        raise reader.error(mapping, "on_retag", f"{on_retag!r}: expected one of {', '.join(RETAG_POLICIES)}")
    if to_bundle and on_retag != "update":
        raise reader.error(mapping, "on_retag", f"{on_retag}: needs a registry target; the push of a delta "
                                                "bundle moves tags as mirror push does")
    immutable = reader.patterns(mapping, "immutable")
    kinds = [kind for kind in ENTRY_KINDS if kind in mapping]
    if len(kinds) != 1:
        raise reader.error(mapping, kinds[1] if kinds[1:] else None, "an entry names one of repository: (tags "
                           "selected), image: (one), mode: (a topology, as pull --mode) or images_files:")
    misplaced = sorted(LIST_KEYS & set(mapping)) if kinds[0] != "mode" else []
    if misplaced:
        raise reader.error(mapping, misplaced[0], "belongs to a mode: entry (a topology)")
    if kinds[0] in ("mode", "images_files"):
        extra = sorted(TAG_RULE_KEYS & set(mapping))
        if extra:
            raise reader.error(mapping, extra[0], "selects tags, so it belongs to a repository: entry")
        for ref in _listed(reader, mapping, kinds[0], platforms):
            images.append(SyncImage(ref, on_retag, immutable=bool(ref.tag and any(p.search(ref.tag)
                                                                                     for p in immutable))))
        return
    if "image" in mapping:
        extra = sorted(set(mapping) - {"image", "on_retag", "immutable"})
        if extra:
            raise reader.error(mapping, extra[0], "selects tags, so it belongs to a repository: entry")
        ref = _reference(reader, mapping, "image")
        images.append(SyncImage(ref, on_retag, immutable=bool(ref.tag and any(p.search(ref.tag) for p in immutable))))
        return
    ref = _reference(reader, mapping, "repository")
    if ref.digest or ":" in (reader.string(mapping, "repository") or "").rpartition("/")[2]:
        raise reader.error(mapping, "repository", "a repository without tag or digest; tags are chosen by "
                                                  "allow/deny/semver/keep_latest")
    semver = None
    if "semver" in mapping:
        try:
            semver = Range(reader.string(mapping, "semver") or "")
        except ValueError as exc:
            raise reader.error(mapping, "semver", str(exc)) from None
    keep_latest = mapping.get("keep_latest")
    if keep_latest is not None and (isinstance(keep_latest, bool) or not isinstance(keep_latest, int)
                                    or keep_latest < 1):
        raise reader.error(mapping, "keep_latest", "expected a whole number of tags, at least 1")
    selections.append(TagSelection(ref, reader.patterns(mapping, "allow"), reader.patterns(mapping, "deny"),
                                   semver, keep_latest, immutable, on_retag))


def _prunes(reader: _Reader, mapping: _Mapping, to_bundle: bool) -> bool:
    """``prune: true``: the entry's repositories lose, at the target, the tags no entry wants any more."""
    prune = reader.flag(mapping, "prune")
    if prune and to_bundle:
        raise reader.error(mapping, "prune", "needs a registry target to delete from; on the bastion, `mirror prune "
                                             f"--keep {reader.path.name}` deletes what the entries no longer select")
    return prune


def _listed(reader: _Reader, mapping: _Mapping, kind: str, platforms: list[Platform]) -> list[Reference]:
    """The images of a ``mode:`` or ``images_files:`` entry, resolved as ``pull --mode`` resolves them.

    Only when the job is to run: a config checked for printing its units
    (secrets not read) fetches no list, and its topology is checked by name.
    """
    files = []
    for text in reader.strings(mapping, "images_files"):
        path = reader.path.parent / os.path.expanduser(text)
        if not path.is_file():
            raise reader.error(mapping, "images_files", f"no such file {path}")
        reader.files.append(path)
        files.append(path)
    mode = reader.string(mapping, "mode")
    versions = {component: reader.string(mapping, key) for key, component in VERSION_KEYS.items() if key in mapping}
    downstream = reader.strings(mapping, "downstream_versions") if "downstream_versions" in mapping else None
    offline, no_registry_image = reader.flag(mapping, "offline_lists"), reader.flag(mapping, "no_registry_image")
    if mode is not None and mode not in lists.topologies():
        raise reader.error(mapping, "mode", f"unknown mode {mode!r}; available: {', '.join(lists.topologies())}")
    if not reader.lists:
        return []
    try:
        selection, notes = lists.select_from_releases(
            mode, versions, images_file=files, no_registry_image=no_registry_image, platforms=platforms,
            offline_lists=offline, ca_file=None, downstream_versions=downstream)
    except UsageError as exc:
        raise reader.error(mapping, kind, str(exc).replace("--mode", "mode:")) from None
    reader.notes += notes
    return selection.images


def _reference(reader: _Reader, mapping: _Mapping, key: str) -> Reference:
    try:
        return Reference.parse(reader.string(mapping, key) or "")
    except UsageError as exc:
        raise reader.error(mapping, key, str(exc)) from None

