"""An image list: Rancher's ``rancher-images.txt`` format, and where a list came from.

One reference per line; blank lines and ``#`` comments ignored; names
without a registry mean docker.io. The built-in lists, the ones fetched
from a release and the files users pass with ``-f`` all read through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..model.reference import Reference


@dataclass(frozen=True)
class ListSource:
    """Where one component's list came from, as the bundle records it."""

    origin: str  # "built in", "fetched", "cached" (fetched by an earlier run) or "generated"
    url: str | None = None  # what was fetched; None for built in and generated lists
    sha256: str | None = None  # hex digest of what the URL served

    def describe(self) -> str:
        if self.origin == "built in":
            return "built-in list"
        if self.origin == "generated":
            return "list generated from the version"
        return f"{self.origin} {self.url} (sha256 {self.sha256})"


def parse_images_file(path: Path) -> list[Reference]:
    """References in a rancher-images.txt style file (also rancher-windows-images.txt).

    One reference per line; blank lines and ``#`` comments ignored; names
    without a registry mean docker.io. A bad line names file and line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such image list file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read image list: {exc}") from None
    return parse_images_text(text, str(path))


def parse_images_text(text: str, origin: str) -> list[Reference]:
    """References in the text of an image list; a bad line is named as ``origin:LINE``."""
    references = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            references.append(Reference.parse(line))
        except UsageError as exc:
            raise UsageError(f"{origin}:{lineno}: {exc}") from None
    return references
