"""The typer application every command module registers on."""

from __future__ import annotations

import typer

from .. import __version__

app = typer.Typer(
    name="mirror",
    help="Move container images for Rancher installs into air-gapped registries.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say HOST[/PREFIX] literally
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mirror {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Move container images for Rancher installs into air-gapped registries."""
