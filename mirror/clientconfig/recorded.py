"""The registry ``mirror registry up`` started here, as ``mirror config`` sees it.

Nodes need its CA and user as much as push does, so config finds it the
same way push does. A ``--registry`` names it when the port is the one it
listens on and the host is a name in its certificate, a name ``up`` was
given, or an address of this machine (the bastion's IP, say). The last kind
may be missing from the certificate, and nodes would then refuse its TLS:
that is worth a warning before the files reach them.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from ..errors import UsageError
from ..server.state import LocalRegistry, StatePaths, default_state_dir, find_local_registry


@dataclass(frozen=True)
class Recorded:
    registry: str  # HOST:PORT as the nodes will use it
    local: LocalRegistry
    warning: str | None = None  # --registry names a host its certificate does not cover


def find(registry: str | None) -> Recorded | None:
    """The recorded registry ``registry`` names (or, without one, the running one), else None."""
    paths = StatePaths(default_state_dir())
    if registry is None:
        from ..server.probe import require_local_registry

        local = require_local_registry(paths.root)
        name = local.hostnames[0] if local.hostnames else _split(local.host)[0]
        return Recorded(f"{_bracketed(name)}:{_split(local.host)[1]}", local)
    try:
        local = find_local_registry(paths.root)
    except UsageError:  # an unreadable state file says nothing about the registry named
        local = None
    if local is None:
        return None
    host, port = _split(registry)
    if port != _split(local.host)[1]:
        return None
    sans = certificate_names(paths.server_cert) if not local.plain_http else []
    known = {*local.hostnames, _split(local.host)[0]}
    if not (_covered(host, sans) or host in known or _is_this_machine(host)):
        return None
    warning = None
    if sans and not _covered(host, sans):
        warning = (f"--registry {registry}: {host} is not in the certificate of the registry `mirror registry "
                   f"up` started (it covers {', '.join(sans)}), so nodes will refuse its TLS: use one of "
                   f"those names, or run `mirror registry up --hostname {host}` again")
    return Recorded(registry, local, warning)


def certificate_names(cert: Path) -> list[str]:
    """The DNS names and IP addresses a PEM server certificate is valid for."""
    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
        sans = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return [*sans.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))]


def _covered(host: str, sans: list[str]) -> bool:
    """Whether TLS clients accept ``host`` for a certificate naming ``sans`` (one-label wildcards too)."""
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for name in sans:
        name = name.lower()
        if ip is not None:
            if _ip(name) == ip:
                return True
        elif name == host or (name.startswith("*.") and host.partition(".")[2] == name[2:] and "." in name[2:]):
            return True
    return False


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_this_machine(host: str) -> bool:
    """Whether ``host`` resolves to an address of this machine (one a socket can bind to)."""
    try:
        addresses = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return False
    for family, kind, _, _, address in addresses:
        with socket.socket(family, kind) as probe:
            try:
                probe.bind((address[0], 0))
            except OSError:
                continue
            return True
    return False


def _split(registry: str) -> tuple[str, int]:
    """(host, port) of HOST[:PORT]; no port means 443, what clients assume for https."""
    parts = urlsplit(f"//{registry}")
    try:
        port = parts.port
    except ValueError:  # not a port: no recorded registry listens there; NodeRegistry says what is wrong
        port = -1
    return parts.hostname or "", port or 443


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
