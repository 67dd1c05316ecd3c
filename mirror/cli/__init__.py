"""Command line: thin wrappers that parse, call an operation, render its result."""

from __future__ import annotations

from .app import app

# Each module registers its commands on ``app`` when imported.
from . import common  # noqa: F401  (import order: common first)
from . import registry_cmd  # noqa: F401
from . import bundle_cmd, pull_cmd, push_cmd  # noqa: F401
from . import lists_cmd, config_cmd  # noqa: F401


def main() -> None:
    app()
