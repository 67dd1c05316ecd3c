"""Signed images for the tests, in cosign's exact format, pushed into a loopback registry.

What cosign (sigstore/cosign v2/v3, pkg/oci and sigstore/sigstore pkg/signature/payload) writes:

- the payload, Go's json.Marshal of SimpleContainerImage (compact, fields in struct order)::

    {"critical":{"identity":{"docker-reference":"index.docker.io/acme/app"},
     "image":{"docker-manifest-digest":"sha256:..."},"type":"cosign container image signature"},"optional":null}

- the signature image, tagged ``sha256-HEX.sig`` in the image's repository: an OCI manifest whose
  config is go-containerregistry's config of an empty image (media type
  application/vnd.oci.image.config.v1+json) and whose one layer per signature is the payload,
  media type application/vnd.dev.cosign.simplesigning.v1+json, with the base64 signature in
  the annotation ``dev.cosignproject.cosign/signature`` (ECDSA: ASN.1 DER over SHA-256).
- attestations (``.att``): layers application/vnd.dsse.envelope.v1+json holding a DSSE envelope
  of an in-toto statement, annotated ``predicateType``; SBOMs (``.sbom``): one layer, text/spdx+json.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY = "application/vnd.oci.empty.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def go_json(document) -> bytes:
    """Go's json.Marshal: compact, no spaces, keys in the order given."""
    return json.dumps(document, separators=(",", ":")).encode()


