"""Real components on loopback for tests, the demo and the benchmark.

Starts the Debian ``docker-registry`` (CNCF distribution) on a free port with
its storage in a given directory, optionally behind htpasswd auth, bearer
tokens from a small token server (``TokenServer``) and TLS made by a
throwaway CA. Used by tests/conftest.py, scripts/demo.sh and
scripts/bench.py so that every one of them runs the same real registry.

    PYTHONPATH=tests python3 -m support.testbed registry DIR [--port N]   # runs until killed
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; waited for either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


# -- bearer tokens, as Docker Hub and Quay hand them out -----------------------


@dataclass
class TokenRequest:
    user: str | None  # None: anonymous
    scopes: list[str]
    grant: str  # "password" (GET with basic or anonymous) or "refresh_token" (POST)


class TokenServer:
    """Issues RS256 JWTs for a docker-registry ``auth: token`` config; records each request."""

    SERVICE, ISSUER = "mirror-test-registry", "mirror-test-issuer"

    def __init__(self, directory: Path, users: dict[str, str], refresh_tokens: dict[str, str]):
        directory.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = directory / "signer.key", directory / "signer.crt"
        subprocess.run([require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=mirror test token signer", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run([require("openssl"), "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users, self.refresh_tokens = users, refresh_tokens
        self.requests: list[TokenRequest] = []
        self.expired_next = 0  # this many next tokens are issued already expired
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
        self.server.daemon_threads = True
        self.server.tokens = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def auth_config(self, realm: str | None = None) -> str:
        """docker-registry's ``auth:`` entry trusting these tokens; ``realm``: where clients fetch them
        (default this server; a proxy in front of it to make each token cost a network round trip)."""
        return (f"token: {{realm: '{realm or self.url + '/token'}', service: {self.SERVICE}, "
                f"issuer: {self.ISSUER}, rootcertbundle: {self.cert}}}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":", 2) if scope.count(":") >= 2 else (scope, "", "")
            wanted = actions.split(",")
            granted = wanted if user else [a for a in wanted if a == "pull"]
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        expired = self.expired_next > 0
        self.expired_next -= 1 if expired else 0
        exp = now - 600 if expired else now + 300  # beyond the registry's 60 s leeway
        claims = {"iss": self.ISSUER, "sub": user or "", "aud": self.SERVICE, "exp": exp,
                  "nbf": exp - 900, "iat": exp - 900, "jti": secrets.token_hex(8), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run([require("openssl"), "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenHandler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:
        tokens: TokenServer = self.server.tokens  # type: ignore[attr-defined]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        user = None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if tokens.users.get(name) != password:
                return self._reply(tokens, TokenRequest(name, query.get("scope", []), "password"), 401, {})
            user = name
        request = TokenRequest(user, query.get("scope", []), "password")
        self._reply(tokens, request, 200, {"token": tokens.issue(user, request.scopes), "expires_in": 300})

    def do_POST(self) -> None:
        tokens: TokenServer = self.server.tokens  # type: ignore[attr-defined]
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        scopes = form.get("scope", [""])[0].split()
        user = tokens.refresh_tokens.get(form.get("refresh_token", [""])[0])
        request = TokenRequest(user, scopes, form.get("grant_type", [""])[0])
        if user is None or request.grant != "refresh_token":
            return self._reply(tokens, request, 401, {})
        self._reply(tokens, request, 200, {"access_token": tokens.issue(user, scopes), "expires_in": 300})

    def _reply(self, tokens: TokenServer, request: TokenRequest, status: int, body: dict) -> None:
        tokens.requests.append(request)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)



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
        stop_process(self.process)

    def cpu_seconds(self) -> float:
        """CPU time the registry process has used so far (user + system), from /proc."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
                   address: str = "127.0.0.1", token_auth: str | None = None, delete: bool = True) -> Registry:
    """Start docker-registry with storage under ``directory``; wait until /v2/ answers.

    ``address`` "::1" serves on IPv6 loopback, which dockerd (unlike 127.0.0.0/8)
    does not exempt from TLS verification. ``token_auth``: a
    ``TokenServer.auth_config()``, for bearer tokens instead of htpasswd. ``delete=False``
    refuses manifest deletes, as distribution does by default.
    """
    require(REGISTRY_BINARY)
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = [
        "version: 0.1",
        "log: {level: warn, accesslog: {disabled: true}}",
        "storage:",
        f"  filesystem: {{rootdirectory: {directory / 'storage'}}}",
        f"  delete: {{enabled: {'true' if delete else 'false'}}}",
        "http:",
        f"  addr: '{f'[{address}]' if ':' in address else address}:{port}'",
        "  secret: mirror-test-secret",
    ]
    if tls:
        config.append(f"  tls: {{certificate: {tls.cert}, key: {tls.key}}}")
    if htpasswd:
        config += ["auth:", f"  htpasswd: {{realm: mirror-test, path: {htpasswd}}}"]
    elif token_auth:
        config += ["auth:", f"  {token_auth}"]
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
        time.sleep(0.02)  # it answers ~50 ms after the start: a coarser poll adds most of a step to every test
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
