"""Command line: thin wrappers that parse, call an operation, render its result."""

from __future__ import annotations

import sys

from .app import app

# Each module registers its commands on ``app`` when imported; --help lists them in this order.
from . import pull_cmd, push_cmd, sync_cmd, sync_serve_cmd, sync_schedule_cmd, inventory_cmd, prune_cmd  # noqa: F401,I001
from . import bundle_cmd, extract_cmd, registry_cmd, registry_upkeep_cmd, config_cmd, lists_cmd  # noqa: F401,I001


def main() -> None:
    # httpx's package imports its own command line (click, rich, pygments) whenever those are installed, as
    # typer and Flask bring them: ~40 ms of every command that reaches a registry. None in sys.modules makes
    # that import fail, and httpx then stands in a stub for its `httpx` command, which mirror never runs.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    app()
