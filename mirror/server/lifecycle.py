"""``registry up``, ``down`` and ``status``: the operations, free of CLI concerns.

Everything that can be wrong with the request or the host (data dir, port,
engine, bundle) is checked before anything starts, so a failure leaves
nothing running and no state claiming otherwise.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import MirrorError, UsageError
from ..registry.settings import Credentials
from . import probe
from .distconfig import STORAGE_TREE, DistConfig, http_secret, render
from .engines import CONTAINER_NAME, Engine, choose_engine, recorded_engine
from .htpasswd import ensure_credentials, read_credentials, write_private
from .recall import AUTO_NAMES, Requested, Settled, recorded_tls, settle
from .state import RegistryState, StatePaths, load_state, local_registry, save_state
from .statelock import state_lock
from .tls import CertificateSummary, ensure_tls, install_given, summary


DEFAULT_USER = "mirror"


@dataclass
class UpOptions:
    state_dir: Path
    # None (or empty): not given, so what the state dir recorded, else the defaults (recall.py).
    data_dir: Path | None = None  # default STATE/data
    port: int | None = None
    address: str | None = None
    hostnames: list[str] = field(default_factory=list)
    tls: str | None = None  # auto | given | none
    cert: Path | None = None
    key: Path | None = None
    ca_file: Path | None = None  # the CA behind --cert, for push and config
    auth: str | None = None  # htpasswd | none
    username: str | None = None  # default: as recorded, else DEFAULT_USER
    bundle: Path | None = None
    registry_image: str | None = None
    engine: str | None = None  # docker | binary | auto
    systemd_unit: bool = False
    container_name: str | None = None  # default: as recorded, else CONTAINER_NAME
    timeout: float = 60.0
    reconfigure: bool = False  # change what nodes use (port, address, names, TLS, auth, data dir)
    rotate_password: bool = False  # a new password for the same user (registry restarted with it)
    renew_cert: bool = False  # a new server certificate from the same CA for the same names


@dataclass
class UpResult:
    state: RegistryState
    already_running: bool
    credentials: Credentials | None = None
    new_password: bool = False  # show it: this is the only time
    systemd_unit: str | None = None
    notes: list[str] = field(default_factory=list)


def up(options: UpOptions) -> UpResult:
    paths = StatePaths(options.state_dir)
    made_root = not paths.root.exists()
    _writable_dir(paths.root, "state dir")
    with state_lock(paths.root):  # a refusal to wait for the lock must not delete the holder's dir
        try:
            return _up(options, paths, [str(paths.root)] if made_root else [])
        except BaseException:
            if made_root and not paths.state_file.exists():
                shutil.rmtree(paths.root, ignore_errors=True)  # a refused first `up` leaves nothing behind
            raise


def _up(options: UpOptions, paths: StatePaths, made: list[str]) -> UpResult:
    """``up`` holding the state dir's lock; ``made`` lists what it created so far."""
    previous = load_state(paths)
    _check_renewal(options, previous, paths)
    settled = settle(Requested(options.port, options.address, options.data_dir, list(options.hostnames),
                               options.tls, options.auth, options.engine), previous, paths, reconfigure=options.reconfigure)
    data_dir = (settled.data_dir or paths.root / "data").absolute()
    previous_engine = recorded_engine(previous, paths) if previous is not None else None
    previous_alive = previous_engine is not None and previous.running and previous_engine.running()
    if not previous_alive or (previous.address, previous.port) != (settled.address, settled.port):
        _port_free(settled.address, settled.port)
    notes: list[str] = []
    # The image a docker registry last ran, when no bundle or image is given: it is still in the engine.
    registry_image = options.registry_image or (
        previous.image if previous is not None and options.bundle is None and settled.engine == "docker" else None)
    container_name = options.container_name or (previous and previous.container) or CONTAINER_NAME
    engine = choose_engine(settled.engine, paths, notes, systemd_unit=options.systemd_unit,
                           container_name=container_name, bundle=options.bundle, registry_image=registry_image)
    made = (previous.created if previous is not None else []) + made
    if not data_dir.exists():
        made.append(str(data_dir))
    elif not (data_dir / STORAGE_TREE).exists():
        made.append(str(data_dir / STORAGE_TREE))  # the registry's tree in the user's directory
    _writable_dir(data_dir, "data dir")
    engine.prepare(options.bundle, registry_image)

    names = _names(settled)
    ca_file, credentials, created = _write_registry_files(options, settled, previous, paths, engine, names,
                                                          data_dir)
    # The password is shown until an `up` succeeds with it: a failed first run must not swallow it.
    new_password = credentials is not None and (created or previous is None or not previous.auth)

    local_host = settled.address if settled.address not in ("0.0.0.0", "::") else "127.0.0.1"
    state = RegistryState(
        engine=engine.name,
        host=_host_port(local_host, settled.port),
        hostnames=names,
        port=settled.port,
        address=settled.address,
        data_dir=str(data_dir),
        tls=settled.tls != "none",
        tls_mode=settled.tls,
        ca_file=str(ca_file) if ca_file else None,
        auth=credentials is not None,
        credentials_file=str(paths.credentials) if credentials else None,
        fingerprint=_fingerprint(paths, engine, data_dir),
        created=list(dict.fromkeys(made)),
        **engine.recorded(),
    )
    result = UpResult(state, False, credentials, new_password, notes=notes)

    if options.systemd_unit:
        if previous_alive:
            previous_engine.stop()
        result.systemd_unit = engine.unit(settled.port)
        save_state(paths, state)
        return result
    if previous_alive and previous.fingerprint == state.fingerprint and probe.answers(local_registry(state)):
        result.already_running = True
        save_state(paths, state)
        return result
    if previous is not None and previous.running:
        if previous_alive:
            previous_engine.stop()
        previous.running = False  # recorded now, in case starting the new one fails
        previous.created = state.created
        save_state(paths, previous)
        _port_free(settled.address, settled.port)

    engine.start(data_dir)
    try:
        probe.wait_ready(local_registry(state), engine.exit_reason, timeout=options.timeout)
    except BaseException:
        engine.stop()
        raise
    save_state(paths, state)
    return result


