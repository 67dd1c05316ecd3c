"""A registry on the bastion: ``mirror registry up|down|status``.

Docker Engine runs the registry image carried in a bundle; without an engine
the distribution binary on PATH runs as a background process. Either way the
URL, CA and credentials are recorded in a state directory (state.py) where
``mirror push`` and ``mirror config`` find them.
"""
