"""The end-to-end tier: the `mirror` command, real registries, skopeo, containerd, Docker Engine."""
