"""Where ``registry up`` records what it started, for push, config and down.

The state directory holds everything ``up`` generates::

    state.json          what runs where (no secrets)
    lock                held by the one `up` or `down` at work (statelock.py)
    credentials         username/password as JSON, mode 0600
    ca/ca.crt ca.key    the CA nodes must trust (--tls auto)
    registry/           given to the registry (bind-mounted into a container):
      config.yml server.crt server.key htpasswd
    registry.pid registry.log   the binary engine's process
    gc.log              what the last `registry gc` swept (garbage-collect's output)
    bin/registry        the binary out of a bundle's registry image, when PATH has none

Default: ``/var/lib/mirror/registry`` as root, else
``$XDG_DATA_HOME/mirror/registry`` (``~/.local/share``); ``--state-dir`` or
``MIRROR_STATE_DIR`` override it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..registry.settings import Credentials
from ..safefiles import write_file
from .htpasswd import read_credentials
from .statelock import LOCK_FILE

STATE_ENV = "MIRROR_STATE_DIR"
STATE_FILE = "state.json"


def default_state_dir() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    if os.geteuid() == 0:
        return Path("/var/lib/mirror/registry")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "mirror" / "registry"


@dataclass
class StatePaths:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def registry_dir(self) -> Path:
        """What the registry itself reads; nothing in here is a client secret."""
        return self.root / "registry"

    @property
    def config(self) -> Path:
        return self.registry_dir / "config.yml"

    @property
    def server_cert(self) -> Path:
        return self.registry_dir / "server.crt"

    @property
    def htpasswd(self) -> Path:
        return self.registry_dir / "htpasswd"

    @property
    def pid_file(self) -> Path:
        return self.root / "registry.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "registry.log"

    @property
    def gc_log(self) -> Path:
        return self.root / "gc.log"

    @property
    def bundled_binary(self) -> Path:
        """The registry binary taken out of a bundle's registry image, when PATH has none."""
        return self.root / "bin" / "registry"

    def generated(self) -> list[Path]:
        """Everything ``up`` (and ``gc``) writes here; all that ``down --purge`` deletes from a state dir it did
        not make."""
        return [self.registry_dir, self.ca_dir, self.credentials, self.pid_file, self.log_file, self.gc_log,
                self.state_file, self.bundled_binary.parent, self.root / LOCK_FILE]


@dataclass
class RegistryState:
    """What ``up`` started. ``running`` turns false at ``down``."""

    engine: str  # "docker", "binary" or "systemd"
    host: str  # HOST:PORT this machine uses to reach the registry
    hostnames: list[str]  # names/IPs nodes use (all in the certificate)
    port: int
    address: str  # listen address
    data_dir: str
    tls: bool
    tls_mode: str = ""  # auto, given or none ("" in states written before it was recorded)
    ca_file: str | None = None  # None with --no-tls, or a --cert from a public CA
    auth: bool = False
    credentials_file: str | None = None
    container: str | None = None  # docker engine
    image: str | None = None  # docker engine
    fingerprint: str = ""  # of image + config + files: unchanged -> `up` is a no-op
    running: bool = True
    # Directories `up` made, which `down --purge` deletes whole: the state dir, the data dir, or in a
    # data dir that existed before, the registry's docker/ tree. Nothing else of the user's is touched.
    created: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"


def load_state(paths: StatePaths) -> RegistryState | None:
    try:
        return RegistryState(**json.loads(paths.state_file.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"registry state {paths.state_file} is unreadable ({exc}): run "
                         "`mirror registry up` again") from None


def save_state(paths: StatePaths, state: RegistryState) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    write_file(paths.state_file, (json.dumps(asdict(state), indent=2, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class LocalRegistry:
    """A registry ``mirror registry up`` started on this machine."""

    host: str  # "HOST:PORT", reachable from this machine
    ca_file: Path | None
    credentials: Credentials | None
    plain_http: bool
    hostnames: tuple[str, ...] = ()  # the names nodes use; all in its certificate


def find_local_registry(state_dir: Path | None = None) -> LocalRegistry | None:
    """The registry ``up`` started and ``down`` has not stopped, or None.

    It is not probed; ``probe.require_local_registry`` also checks that it
    answers and turns "none" into the next step to take.
    """
    paths = StatePaths(state_dir or default_state_dir())
    state = load_state(paths)
    if state is None or not state.running:
        return None
    return local_registry(state)


def local_registry(state: RegistryState) -> LocalRegistry:
    return LocalRegistry(
        host=state.host,
        ca_file=Path(state.ca_file) if state.ca_file else None,
        credentials=read_credentials(Path(state.credentials_file)) if state.credentials_file else None,
        plain_http=not state.tls,
        hostnames=tuple(state.hostnames),
    )
