"""Keyless cosign signatures, verified offline against a trusted root the operator carries in.

A keyless signature's layer carries, besides the signature, the signer's short-lived
Fulcio certificate (``dev.sigstore.cosign/certificate``, PEM) and the Rekor bundle
(``dev.sigstore.cosign/bundle``: the log entry and its signed entry timestamp, SET).
It is accepted when, as cosign checks it (pkg/cosign/verify.go VerifyBundle, TrustedCert):

1. the certificate verifies the signature over the payload;
2. it was issued by a certificate authority of the trusted root (``--trusted-root``,
   Sigstore's trusted_root.json format, as ``cosign trusted-root create`` writes it),
   for code signing, to ``--certificate-identity`` (an email or URI subject
   alternative name) by ``--certificate-oidc-issuer`` (Fulcio's issuer extension);
3. a transparency log of the trusted root signed the entry (the SET over the
   canonical JSON of body, integratedTime, logID and logIndex), the entry records
   this payload's hash, this signature and this certificate, and it was logged
   while the certificate (and its authority) were valid.

The crypto is ``cryptography``'s; nothing here is a hand-written primitive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ..clock import parse_time
from ..errors import UsageError
from .cosign import BUNDLE_ANNOTATION, CERTIFICATE_ANNOTATION, shown
from .keys import MAX_KEY_FILE, VerifyKey

MAX_TRUSTED_ROOT = 1 << 20
ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # the issuer's URL as raw bytes (Fulcio, deprecated)
ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # the same as a DER UTF8String


@dataclass(frozen=True)
class Authority:
    certificates: list[x509.Certificate]  # the chain as the trusted root lists it, issuing CA first
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class KeylessIdentity:
    """Who must have signed (``identity`` by ``issuer``), and whom to trust for it (the trusted root)."""

    name: str
    identity: str
    issuer: str
    authorities: list[Authority]
    logs: dict[str, Any]  # logID (hex sha256 of the key's DER) -> the log's public key

    def check(self, signature: bytes, payload: bytes, annotations: dict[str, str]) -> str:
        pem = annotations.get(CERTIFICATE_ANNOTATION, "")
        bundle = annotations.get(BUNDLE_ANNOTATION, "")
        if not pem or not bundle:
            return "it is no keyless signature (no certificate and Rekor bundle)"
        try:
            certificate = x509.load_pem_x509_certificate(pem.encode()[:MAX_KEY_FILE])
        except ValueError:
            return "its certificate is not PEM"
        why = (self._signed(certificate, signature, payload) or self._identity(certificate)
               or self._logged(certificate, bundle, signature, payload))
        return why

    def _signed(self, certificate: x509.Certificate, signature: bytes, payload: bytes) -> str:
        key = certificate.public_key()
        if not VerifyKey("certificate", key).verifies(signature, payload):
            return "its certificate's key does not verify it"
        return ""

    def _identity(self, certificate: x509.Certificate) -> str:
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return "its certificate names no identity or usage"
        if ExtendedKeyUsageOID.CODE_SIGNING not in usages:
            return "its certificate is not for code signing"
        identities = names.get_values_for_type(x509.RFC822Name) + names.get_values_for_type(
            x509.UniformResourceIdentifier)
        if self.identity not in identities:
            return f"its certificate is for {shown(', '.join(identities)) if identities else 'nobody'}, " \
                   f"not {shown(self.identity)}"
        issuer = _issuer(certificate)
        if issuer != self.issuer:
            return f"its certificate was issued on the word of OIDC issuer {shown(issuer)}, not {shown(self.issuer)}"
        return ""

    def _logged(self, certificate: x509.Certificate, bundle: str, signature: bytes, payload: bytes) -> str:
        try:
            document = json.loads(bundle)
            entry = document["Payload"]
            body, logged_at, log_id = str(entry["body"]), entry["integratedTime"], str(entry["logID"])
            index = entry["logIndex"]
            if type(logged_at) is not int or type(index) is not int:
                raise ValueError("integratedTime and logIndex are integers")
            stamp = base64.b64decode(str(document["SignedEntryTimestamp"]), validate=True)
            record = json.loads(base64.b64decode(body, validate=True))
            spec = record["spec"]
            logged_hash = spec["data"]["hash"]
            logged_signature = spec["signature"]["content"]
            logged_key = base64.b64decode(spec["signature"]["publicKey"]["content"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return "its Rekor bundle is malformed"
        log_key = self.logs.get(log_id)
        if log_key is None:
            return "its Rekor bundle is from a log the trusted root does not list"
        canonical = json.dumps({"body": body, "integratedTime": logged_at, "logID": log_id, "logIndex": index},
                               separators=(",", ":"), sort_keys=True).encode()
        try:
            log_key.verify(stamp, canonical, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, AttributeError, TypeError):
            return "its Rekor bundle's signed entry timestamp does not verify with the trusted root's log key"
        if logged_hash != {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()} \
                or logged_signature != base64.b64encode(signature).decode():
            return "its Rekor entry is for another payload or signature"
        try:
            if x509.load_pem_x509_certificate(logged_key).public_bytes(serialization.Encoding.DER) != \
                    certificate.public_bytes(serialization.Encoding.DER):
                return "its Rekor entry is for another certificate"
        except ValueError:
            return "its Rekor entry is for another certificate"
        when = datetime.fromtimestamp(logged_at, timezone.utc)
        if not certificate.not_valid_before_utc <= when <= certificate.not_valid_after_utc:
            return f"it was logged at {when:%Y-%m-%dT%H:%M:%SZ}, outside its certificate's validity"
        return self._chained(certificate, when)

    def _chained(self, certificate: x509.Certificate, when: datetime) -> str:
        """Issued by an authority of the trusted root that was valid when the signature was logged
        (Fulcio's certificates last minutes: cosign too checks the chain at the signing time)."""
        for authority in self.authorities:
            if (authority.start and when < authority.start) or (authority.end and when > authority.end):
                continue
            chain = [certificate, *authority.certificates]
            try:
                for child, parent in zip(chain, chain[1:]):
                    child.verify_directly_issued_by(parent)
                    if not parent.not_valid_before_utc <= when <= parent.not_valid_after_utc:
                        raise ValueError("expired")
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return ""
        return "its certificate was not issued by a certificate authority of the trusted root"


def load_keyless(trusted_root: Path | None, identity: str | None, issuer: str | None) -> list[KeylessIdentity]:
    """The keyless verifier the three flags describe, or none; a UsageError names what is wrong."""
    given = [trusted_root is not None, identity is not None, issuer is not None]
    if not any(given):
        return []
    if not all(given):
        raise UsageError("keyless verification needs --trusted-root, --certificate-identity and "
                         "--certificate-oidc-issuer together")
    assert trusted_root is not None and identity is not None and issuer is not None
    try:
        with open(trusted_root, "rb") as file:
            data = file.read(MAX_TRUSTED_ROOT + 1)
        if len(data) > MAX_TRUSTED_ROOT:
            raise ValueError(f"larger than {MAX_TRUSTED_ROOT} bytes")
        document = json.loads(data)
        authorities = [_authority(item) for item in document.get("certificateAuthorities") or []]
        logs = {}
        for log in document.get("tlogs") or []:
            raw = base64.b64decode(log["publicKey"]["rawBytes"], validate=True)
            logs[hashlib.sha256(raw).hexdigest()] = serialization.load_der_public_key(raw)
    except OSError as exc:
        raise UsageError(f"--trusted-root {trusted_root}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise UsageError(f"--trusted-root {trusted_root}: not a Sigstore trusted root "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not authorities or not logs:
        raise UsageError(f"--trusted-root {trusted_root}: it lists no certificate authority or no transparency log")
    return [KeylessIdentity(f"{identity} ({issuer})", identity, issuer, authorities, logs)]


def _authority(item: dict[str, Any]) -> Authority:
    certificates = [x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"], validate=True))
                    for c in item["certChain"]["certificates"]]
    valid = item.get("validFor") or {}
    return Authority(certificates, _time(valid.get("start")), _time(valid.get("end")))


def _time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def _issuer(certificate: x509.Certificate) -> str:
    """Fulcio's OIDC issuer extension: v2 (a DER UTF8String) else v1 (the bare string)."""
    for oid in (ISSUER_V2, ISSUER_V1):
        try:
            value = certificate.extensions.get_extension_for_oid(oid).value.value  # type: ignore[attr-defined]
        except x509.ExtensionNotFound:
            continue
        if oid == ISSUER_V2:
            value = _der_utf8(value)
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return ""
    return ""


def _der_utf8(value: bytes) -> bytes:
    """The contents of a DER UTF8String (tag 12, short or long length form); b"" for anything else."""
    if len(value) < 2 or value[0] != 0x0C:
        return b""
    length, start = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(value[2:2 + count], "big"), 2 + count
    return value[start:start + length] if start + length == len(value) else b""