def _write_registry_files(options: UpOptions, settled: Settled, previous: RegistryState | None, paths: StatePaths,
                          engine: Engine, names: list[str],
                          data_dir: Path) -> tuple[Path | None, Credentials | None, bool]:
    """Certificate, htpasswd and config.yml in the registry dir; (CA, credentials, new password?)."""
    registry_dir = paths.registry_dir
    registry_dir.mkdir(parents=True, exist_ok=True)
    cert, key = registry_dir / "server.crt", registry_dir / "server.key"
    ca_file: Path | None = None
    if settled.tls == "auto":
        ca_file = ensure_tls(paths.ca_dir, cert, key, names, renew=options.renew_cert).ca_cert
    elif settled.keep_given_cert:  # the operator's certificate, installed by an earlier `up --cert`
        ca_file = Path(previous.ca_file) if previous.ca_file else None
    elif settled.tls == "given":
        install_given(options.cert, options.key, cert, key)
        ca_file = options.ca_file
    credentials, created = None, False
    if settled.auth == "htpasswd":
        username = options.username or (read_credentials(paths.credentials).username
                                         if paths.credentials.is_file() else DEFAULT_USER)
        credentials, created = ensure_credentials(paths.credentials, paths.htpasswd, username,
                                                  rotate=options.rotate_password)
    config = DistConfig(
        listen=_host_port(settled.address, settled.port),
        storage=engine.storage(data_dir),
        cert=engine.sees(cert) if settled.tls != "none" else None,
        key=engine.sees(key) if settled.tls != "none" else None,
        htpasswd=engine.sees(paths.htpasswd) if credentials else None,
    )
    write_private(paths.config, render(config, http_secret(paths.config)).encode())
    return ca_file, credentials, created


def _check_renewal(options: UpOptions, previous: RegistryState | None, paths: StatePaths) -> None:
    """``rotate-password`` and ``renew-cert`` act on a registry ``up`` set up, with what it generated."""
    if not (options.rotate_password or options.renew_cert):
        return
    if previous is None:
        raise UsageError(f"no registry was set up with state dir {paths.root}: run `mirror registry up` first")
    if options.rotate_password and not previous.auth:
        raise UsageError(f"the registry of state dir {paths.root} runs without auth: there is no password to "
                         "rotate (`mirror registry up --auth htpasswd --reconfigure` turns it on)")
    if options.renew_cert and recorded_tls(previous, paths) != "auto":
        raise UsageError(f"the registry of state dir {paths.root} does not use mirror's own CA: renew the "
                         "operator's certificate at its CA and run `mirror registry up --cert NEW --key NEW`"
                         if previous.tls else f"the registry of state dir {paths.root} runs without TLS")


