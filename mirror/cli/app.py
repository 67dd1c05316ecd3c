"""The typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="mirror",
    help="Move container images for Rancher installs into air-gapped registries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say HOST[/PREFIX] literally
)
