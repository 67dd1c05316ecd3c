"""Command line: thin wrappers that parse, call an operation, render its result."""

from __future__ import annotations

from .app import app

# Each module registers its commands on ``app`` when imported; --help lists them in this order.
from . import pull_cmd, push_cmd, sync_cmd, sync_serve_cmd, sync_schedule_cmd, inventory_cmd, prune_cmd  # noqa: F401,I001
from . import bundle_cmd, registry_cmd, registry_upkeep_cmd, config_cmd, lists_cmd  # noqa: F401,I001


def main() -> None:
    app()
