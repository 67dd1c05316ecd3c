"""What runs the registry: one Engine interface, chosen once per command.

``up`` picks an engine from ``--engine`` and what the host has
(``choose_engine``); ``down`` and ``status`` rebuild the one ``up`` recorded
(``recorded_engine``). Lifecycle code then only calls the interface: where
the registry sees its files, prepare, start, why it exited, is it running,
stop, and the systemd unit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import BinaryIO

from ..bundle.reader import BundleReader
from ..errors import MirrorError, UsageError
from ..bundle.store import BlobStore
from . import binary, container, probe
from .binaryload import extract_registry_binary
from .imageload import copy_image_blobs, docker_archive, find_registry_image, select_manifest
from .state import RegistryState, StatePaths, local_registry

CONTAINER_NAME = "mirror-registry"
ENGINES = ("auto", "docker", "binary")


class Engine:
    """A way to run the registry for one state dir. Subclasses fill in every method."""

    name: str  # recorded in state.json

    def __init__(self, paths: StatePaths):
        self.paths = paths

    @property
    def runner(self) -> str | None:
        """What runs (an image id, a binary path): part of the fingerprint of a running registry."""
        raise NotImplementedError

    def sees(self, path: Path) -> str:
        """A file of the registry dir as the registry process sees it."""
        raise NotImplementedError

    def storage(self, data_dir: Path) -> str:
        """The data dir as the registry process sees it."""
        raise NotImplementedError

    def prepare(self, bundle: Path | None, registry_image: str | None) -> None:
        """Everything that can fail before anything starts (the image, the container name)."""

    def start(self, data_dir: Path) -> None:
        raise NotImplementedError

    def exit_reason(self) -> str | None:
        """None while the started registry runs; else why it stopped."""
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def stop(self) -> bool:
        """Stop what this engine started; True if something ran."""
        raise NotImplementedError

    def run_command(self, args: list[str], data_dir: Path, output: BinaryIO) -> int:
        """The registry program run with ``args`` to the end, not serving (``garbage-collect`` over the
        storage of a stopped registry, ``--version``); output to ``output``. Its exit status."""
        raise NotImplementedError

    def unit(self, port: int) -> str:
        """A systemd unit running this registry."""
        raise UsageError(f"--print-systemd-unit runs the registry binary; it cannot go with --engine {self.name}")

    def recorded(self) -> dict[str, str | None]:
        """Engine-specific fields of RegistryState."""
        return {}


class DockerEngine(Engine):
    """The registry image in a container of the Docker Engine at DOCKER_HOST."""

    name = "docker"

    def __init__(self, paths: StatePaths, container_name: str, client=None, image: str | None = None):
        super().__init__(paths)
        self.container_name = container_name
        self.image = image
        self._client = client  # connected on first need: `down` may not need the engine at all

    @property
    def client(self):
        if self._client is None:
            self._client = container.connect()
        return self._client

    @property
    def runner(self) -> str | None:
        return self.image

    def sees(self, path: Path) -> str:
        return f"{container.CONFIG_MOUNT}/{path.name}"

    def storage(self, data_dir: Path) -> str:
        return container.DATA_MOUNT

    def prepare(self, bundle: Path | None, registry_image: str | None) -> None:
        self._check_container_name()
        self.image = self._load_image(bundle, registry_image)

    def start(self, data_dir: Path) -> None:
        container.remove(self.client, self.container_name)  # ours (checked in prepare), stopped or dead
        container.run(self.client, name=self.container_name, image=self.image, config_dir=self.paths.registry_dir,
                      data_dir=data_dir, state_dir=self.paths.root)

    def exit_reason(self) -> str | None:
        found = container.find(self.client, self.container_name)
        return container.exit_reason(found) if found is not None else "container was removed"

    def running(self) -> bool:
        client = self._client or container.reachable()
        found = container.find(client, self.container_name) if client else None
        return found is not None and container.running(found)

    def stop(self) -> bool:
        return container.remove(self.client, self.container_name)

    def run_command(self, args: list[str], data_dir: Path, output: BinaryIO) -> int:
        assert self.image is not None, "a docker registry records the image it ran"
        return container.run_once(self.client, image=self.image, args=args, config_dir=self.paths.registry_dir,
                                  data_dir=data_dir, output=output)

    def recorded(self) -> dict[str, str | None]:
        return {"container": self.container_name, "image": self.image}

    def _check_container_name(self) -> None:
        """Refuse a name some other container has: `up` replaces only what this state dir made."""
        existing = container.find(self.client, self.container_name)
        owner = container.owner(existing) if existing else str(self.paths.root)
        if owner != str(self.paths.root):
            made_by = f"`mirror registry up --state-dir {owner}`" if owner else "someone else"
            raise UsageError(f"container {self.container_name} exists and was made by {made_by}: remove it or "
                             "pass --container-name")

    def _load_image(self, bundle: Path | None, registry_image: str | None) -> str:
        """The image id to run: loaded from the bundle, or already in the engine."""
        if bundle is None:
            found = container.image_id(self.client, registry_image) if registry_image else None
            if not found:
                raise UsageError("--engine docker needs the registry image: pass --from-bundle BUNDLE "
                                 "(or --registry-image REF already loaded in the engine)")
            return found
        with BundleReader(bundle) as reader, \
                tempfile.TemporaryDirectory(prefix="image-", dir=self.paths.root) as spool_dir:
            record = find_registry_image(reader.manifest, bundle, registry_image)
            spool = BlobStore(Path(spool_dir))
            copy_image_blobs(reader, record, spool)
            manifest = select_manifest(spool, record, container.engine_platform(self.client))
            container.load(self.client, docker_archive(spool, manifest, record.source))
            config_digest = manifest.document["config"]["digest"]
        loaded = container.image_id(self.client, config_digest)
        if loaded is None:
            raise MirrorError(f"Docker Engine did not keep the registry image {record.source} after loading it")
        return loaded


class BinaryEngine(Engine):
    """The distribution binary as a background process of ours, tracked by a pid file."""

    name = "binary"

    def __init__(self, paths: StatePaths, path: str | None = None):
        super().__init__(paths)
        # None for one rebuilt from state (stopping needs only the pid file), or until prepare()
        # takes the binary out of the bundle.
        self.path = path

    @property
    def runner(self) -> str | None:
        return self.path

    def sees(self, path: Path) -> str:
        return str(path)

    def storage(self, data_dir: Path) -> str:
        return str(data_dir)

    def prepare(self, bundle: Path | None, registry_image: str | None) -> None:
        if self.path is None:
            assert bundle is not None  # choose_engine picks a binary engine without a path only then
            self.path = str(extract_registry_binary(bundle, registry_image, self.paths.bundled_binary))

    def start(self, data_dir: Path) -> None:
        assert self.path is not None
        binary.start(self.path, self.paths.config, self.paths.pid_file, self.paths.log_file)

    def exit_reason(self) -> str | None:
        if self.running():
            return None
        try:
            lines = self.paths.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return probe.log_reason(lines)

    def running(self) -> bool:
        return binary.running_pid(self.paths.pid_file, self.paths.config) is not None

    def stop(self) -> bool:
        return binary.stop(self.paths.pid_file, self.paths.config)

    def run_command(self, args: list[str], data_dir: Path, output: BinaryIO) -> int:
        # One rebuilt from state has no path: the binary `up` would pick now, as it picked then.
        program = self.path or binary.find_binary() or local_binary(self.paths) or binary.require_binary()
        return binary.run(program, args, output)

    def unit(self, port: int) -> str:
        assert self.path is not None
        return binary.systemd_unit(self.path, self.paths.config, port)


class SystemdEngine(BinaryEngine):
    """The binary run by the operator's systemd unit: ours to prepare, not to start or stop."""

    name = "systemd"

    def __init__(self, paths: StatePaths, path: str | None = None, state: RegistryState | None = None):
        super().__init__(paths, path)
        self.state = state

    def start(self, data_dir: Path) -> None:
        raise AssertionError("a systemd unit is started by systemctl, not by `up`")

    def running(self) -> bool:
        return self.state is not None and probe.answers(local_registry(self.state))  # whatever answers is the unit

    def stop(self) -> bool:
        if self.running():
            raise UsageError("the registry runs as a systemd unit: stop it with "
                             "`systemctl disable --now mirror-registry`, then run this again")
        return False


