"""What every command shares: error-to-exit-code handling, and which flags the user gave."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer

from ..errors import (
    DeltaBaseMissing, ExitCode, ImagesFailed, MirrorError, exit_code_of, leaves, reported_error,
)
from .render import emit_failure_json, report_failures

if sys.version_info < (3, 11):  # pragma: no cover - the backport anyio brings along
    from exceptiongroup import BaseExceptionGroup

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: ExitCode) -> None:
    """One line on stderr, then the exit code: the shape of every failure."""
    typer.echo(f"mirror: error: {message}", err=True)
    raise typer.Exit(int(code))


def flags_given(context: typer.Context, *, exclude: set[str]) -> list[str]:
    """The options and arguments of the running command that the user gave (on the command line or
    through their environment variable), other than ``exclude``, as the user spells them, sorted."""
    return sorted(param.opts[0] if param.param_type_name == "option" else param.name
            for param in context.command.params if param.name not in exclude
            and getattr(context.get_parameter_source(param.name), "name", "") in ("COMMANDLINE", "ENVIRONMENT"))


def handle_errors(func: F) -> F:
    """Turn MirrorError into its one-line message and exit code.

    Errors raised inside task groups arrive wrapped in exception groups: the
    worst of them (integrity, then auth, then the rest) is the one reported.
    With ``--json`` a failure still prints a report, unless the command did.
    An OSError the operations did not name (an unreadable bundle, a full
    disk) is still one line, exit 1; anything else is a bug and keeps its
    traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        json_report = bool(kwargs.get("json_report"))
        try:
            return func(*args, **kwargs)
        except BaseExceptionGroup as group:
            if any(isinstance(e, KeyboardInterrupt) for e in leaves(group)):
                _interrupted()
            worst = reported_error(group)
            if worst is None:
                raise
            _report(worst, json_report)
        except BrokenPipeError:  # `mirror ... | head`: the reader has what it wanted
            sys.stdout = None  # type: ignore[assignment]  # nothing left to flush at exit
            raise typer.Exit(141) from None
        except (MirrorError, OSError) as exc:
            _report(exc, json_report)
        except KeyboardInterrupt:
            _interrupted()

    return wrapper  # type: ignore[return-value]


def _report(error: BaseException, json_report: bool) -> None:
    failures = error.failures if isinstance(error, ImagesFailed) else {}
    report_failures(failures, error.causes if isinstance(error, ImagesFailed) else None)
    missing = error.missing if isinstance(error, DeltaBaseMissing) else {}
    for digest, reason in sorted(missing.items()):
        typer.echo(f"mirror: missing: {digest}: {reason}", err=True)
    code = exit_code_of(error)
    if json_report:
        emit_failure_json(str(error), int(code), failures, {"missing": missing} if missing else {})
    fail(str(error), code)


def _interrupted() -> None:
    typer.echo("mirror: interrupted", err=True)
    raise typer.Exit(130)
