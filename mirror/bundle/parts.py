"""A bundle's files beside its name: split parts, the checksum file, the marker of an interrupted write.

``NAME.tar.zst`` alone, or ``NAME.tar.zst.part-000``, ``part-001``, ... with
``NAME.tar.zst.sha256`` listing them (docs/bundle-format.md). The writer makes
these names and the reader finds them: both through this module.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UsageError


def bundle_part_path(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.part-{index:03d}")


def checksum_path(path: Path) -> Path:
    """``NAME.sha256``: ``sha256sum -c`` checks it; for a split bundle it lists every part."""
    return path.with_name(path.name + ".sha256")


def incomplete_marker(path: Path) -> Path:
    """Present while the writer swaps one bundle for another under the final names (see writer)."""
    return path.with_name(path.name + ".incomplete")


def _part_numbers(path: Path) -> dict[int, Path]:
    pattern = re.compile(re.escape(path.name) + r"\.part-(\d{3,})")
    found = {}
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            match = pattern.fullmatch(candidate.name)
            if match:
                found[int(match.group(1))] = candidate
    return found


def stray_parts(path: Path, keep: int) -> list[Path]:
    """Part files of ``path`` numbered ``keep`` or above."""
    return [part for number, part in sorted(_part_numbers(path).items()) if number >= keep]


def _listed_parts(path: Path) -> list[Path] | None:
    """The parts ``NAME.sha256`` lists, in order; None when there is no such file or it lists no parts."""
    checksum = checksum_path(path)
    try:
        text = checksum.read_text(errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"bundle {path}: cannot read {checksum.name}: {exc.strerror or exc}") from None
    part_name = re.compile(r"[0-9a-f]{64} [ *](" + re.escape(path.name) + r"\.part-\d{3,})")
    names = [m.group(1) for line in text.splitlines() if (m := part_name.fullmatch(line.strip()))]
    if not names:
        return None
    expected = [bundle_part_path(path, n) for n in range(len(names))]
    if names != [part.name for part in expected]:
        raise UsageError(f"bundle {path}: {checksum.name} does not list parts {expected[0].name}... in order")
    return expected


def bundle_parts(path: Path) -> list[Path]:
    """The file itself, or its ``.part-NNN`` files in order; UsageError if neither is complete.

    For a split bundle, ``NAME.sha256`` (when present) says how many parts there are,
    so a missing last part is named rather than found later as a stream that ends early.
    """
    path = Path(path)
    named_part = re.fullmatch(r"(.+)\.part-\d{3,}", path.name)
    if named_part and not path.with_name(named_part.group(1)).exists():
        path = path.with_name(named_part.group(1))  # the user named one part: read them all
    marker = incomplete_marker(path)
    if marker.exists():
        raise UsageError(
            f"bundle {path} is incomplete: writing it was interrupted ({marker.name} is present); run pull again"
        )
    if path.is_file():
        return [path]
    if path.exists():
        raise UsageError(f"bundle {path} is not a regular file")
    numbers = _part_numbers(path)
    listed = _listed_parts(path)
    if listed is not None:
        missing = [part for part in listed if not part.is_file()]
        if missing:
            raise UsageError(
                f"bundle {path}: part {missing[0].name} is missing "
                f"({checksum_path(path).name} lists {len(listed)} parts)"
            )
        unlisted = sorted(set(numbers.values()) - set(listed))
        if unlisted:
            raise UsageError(f"bundle {path}: part {unlisted[0].name} is not listed in {checksum_path(path).name}")
        return listed
    if not numbers:
        raise UsageError(f"bundle {path}: no such file (nor {path.name}.part-000, ...)")
    expected = range(max(numbers) + 1)
    missing = [n for n in expected if n not in numbers]
    if missing:
        raise UsageError(f"bundle {path}: part {bundle_part_path(path, missing[0]).name} is missing")
    return [numbers[n] for n in expected]