class Signer:
    """A key pair as ``cosign generate-key-pair`` (ECDSA P-256) or an imported key makes."""

    def __init__(self, kind: str = "p256"):
        self.kind = kind
        self.key = {"p256": lambda: ec.generate_private_key(ec.SECP256R1()),
                    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
                    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
                    "ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, payload: bytes) -> str:
        if self.kind == "ed25519":
            raw = self.key.sign(payload)
        elif self.kind == "rsa":
            raw = self.key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            raw = self.key.sign(payload, ec.ECDSA(hashes.SHA256()))  # cosign's default digest algorithm
        return base64.b64encode(raw).decode()


def payload(reference: str, digest: str) -> bytes:
    return go_json({"critical": {"identity": {"docker-reference": reference},
                                 "image": {"docker-manifest-digest": digest},
                                 "type": "cosign container image signature"},
                    "optional": None})


@dataclass
class Pushed:
    digest: str
    size: int
    media_type: str


class Source:
    """Writes into one repository of a plain-HTTP registry."""

    def __init__(self, host: str, repository: str):
        self.client = httpx.Client(base_url=f"http://{host}", timeout=60)
        self.repository = repository

    def blob(self, data: bytes) -> tuple[str, int]:
        digest = digest_of(data)
        if self.client.head(f"/v2/{self.repository}/blobs/{digest}").status_code != 200:
            started = self.client.post(f"/v2/{self.repository}/blobs/uploads/")
            assert started.status_code == 202, started.text
            location = httpx.URL(started.headers["location"]).copy_merge_params({"digest": digest})
            put = self.client.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
            assert put.status_code == 201, put.text
        return digest, len(data)

    def manifest(self, document: dict, reference: str | None = None) -> Pushed:
        data = json.dumps(document, indent=2).encode()
        media_type = document["mediaType"]
        digest = digest_of(data)
        put = self.client.put(f"/v2/{self.repository}/manifests/{reference or digest}", content=data,
                              headers={"Content-Type": media_type})
        assert put.status_code == 201, put.text
        return Pushed(digest, len(data), media_type)

    def image(self, tag: str | None, platform: str = "linux/amd64", seed: str = "") -> Pushed:
        """A small single-platform image, tagged (None: by digest only)."""
        os_name, architecture = platform.split("/")[:2]
        layer, layer_size = self.blob(gzip.compress(f"{self.repository} {tag} {platform} {seed}".encode(), mtime=0))
        config, config_size = self.blob(go_json({"architecture": architecture, "os": os_name,
                                                 "rootfs": {"type": "layers", "diff_ids": [layer]}}))
        return self.manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                              "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_size},
                              "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": layer_size}]}, tag)

    def index(self, tag: str, platforms: list[str]) -> tuple[Pushed, list[Pushed]]:
        children = [self.image(None, platform, seed=tag) for platform in platforms]
        entries = [{"mediaType": c.media_type, "digest": c.digest, "size": c.size,
                    "platform": {"os": p.split("/")[0], "architecture": p.split("/")[1]}}
                   for c, p in zip(children, platforms)]
        return self.manifest({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, tag), children

    def cosign_image(self, subject: str, suffix: str, layers: list[tuple[bytes, str, dict]]) -> Pushed:
        """cosign's attachment image for ``subject`` at ``sha256-HEX.SUFFIX``: a layer per (data, type, annotations)."""
        descriptors = []
        for data, media_type, notes in layers:
            digest, size = self.blob(data)
            descriptors.append({"mediaType": media_type, "size": size, "digest": digest, "annotations": notes})
        config, config_size = self.blob(go_json({
            "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "", "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]}, "config": {}}))
        tag = f"sha256-{subject.split(':')[1]}.{suffix}"
        return self.manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                              "config": {"mediaType": OCI_CONFIG, "size": config_size, "digest": config},
                              "layers": descriptors}, tag)

    def sign(self, subject: str, signer: Signer, reference: str, *, names: str | None = None,
             corrupt: bool = False) -> Pushed:
        """``cosign sign --key``: a payload for ``names`` (default: the subject), signed."""
        body = payload(reference, names or subject)
        signature = signer.sign(body)
        if corrupt:
            raw = bytearray(base64.b64decode(signature))
            raw[len(raw) // 2] ^= 0x01
            signature = base64.b64encode(bytes(raw)).decode()
        return self.cosign_image(subject, "sig", [(body, SIMPLE_SIGNING, {SIGNATURE_ANNOTATION: signature})])

    def sign_keyless(self, subject: str, sigstore: "Sigstore", reference: str, identity: str, issuer: str) -> Pushed:
        body = payload(reference, subject)
        return self.cosign_image(subject, "sig", [(body, SIMPLE_SIGNING, sigstore.sign(body, identity, issuer))])

    def attest(self, subject: str, signer: Signer, name: str) -> Pushed:
        """``cosign attest --key``: a DSSE envelope of an in-toto statement about the subject."""
        provenance = "https://slsa.dev/provenance/v0.2"
        statement = go_json({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": provenance,
                             "subject": [{"name": name, "digest": {"sha256": subject.split(":")[1]}}],
                             "predicate": {"builder": {"id": "https://example.com/ci"}}})
        pae = b"DSSEv1 %d application/vnd.in-toto+json %d %s" % (len("application/vnd.in-toto+json"),
                                                                 len(statement), statement)
        envelope = go_json({"payloadType": "application/vnd.in-toto+json",
                            "payload": base64.b64encode(statement).decode(),
                            "signatures": [{"keyid": "", "sig": signer.sign(pae)}]})
        return self.cosign_image(subject, "att", [(envelope, DSSE, {"predicateType": provenance})])

    def sbom(self, subject: str) -> Pushed:
        """``cosign attach sbom``: the SPDX document as the one layer."""
        document = go_json({"spdxVersion": "SPDX-2.3", "name": "app", "packages": []})
        return self.cosign_image(subject, "sbom", [(document, "text/spdx+json", {})])

    def referrer(self, subject: Pushed, artifact_type: str = "application/vnd.example.scan+json",
                 note: str = "") -> Pushed:
        """An OCI 1.1 referrer (as ``oras attach`` makes): empty config, ``subject`` and ``artifactType``;
        listed in the referrers tag schema index, as oras does against a registry without the API."""
        empty, empty_size = self.blob(b"{}")
        layer, layer_size = self.blob(go_json({"scanner": "example", "findings": [], "note": note}))
        pushed = self.manifest({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": EMPTY, "digest": empty, "size": empty_size},
            "layers": [{"mediaType": "application/json", "digest": layer, "size": layer_size}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
            "annotations": {"org.opencontainers.image.created": "2026-12-01T00:00:00Z"}})
        tag = f"sha256-{subject.digest.split(':')[1]}"
        listed = self.client.get(f"/v2/{self.repository}/manifests/{tag}", headers={"Accept": OCI_INDEX})
        entries = listed.json()["manifests"] if listed.status_code == 200 else []
        entries.append({"mediaType": OCI_MANIFEST, "digest": pushed.digest, "size": pushed.size,
                        "artifactType": artifact_type})
        self.manifest({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, tag)
        return pushed


class Sigstore:
    """A stand-in for Fulcio and Rekor: a CA (root and intermediate) and a log key, and the trusted
    root that names them, in Sigstore's trusted_root.json format (as ``cosign trusted-root create``)."""

    def __init__(self):
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        def name(common: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.test"),
                              x509.NameAttribute(NameOID.COMMON_NAME, common)])

        self.now = datetime.now(timezone.utc).replace(microsecond=0)
        self.root_key, self.intermediate_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(
            ec.SECP384R1())
        self.root = self._certificate(name("sigstore"), name("sigstore"), self.root_key.public_key(), self.root_key,
                                      ca=True)
        self.intermediate = self._certificate(name("sigstore-intermediate"), name("sigstore"),
                                              self.intermediate_key.public_key(), self.root_key, ca=True)
        self.log_key = ec.generate_private_key(ec.SECP256R1())

    def _certificate(self, subject, issuer, public_key, signing_key, *, ca: bool, extensions=(), minutes=60 * 24):
        from cryptography import x509

        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(self.now - timedelta(minutes=5))
                   .not_valid_after(self.now + timedelta(minutes=minutes))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(signing_key, hashes.SHA384() if ca else hashes.SHA256())

    def trusted_root(self) -> dict:
        def raw(certificate) -> dict:
            return {"rawBytes": base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()}

        log_der = self.log_key.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
        return {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                "tlogs": [{"baseUrl": "https://rekor.sigstore.test", "hashAlgorithm": "SHA2_256",
                           "publicKey": {"rawBytes": base64.b64encode(log_der).decode(),
                                         "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                         "validFor": {"start": "2021-01-12T11:53:27.000Z"}},
                           "logId": {"keyId": base64.b64encode(hashlib.sha256(log_der).digest()).decode()}}],
                "certificateAuthorities": [{"subject": {"organization": "sigstore.test", "commonName": "sigstore"},
                                            "uri": "https://fulcio.sigstore.test",
                                            "certChain": {"certificates": [raw(self.intermediate), raw(self.root)]},
                                            "validFor": {"start": "2021-03-07T03:20:29.000Z"}}],
                "ctlogs": [], "timestampAuthorities": []}

    def sign(self, body: bytes, identity: str, issuer: str) -> dict[str, str]:
        """``cosign sign`` keyless: a Fulcio certificate for ``identity``, the signature, the Rekor bundle
        (a hashedrekord entry and its signed entry timestamp); the layer's annotations."""
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

        key = ec.generate_private_key(ec.SECP256R1())
        issuer_der = b"\x0c" + bytes([len(issuer)]) + issuer.encode()
        leaf = self._certificate(x509.Name([]), self.intermediate.subject, key.public_key(), self.intermediate_key,
                                 ca=False, minutes=10, extensions=[
                                     x509.SubjectAlternativeName([x509.RFC822Name(identity)]),
                                     x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                                     x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.57264.1.8"), issuer_der)])
        signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
        pem = leaf.public_bytes(serialization.Encoding.PEM)
        entry = go_json({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(body).hexdigest()}},
            "signature": {"content": signature, "publicKey": {"content": base64.b64encode(pem).decode()}}}})
        log_der = self.log_key.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
        payload = {"body": base64.b64encode(entry).decode(), "integratedTime": int(self.now.timestamp()),
                   "logIndex": 4242, "logID": hashlib.sha256(log_der).hexdigest()}
        canonical = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()  # RFC 8785 for these values
        stamp = base64.b64encode(self.log_key.sign(canonical, ec.ECDSA(hashes.SHA256()))).decode()
        return {SIGNATURE_ANNOTATION: signature, "dev.sigstore.cosign/certificate": pem.decode(),
                "dev.sigstore.cosign/chain": "".join(c.public_bytes(serialization.Encoding.PEM).decode()
                                                     for c in (self.intermediate, self.root)),
                "dev.sigstore.cosign/bundle": go_json({"SignedEntryTimestamp": stamp, "Payload": payload}).decode()}
