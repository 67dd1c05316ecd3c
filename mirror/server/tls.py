"""``--tls auto``: a CA of our own and a server certificate it signs.

The CA is made once and kept, so nodes that trust it keep working when
``up`` runs again; the server certificate is re-issued whenever the names
it must cover change or it nears expiry. Keys are ECDSA P-256 (fast to make,
accepted by Go's TLS in distribution, containerd and Docker).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import UsageError
from ..safefiles import write_file
from .htpasswd import write_private

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest lifetime Apple/Chrome-era clients accept
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ServerTLS:
    cert: Path
    key: Path
    ca_cert: Path | None  # what clients must trust; None for a publicly trusted --cert


def ensure_tls(ca_dir: Path, cert: Path, key: Path, names: list[str], *, renew: bool = False) -> ServerTLS:
    """Keep or make the CA in ``ca_dir``; issue ``cert``/``key`` for ``names`` (anew with ``renew``)."""
    ca_cert_path, ca_key_path = ca_dir / "ca.crt", ca_dir / "ca.key"
    if ca_cert_path.is_file() and ca_key_path.is_file():
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        write_private(ca_key_path, _key_pem(ca_key))
        write_file(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    if renew or not _current(cert, key, ca_cert, names):
        server_key = ec.generate_private_key(ec.SECP256R1())
        write_private(key, _key_pem(server_key))
        write_file(cert, _server_certificate(server_key, ca_key, ca_cert, names)
                   .public_bytes(serialization.Encoding.PEM))
    return ServerTLS(cert, key, ca_cert_path)


@dataclass(frozen=True)
class CertificateSummary:
    names: list[str]
    not_after: datetime.datetime

    @property
    def days_left(self) -> int:
        return (self.not_after - datetime.datetime.now(datetime.timezone.utc)).days

    @property
    def expiring(self) -> bool:
        return self.not_after - datetime.datetime.now(datetime.timezone.utc) < RENEW_BEFORE


def summary(cert: Path) -> CertificateSummary | None:
    """The names and expiry of the server certificate, or None when there is none (plain HTTP)."""
    try:
        existing = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):
        return None
    try:
        sans = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in sans]
    except x509.ExtensionNotFound:
        names = []
    return CertificateSummary(names, existing.not_valid_after_utc)


def install_given(cert_src: Path, key_src: Path, cert: Path, key: Path) -> None:
    """Copy an operator's ``--cert``/``--key`` where the registry reads them."""
    for flag, path in (("--cert", cert_src), ("--key", key_src)):
        if not path.is_file():
            raise UsageError(f"{flag} {path}: no such file")
    try:
        x509.load_pem_x509_certificate(cert_src.read_bytes())
    except ValueError:
        raise UsageError(f"--cert {cert_src}: not a PEM certificate") from None
    write_file(cert, cert_src.read_bytes())
    write_private(key, key_src.read_bytes())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mirror"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    start, end = _validity(CA_DAYS)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name("mirror registry CA"))
        .issuer_name(_name("mirror registry CA"))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(key: ec.EllipticCurvePrivateKey, ca_key, ca_cert: x509.Certificate,
                        names: list[str]) -> x509.Certificate:
    start, end = _validity(SERVER_DAYS)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _current(cert: Path, key: Path, ca_cert: x509.Certificate, names: list[str]) -> bool:
    """Whether ``cert`` is ours, covers exactly ``names`` and is not near expiry."""
    if not (cert.is_file() and key.is_file()):
        return False
    try:
        existing = x509.load_pem_x509_certificate(cert.read_bytes())
        sans = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    try:
        existing.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    remaining = existing.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    return (set(sans) == {_general_name(n) for n in names}
            and remaining > RENEW_BEFORE)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
