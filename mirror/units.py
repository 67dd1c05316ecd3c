"""Byte sizes as people write and read them: binary units (KiB, MiB, GiB)."""

from __future__ import annotations

from .errors import UsageError

MIB = 1 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": MIB, "G": 1 << 30, "T": 1 << 40}


def human_size(size: int) -> str:
    """1.5 MiB, as every report prints sizes."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def parse_size(text: str, option: str) -> int:
    """``500M``, ``4G``, ``4GiB``, ``1048576`` -> bytes; UsageError naming ``option`` otherwise."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in _UNITS and cleaned[-1:] else (cleaned, "")
    try:
        value = int(float(number) * _UNITS[unit])
    except (ValueError, KeyError):
        raise UsageError(f"{option} {text!r}: expected a size like 512M or 4G") from None
    if value <= 0:
        raise UsageError(f"{option} {text!r}: must be positive")
    return value
