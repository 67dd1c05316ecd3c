"""The typer application every command module registers on."""

from __future__ import annotations

import typer

from .. import __version__
from ..registry.settings import DEFAULT_RETRIES, use_retries

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
    retries: int = typer.Option(
        DEFAULT_RETRIES, "--retries", min=0, max=20,
        help="Attempts after the first for a registry request that failed on the way (connection refused or "
             "reset, timeout, 5xx, 429), backing off from 0.5 s up to 30 s; 0 fails at once. A registry that "
             "used them up on connection errors fails the rest of the run's requests to it at once."),
) -> None:
    """Move container images for Rancher installs into air-gapped registries."""
    use_retries(retries)
