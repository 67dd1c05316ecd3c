"""Bundles: one portable ``NAME.tar.zst`` holding an OCI layout (DESIGN.md)."""
