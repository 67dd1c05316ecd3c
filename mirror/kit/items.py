"""A kit item: one chart or file to carry, where it comes from and what it must hash to.

An item lands in a registry as an OCI artifact: a chart at
``charts/NAME:VERSION`` (where ``helm install oci://REG/charts/NAME`` finds
it), a file at ``files/COMPONENT:VERSION``. Its bundle record names that
place as a Docker Hub reference (``docker.io/charts/rancher:2.7.9``), so the
target layout (model/target.py) puts it there and push, verify, inventory and
delta bundles treat it exactly as an image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError
from ..model.reference import Reference

CHART, FILE = "chart", "file"
MAX_CHART_SIZE = 64 << 20  # Helm refuses charts past 20 MiB compressed; room to spare, no more
MAX_FILE_SIZE = 8 << 30  # RKE2's air-gap image tarball is ~1 GiB per architecture
# What extract writes under DIR: one folder per product, so INSTALL_RKE2_ARTIFACT_PATH can name one.
FOLDERS = ("charts", "k3s", "rke2", "rke", "cert-manager", "files")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_COMPONENT = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


@dataclass(frozen=True)
class KitItem:
    kind: str  # CHART or FILE
    name: str  # the chart's name, or the file's name on disk
    version: str  # the chart's version, or the release the file belongs to
    url: str
    folder: str  # one of FOLDERS: where extract puts it
    sha256: str | None = None  # the hex digest it must have; None: recorded as served (no checksum published)
    checked_by: str | None = None  # the index or sha256sum file that gave ``sha256``
    executable: bool = False

    def __post_init__(self) -> None:
        if not _FILE_NAME.fullmatch(self.name) or self.folder not in FOLDERS:
            raise UsageError(f"{self.url}: {self.name!r} is not a name a kit item can have")

    @property
    def max_size(self) -> int:
        return MAX_CHART_SIZE if self.kind == CHART else MAX_FILE_SIZE

    @property
    def file_name(self) -> str:
        """The name on disk: ``NAME-VERSION.tgz`` for a chart (as ``helm fetch`` names it)."""
        return f"{self.name}-{self.version}.tgz" if self.kind == CHART else self.name

    @property
    def component(self) -> str:
        """The repository under ``files/``: the file's name, after its product unless it starts with it."""
        name = self.name.lower().replace("+", "-")
        if self.folder not in ("files", "charts") and not name.startswith(self.folder):
            name = f"{self.folder}-{name}"
        return name if _COMPONENT.fullmatch(name) else re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "file"

    @property
    def repository(self) -> str:
        return f"charts/{self.name}" if self.kind == CHART else f"files/{self.component}"

    @property
    def tag(self) -> str:
        """The version as a tag: ``+`` is no tag character, so it becomes ``_`` (as Helm does)."""
        return self.version.replace("+", "_")

    @property
    def reference(self) -> Reference:
        try:
            return Reference.parse(f"{self.repository}:{self.tag}")
        except UsageError:
            raise UsageError(f"{self.url}: {self.kind} {self.name} {self.version} makes no valid "
                             f"registry name ({self.repository}:{self.tag})") from None

    def describe(self) -> str:
        return f"{self.kind} {self.name} {self.version}"
