"""mirror: move container images into air-gapped registries."""

__version__ = "0.1.0"
