"""Real components on loopback for tests, the demo and the benchmark.

Starts the Debian ``docker-registry`` (CNCF distribution) on a free port with
its storage in a given directory, optionally behind htpasswd auth and TLS
made by a throwaway CA. Used by tests/conftest.py, scripts/demo.sh and
scripts/bench.py so that every one of them runs the same real registry.

    python3 scripts/testbed.py registry DIR [--port N]   # runs until killed
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import ssl
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_BINARY = "docker-registry"


class MissingComponent(RuntimeError):
    pass


def require(binary: str) -> str:
    """Path of a component binary; scripts/install-deps.sh installs them all."""
    path = shutil.which(binary)
    if not path:
        raise MissingComponent(
            f"{binary} is not installed: run scripts/install-deps.sh (it apt-installs every component)"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TLSFiles:
    ca_cert: Path
    cert: Path
    key: Path


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TLSFiles:
    """A throwaway CA and a server certificate for ``hosts`` (IPs and names)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    run = lambda *args: subprocess.run(args, check=True, capture_output=True)  # noqa: E731
    openssl = require("openssl")
    run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=mirror test CA", "-keyout", str(ca_key), "-out", str(ca_cert))
    run(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + hosts[0],
        "-keyout", str(key), "-out", str(csr))
    sans = ",".join(("IP:" if h.replace(".", "").isdigit() or ":" in h else "DNS:") + h for h in hosts)
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n")
    run(openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return TLSFiles(ca_cert, cert, key)


def make_htpasswd(path: Path, username: str, password: str) -> Path:
    """bcrypt htpasswd, as distribution requires; password goes over stdin."""
    subprocess.run([require("htpasswd"), "-iBc", str(path), username],
                   input=password.encode(), check=True, capture_output=True)
    return path


@dataclass
class Registry:
    """A running docker-registry process. ``host`` is what references use."""

    directory: Path
    port: int
    process: subprocess.Popen
    tls: TLSFiles | None = None
    credentials: tuple[str, str] | None = None
    log: Path = field(default=Path("/dev/null"))
    address: str = "127.0.0.1"

    @property
    def host(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """Die at once, as a crashed registry would."""
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.process = _spawn(self.directory, self.log)
        _wait_ready(self)


def start_registry(directory: Path, port: int | None = None, *, tls: TLSFiles | None = None,
                   htpasswd: Path | None = None, credentials: tuple[str, str] | None = None,
                   address: str = "127.0.0.1") -> Registry:
    """Start docker-registry with storage under ``directory``; wait until /v2/ answers.

    ``address`` "::1" serves on IPv6 loopback, which dockerd (unlike 127.0.0.0/8)
    does not exempt from TLS verification.
    """
    require(REGISTRY_BINARY)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = [
        "version: 0.1",
        "log: {level: warn, accesslog: {disabled: true}}",
        "storage:",
        f"  filesystem: {{rootdirectory: {directory / 'storage'}}}",
        "  delete: {enabled: true}",
        "http:",
        f"  addr: '{f'[{address}]' if ':' in address else address}:{port}'",
        "  secret: mirror-test-secret",
    ]
    if tls:
        config.append(f"  tls: {{certificate: {tls.cert}, key: {tls.key}}}")
    if htpasswd:
        config += ["auth:", f"  htpasswd: {{realm: mirror-test, path: {htpasswd}}}"]
    (directory / "config.yml").write_text("\n".join(config) + "\n")
    registry = Registry(directory, port, _spawn(directory, directory / "registry.log"), tls,
                        credentials, directory / "registry.log", address)
    _wait_ready(registry)
    return registry


def _spawn(directory: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([require(REGISTRY_BINARY), "serve", str(directory / "config.yml")],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(registry: Registry, timeout: float = 20) -> None:
    context = ssl.create_default_context(cafile=str(registry.tls.ca_cert)) if registry.tls else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {registry.log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(registry.url + "/v2/", timeout=2, context=context)
            return
        except urllib.error.HTTPError as exc:  # 401 means it is up, behind auth
            if exc.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.1)
    registry.stop()
    raise RuntimeError(f"docker-registry on port {registry.port} did not answer within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("registry", help="run a loopback registry until killed")
    reg.add_argument("directory", type=Path)
    reg.add_argument("--port", type=int)
    args = parser.parse_args()
    registry = start_registry(args.directory, args.port)
    print(registry.host, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        registry.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()


if __name__ == "__main__":
    main()
