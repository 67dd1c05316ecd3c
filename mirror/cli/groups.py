"""Option groups: flags several commands take, declared once and handed to a command as one value.

typer knows no option groups: ``option_group`` gives a command's signature the group's options in
place of one of its parameters, and calls the command with that parameter built from their values.
The options keep their names, so ``common.flags_given`` sees them as any other.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
KEYWORD = inspect.Parameter.KEYWORD_ONLY  # typer calls a command with keywords only
Options = dict[str, tuple[Any, Any]]  # parameter name -> (its type, its typer.Option)


def option_group(param: str, options: Options, build: Callable[..., Any]) -> Callable[[F], F]:
    """The decorated command takes ``options`` where its parameter ``param`` was (declared ``param: T = ...``),
    and receives ``build(**their values)`` as ``param``."""

    def decorate(command: F) -> F:
        hints = typing.get_type_hints(command)
        parameters: list[inspect.Parameter] = []
        for own in inspect.signature(command).parameters.values():
            if own.name == param:
                parameters += [inspect.Parameter(name, KEYWORD, default=option, annotation=kind)
                               for name, (kind, option) in options.items()]
            else:
                parameters.append(own.replace(kind=KEYWORD, annotation=hints.get(own.name, own.annotation)))

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in options}
            return command(*args, **{param: build(**values)}, **kwargs)

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper  # type: ignore[return-value]

    return decorate
