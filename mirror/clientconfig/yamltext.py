"""Block-style YAML for the small documents we generate (no YAML library is a dependency).

Strings are always double-quoted with JSON escapes, which YAML reads the
same way, so no value can be mistaken for a number, a bool or a comment.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if value is None:
        return "null"
    return json.dumps(str(value))


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) else json.dumps(key)


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_key(key)}:")
                lines += _lines(item, indent + 2)
            else:
                lines.append(f"{pad}{_key(key)}: {_flow_empty(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = _lines(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines += inner[1:]
            else:
                lines.append(f"{pad}- {_flow_empty(item)}")
    else:
        lines.append(pad + _scalar(value))
    return lines


def _flow_empty(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def dump(data: dict[str, Any], comments: Sequence[str] = ()) -> str:
    """YAML text for ``data``, headed by ``# comment`` lines."""
    return "".join(f"# {c}\n" for c in comments) + "\n".join(_lines(data, 0)) + "\n"
