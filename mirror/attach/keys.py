"""Offline verification of cosign signatures with public keys (``--verify-key``), by ``cryptography``.

cosign signs the payload bytes with the key's scheme: ECDSA and RSA (PKCS #1 v1.5) over
SHA-256, its default ``--signature-digest-algorithm`` (a P-384 or P-521 key's own hash
is accepted too), Ed25519 over the bytes themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ..errors import UsageError
from ..model.oci import Descriptor, Manifest
from .cosign import SIGNATURE_ANNOTATION, SIMPLE_SIGNING, Payload, shown

MAX_KEY_FILE = 64 << 10
_CURVE_HASHES = {"secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}

VERIFIED, PRESENT, ABSENT, INVALID = "verified", "present", "absent", "invalid"


class Verifier(Protocol):
    """What may vouch for a signature: a public key (VerifyKey), a keyless identity (keyless.KeylessIdentity)."""

    name: str

    def check(self, signature: bytes, payload: bytes, annotations: dict[str, str]) -> str:
        """Why this verifier does not vouch for ``signature`` over ``payload`` ("" when it does)."""


@dataclass(frozen=True)
class VerifyKey:
    name: str  # the key file
    key: object

    def check(self, signature: bytes, payload: bytes, annotations: dict[str, str]) -> str:
        return "" if self.verifies(signature, payload) else f"the key {self.name} does not verify it"

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        key = self.key
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, payload)
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(key, ec.EllipticCurvePublicKey):
                for algorithm in {hashes.SHA256, _CURVE_HASHES.get(key.curve.name, hashes.SHA256)}:
                    try:
                        key.verify(signature, payload, ec.ECDSA(algorithm()))
                        return True
                    except InvalidSignature:
                        continue
                return False
            else:
                return False
        except InvalidSignature:
            return False
        return True


def load_keys(paths: Iterable[Path]) -> list[VerifyKey]:
    """PEM public keys (ECDSA P-256/P-384/P-521, RSA, Ed25519); a file that is none is a UsageError naming it."""
    keys = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise UsageError(f"--verify-key {path}: {exc.strerror}") from None
        try:
            if len(data) > MAX_KEY_FILE:
                raise ValueError("larger than any public key file")
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise UsageError(f"--verify-key {path}: not a PEM public key ({str(exc)[:200]})") from None
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
            raise UsageError(f"--verify-key {path}: {type(key).__name__} keys are not supported "
                             "(ECDSA, RSA and Ed25519 are)")
        keys.append(VerifyKey(str(path), key))
    return keys


@dataclass
class Verdict:
    """An image's signatures: ``verified`` (a key verifies one), ``present`` (not checked, no key given),
    ``absent`` (none), ``invalid`` (none verifies; ``reason`` says why the first did not)."""

    status: str
    reason: str = ""
    signed_by: list[str] = field(default_factory=list)  # the key files that verified one


def verdict_reason(verdict: Verdict) -> str:
    return "it has no cosign signature" if verdict.status == ABSENT else verdict.reason


def signature_layers(manifest: Manifest) -> list[Descriptor]:
    """The simple signing payloads of a ``.sig`` image."""
    return [layer for layer in manifest.children()[1:] if layer.media_type == SIMPLE_SIGNING]


def judge(subjects: set[str], repository: str, signatures: list[tuple[Manifest, dict[str, bytes]]],
          keys: Sequence[Verifier]) -> Verdict:
    """Whether any signature vouches for one of ``subjects`` (the image's digests) in ``repository``.

    ``signatures``: each ``.sig`` manifest with its payload blobs (digest -> bytes, as read).
    """
    layers = [(layer, blobs) for manifest, blobs in signatures for layer in signature_layers(manifest)]
    if not layers:
        return Verdict(ABSENT)
    if not keys:
        return Verdict(PRESENT)
    reasons = []
    signed_by = []
    for layer, blobs in layers:
        reason = _check(layer, blobs.get(layer.digest), subjects, repository, keys, signed_by)
        if reason:
            reasons.append(reason)
    if signed_by:
        return Verdict(VERIFIED, signed_by=sorted(set(signed_by)))
    return Verdict(INVALID, reasons[0])


def _check(layer: Descriptor, payload: bytes | None, subjects: set[str], repository: str,
           keys: Sequence[Verifier], signed_by: list[str]) -> str:
    """Why this payload does not vouch for the image ("" when it does; the key is added to ``signed_by``)."""
    if payload is None or "sha256:" + hashlib.sha256(payload).hexdigest() != layer.digest:
        return f"the payload {layer.digest} of its signature is not at hand"
    try:
        claim = Payload.parse(payload)
    except ValueError as exc:
        return f"its signature payload is malformed ({str(exc)[:200]})"
    if claim.digest not in subjects:
        return f"its signature names {shown(claim.digest, 80)}, not the image's digest"
    if not claim.names_repository(repository):
        return f"its signature is for {shown(claim.reference)}, not {repository}"
    encoded = layer.annotations.get(SIGNATURE_ANNOTATION, "")
    try:
        signature = base64.b64decode(encoded, validate=True) if len(encoded) < 4096 else b""
    except binascii.Error:
        signature = b""
    if not signature:
        return f"its signature annotation {SIGNATURE_ANNOTATION} is missing or not base64"
    refusals = {key.name: key.check(signature, payload, layer.annotations) for key in keys}
    matching = [name for name, why in refusals.items() if not why]
    if not matching:
        return "no --verify-key verifies its signature" if all(isinstance(k, VerifyKey) for k in keys) \
            else "nothing given verifies its signature: " + "; ".join(dict.fromkeys(refusals.values()))[:600]
    signed_by.extend(matching)
    return ""