def _host_port(address: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 address in brackets (the registry refuses ``::1:5000``)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _names(settled: Settled) -> list[str]:
    """Every name and IP the certificate covers: the given (and recorded) ones, the host's, loopback."""
    names = list(settled.hostnames) or [socket.gethostname()]
    if settled.address not in ("0.0.0.0", "::"):
        names.append(settled.address)
    names += list(AUTO_NAMES)
    return list(dict.fromkeys(n for n in names if n))


def _fingerprint(paths: StatePaths, engine: Engine, data_dir: Path) -> str:
    """What a running registry was started with; unchanged means `up` has nothing to do."""
    hasher = hashlib.sha256(f"{engine.name}\0{engine.runner}\0{data_dir}\0".encode())
    for path in sorted(paths.registry_dir.iterdir()):
        if path.is_file():
            hasher.update(path.name.encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()


def _writable_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_file = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-")
        probe_file.close()
    except OSError as exc:
        raise UsageError(f"{what} {path} is not writable: {exc.strerror or exc}") from None


def _port_free(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"port {port} is already in use on {address}: stop what listens there "
                                 "or pick another --port") from None
            if exc.errno == errno.EACCES:
                raise UsageError(f"port {port} needs privileges on {address}: run as root or pick a port "
                                 "above 1023") from None
            raise UsageError(f"cannot listen on {address}:{port}: {exc.strerror}") from None


@dataclass
class Stopped:
    """A registry ``stopped`` holds down: as recorded, its engine, and how it came back."""

    state: RegistryState
    paths: StatePaths
    engine: Engine
    was_running: bool
    restarted: UpResult | None = None


@contextmanager
def stopped(state_dir: Path) -> Iterator[Stopped]:
    """The registry of ``state_dir`` stopped for the block, then started again exactly as recorded (``up``
    with no flags) if it ran; one that was not running stays stopped. The state dir's lock is held
    throughout, so no ``up`` starts it in between. The block should not raise: if the start fails too,
    that error is the one raised."""
    paths = StatePaths(state_dir)
    if load_state(paths) is None:  # checked before the lock, which would make the directory
        raise UsageError(f"no registry was set up with state dir {paths.root}: run `mirror registry up` first")
    with state_lock(paths.root):
        state = load_state(paths)
        assert state is not None
        engine = recorded_engine(state, paths)
        held = Stopped(state, paths, engine, state.running and engine.running())
        if held.was_running:
            engine.stop()
            state.running = False  # recorded, in case this process dies before it starts again
            save_state(paths, state)
        try:
            yield held
        finally:
            if held.was_running:
                held.restarted = _up(UpOptions(state_dir=paths.root), paths, [])


@dataclass
class DownResult:
    stopped: bool
    purged: list[str] = field(default_factory=list)  # deleted
    kept: list[str] = field(default_factory=list)  # left, as up did not create them


def down(state_dir: Path, purge: bool = False) -> DownResult:
    paths = StatePaths(state_dir)
    if not paths.root.is_dir():
        return DownResult(False)
    with state_lock(paths.root):
        return _down(paths, purge)


def _down(paths: StatePaths, purge: bool) -> DownResult:
    state = load_state(paths)
    if state is None:
        return DownResult(False)
    stopped = recorded_engine(state, paths).stop()
    state.running = False
    save_state(paths, state)
    result = DownResult(stopped)
    if purge:
        _purge(paths, state, result)
    return result


def _purge(paths: StatePaths, state: RegistryState, result: DownResult) -> None:
    """Delete what ``up`` created (state.created), and in a state dir it did not make, only its files."""
    created = [Path(p) for p in state.created]
    targets = [p for p in created if p != paths.root]
    targets += [paths.root] if paths.root in created else paths.generated()
    for path in targets:
        if not (path.exists() or path.is_symlink()):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:  # e.g. files a container wrote as root
            done = f"; deleted {', '.join(result.purged)}" if result.purged else ""
            raise MirrorError(f"registry stopped{done}; but {path} could not be deleted: "
                              f"{exc.strerror or exc}") from None
        result.purged.append(str(path))
    result.kept = [str(p) for p in dict.fromkeys([Path(state.data_dir), paths.root]) if p.exists()]


@dataclass
class StatusReport:
    state: RegistryState | None
    running: bool = False
    answering: bool = False
    storage_bytes: int = 0
    repositories: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    certificate: CertificateSummary | None = None

    def to_json(self) -> dict:
        if self.state is None:
            return {"running": False}
        return {
            "url": self.state.url, "engine": self.state.engine, "running": self.running,
            "answering": self.answering, "hostnames": self.state.hostnames, "data_dir": self.state.data_dir,
            "storage_bytes": self.storage_bytes, "ca_file": self.state.ca_file,
            "credentials_file": self.state.credentials_file, "repositories": self.repositories,
            "error": self.error,
            "certificate": None if self.certificate is None else {
                "names": self.certificate.names, "not_after": self.certificate.not_after.isoformat(),
                "days_left": self.certificate.days_left, "expiring": self.certificate.expiring},
        }


def status(state_dir: Path) -> StatusReport:
    paths = StatePaths(state_dir)
    state = load_state(paths)
    if state is None:
        return StatusReport(None)
    report = StatusReport(state, running=state.running and recorded_engine(state, paths).running(),
                          storage_bytes=disk_usage(Path(state.data_dir)),
                          certificate=summary(paths.server_cert) if state.tls else None)
    if report.running:
        local = local_registry(state)
        report.answering = probe.answers(local)
        if report.answering:
            try:
                report.repositories = probe.repositories(local)
            except MirrorError as exc:  # status reports what it can
                report.error = f"could not list repositories: {exc}"
    return report


def disk_usage(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (allocated blocks, as du counts)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total
