"""What ``registry up`` starts: the flags given, else what the state dir recorded, else the defaults.

Nodes keep the address and certificate names they were configured with. After
a reboot, ``up`` with no flags must start exactly the registry they know (the
same port, the same names in the certificate, TLS and auth as before), not a
new one on 0.0.0.0:5000 with a certificate for this machine's name. A flag that
would move the port or address, drop a certificate name, turn TLS or auth off
(or on), or change the data dir of a registry nodes already use is refused
unless ``--reconfigure``; even then the certificate keeps every name it had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .objectstore import DEFAULT_REGION, S3Storage
from .state import RegistryState, StatePaths

DEFAULT_PORT = 5000
DEFAULT_ADDRESS = "0.0.0.0"
AUTO_NAMES = ("localhost", "127.0.0.1")  # added to every certificate, never a choice of the operator's


@dataclass
class Requested:
    """``up``'s flags as given: None (or empty) is "not given"."""

    port: int | None = None
    address: str | None = None
    data_dir: Path | None = None
    hostnames: list[str] = field(default_factory=list)
    tls: str | None = None  # auto | given | none
    auth: str | None = None  # htpasswd | none
    engine: str | None = None  # docker | binary | auto
    storage: S3Storage | None = None  # --storage s3://...


@dataclass(frozen=True)
class Settled:
    port: int
    address: str
    data_dir: Path | None  # None: STATE/data
    hostnames: list[str]  # [] -> this host's name
    tls: str
    auth: str
    engine: str
    keep_given_cert: bool  # --tls given recorded, no --cert now: the installed certificate stays
    storage: S3Storage | None = None  # None: the filesystem at data_dir


def recorded_tls(state: RegistryState, paths: StatePaths) -> str:
    """auto, given or none, as ``up`` last ran (older states recorded only whether TLS was on)."""
    if state.tls_mode:
        return state.tls_mode
    if not state.tls:
        return "none"
    return "auto" if state.ca_file == str(paths.ca_dir / "ca.crt") else "given"


def recorded_storage(state: RegistryState) -> S3Storage | None:
    """The object storage ``up`` last used; its endpoint and region may change without --reconfigure."""
    if not state.storage or not state.s3_endpoint:
        return None
    bucket, _, prefix = state.storage[len("s3://"):].partition("/")
    return S3Storage(bucket, prefix, state.s3_endpoint, state.s3_region or DEFAULT_REGION)


def settle(asked: Requested, previous: RegistryState | None, paths: StatePaths, *, reconfigure: bool) -> Settled:
    """The registry to start; raises UsageError for a change nodes would notice, unless ``reconfigure``."""
    if previous is None:
        return Settled(asked.port or DEFAULT_PORT, asked.address or DEFAULT_ADDRESS, asked.data_dir,
                       list(asked.hostnames), asked.tls or "auto", asked.auth or "htpasswd", asked.engine or "auto",
                       False, asked.storage)
    before_tls = recorded_tls(previous, paths)
    before_names = [n for n in previous.hostnames if n not in AUTO_NAMES and n != previous.address]
    kept = Settled(
        port=asked.port or previous.port,
        address=asked.address or previous.address,
        data_dir=asked.data_dir or Path(previous.data_dir),
        hostnames=list(dict.fromkeys(before_names + list(asked.hostnames))),
        tls=asked.tls or before_tls,
        auth=asked.auth or ("htpasswd" if previous.auth else "none"),
        engine=asked.engine or ("binary" if previous.engine == "systemd" else previous.engine),
        keep_given_cert=asked.tls is None and before_tls == "given",
        storage=asked.storage or (None if asked.data_dir else recorded_storage(previous)),
    )
    changes = _changes(asked, previous, before_tls, before_names, kept)
    if changes and not reconfigure:
        raise UsageError(f"the registry of state dir {paths.root} was set up with {'; '.join(changes)}: nodes "
                         "may use it as it is; run `mirror registry up` with no flags to start it again, or "
                         "pass --reconfigure to change it (the certificate keeps its names)")
    return kept


def _changes(asked: Requested, previous: RegistryState, before_tls: str, before_names: list[str],
             kept: Settled) -> list[str]:
    """Each recorded setting a flag would change, as 'port 5000 (not 5001)'."""
    changes = []
    if kept.port != previous.port:
        changes.append(f"port {previous.port} (not {kept.port})")
    if kept.address != previous.address:
        changes.append(f"address {previous.address} (not {kept.address})")
    if (kept.storage and kept.storage.url) != previous.storage:
        changes.append(f"storage {previous.storage or previous.data_dir} "
                       f"(not {kept.storage.url if kept.storage else kept.data_dir})")
    elif kept.data_dir.absolute() != Path(previous.data_dir):
        changes.append(f"data dir {previous.data_dir} (not {kept.data_dir})")
    dropped = [n for n in before_names if asked.hostnames and n not in asked.hostnames]
    if dropped:
        changes.append(f"certificate names {', '.join(before_names)} (--hostname leaves out {', '.join(dropped)})")
    if kept.tls != before_tls and "none" in (kept.tls, before_tls):
        changes.append(f"TLS {'off' if before_tls == 'none' else 'on'}")
    if kept.auth != ("htpasswd" if previous.auth else "none"):
        changes.append(f"auth {'on' if previous.auth else 'off'}")
    return changes