def choose_engine(requested: str, paths: StatePaths, notes: list[str], *, systemd_unit: bool = False,
                  container_name: str = CONTAINER_NAME, bundle: Path | None = None,
                  registry_image: str | None = None) -> Engine:
    """The engine for ``--engine requested`` on this host; ``notes`` gets why, when auto chose."""
    if requested not in ENGINES:
        raise UsageError(f"--engine {requested}: expected one of {', '.join(ENGINES)}")
    if systemd_unit:
        if requested == "docker":
            raise UsageError("--print-systemd-unit runs the registry binary; it cannot go with --engine docker")
        return SystemdEngine(paths, _binary(paths, bundle, notes))
    if requested == "docker":
        return DockerEngine(paths, container_name, container.connect())
    if requested == "binary":
        return BinaryEngine(paths, _binary(paths, bundle, notes))
    client = container.reachable()
    if client is not None and (bundle or (registry_image and container.image_id(client, registry_image))):
        return DockerEngine(paths, container_name, client)
    found = binary.find_binary()
    if found:
        if client is None:
            notes.append("no Docker Engine reachable: running the registry binary " + found)
        else:
            notes.append("Docker Engine reachable but no --from-bundle: running the registry binary " + found)
        return BinaryEngine(paths, found)
    if client is not None:
        raise UsageError("Docker Engine needs the registry image: pass --from-bundle BUNDLE "
                         "(or --registry-image REF already loaded), or install the registry binary")
    return BinaryEngine(paths, _binary(paths, bundle, notes))


def _binary(paths: StatePaths, bundle: Path | None, notes: list[str]) -> str | None:
    """The registry binary on PATH; None when it is to come out of ``bundle``. Without either, the one an
    earlier ``up --from-bundle`` took out (an ``up`` with no flags after a reboot, or ``registry gc``)."""
    found = binary.find_binary() or (None if bundle else local_binary(paths))
    if found or bundle is None:
        return found or binary.require_binary()
    notes.append(f"no registry binary on PATH: taking /bin/registry out of the registry image in {bundle}")
    return None


def local_binary(paths: StatePaths) -> str | None:
    """The binary ``up --from-bundle`` took out of a registry image into the state dir, if it did."""
    taken = paths.bundled_binary
    return str(taken) if taken.is_file() and not taken.is_symlink() else None


def recorded_engine(state: RegistryState, paths: StatePaths) -> Engine:
    """The engine that runs (or ran) the registry ``state`` describes."""
    if state.engine == DockerEngine.name:
        return DockerEngine(paths, state.container or CONTAINER_NAME, image=state.image)
    if state.engine == SystemdEngine.name:
        return SystemdEngine(paths, state=state)
    return BinaryEngine(paths)
