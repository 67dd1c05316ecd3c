"""What is attached to an image: cosign signatures, attestations and SBOMs, OCI 1.1 referrers.

``cosign``: the names and formats (tag scheme, simple signing payload); ``keys``: offline
verification with public keys; ``discover``: finding attachments in a registry; ``referrers``:
writing the referrers tag schema index where a registry does not index referrers itself.
docs/signatures.md says what is carried, where it lands and how it is verified.
"""
