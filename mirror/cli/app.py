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


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"mirror {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print mirror's version and exit."),
) -> None:
    """Options that come before the command."""
