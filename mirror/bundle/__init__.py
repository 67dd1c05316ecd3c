"""Bundles: one portable ``NAME.tar.zst`` holding an OCI layout (docs/bundle-format.md)."""
