"""``mirror extract``: a bundle's charts and files onto disk, without a registry.

Each item goes to ``DIR/FOLDER/FILE`` (FOLDER per product, so
``INSTALL_RKE2_ARTIFACT_PATH=DIR/rke2`` names one), re-hashed on the way,
binaries executable, and ``DIR/SHA256SUMS`` lists everything there for
``sha256sum -c``. Names come from the bundle, so each is checked to be a
plain name under DIR; a folder that is a link is refused; a file already
there with other content is kept (and nothing written) unless ``force``.
Every file appears under its name only when complete.
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle.format import ArtifactRecord
from ..bundle.reader import BundleReader
from ..errors import IntegrityError, UsageError
from ..model.oci import digest_hex
from ..safefiles import Replacement, write_file
from .items import FOLDERS

SUMS = "SHA256SUMS"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *]([A-Za-z0-9][A-Za-z0-9._+-]*/[A-Za-z0-9][A-Za-z0-9._+-]*)")
MAX_SUMS = 1 << 20


@dataclass
class ExtractReport:
    written: list[str] = field(default_factory=list)  # DIR-relative paths
    unchanged: list[str] = field(default_factory=list)  # already there with the same content
    omitted: list[str] = field(default_factory=list)  # in a delta bundle's base, not in this bundle

    def to_json(self) -> dict:
        return {"written": self.written, "unchanged": self.unchanged, "omitted": self.omitted}


def extract(bundle: Path, out: Path, force: bool = False) -> ExtractReport:
    with BundleReader(bundle) as reader:
        manifest = reader.manifest
        records = [image.artifact for image in manifest.images if image.artifact is not None]
        if not records:
            raise UsageError(f"{bundle} holds no charts or files (pulled with --no-charts --no-files, "
                             "or before mirror carried them)")
        report = ExtractReport()
        wanted: dict[str, list[ArtifactRecord]] = {}
        sums: dict[str, str] = {}
        for record in records:
            relative = _relative(record, bundle)
            if record.layer not in manifest.stored_blobs:
                report.omitted.append(relative)
                continue
            present = _present_digest(out / relative)
            if present == digest_hex(record.layer):
                report.unchanged.append(relative)
            elif present is not None and not force:
                raise UsageError(f"{out / relative} exists with other content: pass --force to replace it, "
                                 "or another -o; nothing written")
            else:
                wanted.setdefault(record.layer, []).append(record)
            sums[relative] = digest_hex(record.layer)
        previous = _read_sums(out / SUMS, force)
        out.mkdir(parents=True, exist_ok=True)
        for folder in {record.folder for group in wanted.values() for record in group}:
            _folder(out, folder)
        for entry in reader.entries():
            if entry.digest in wanted:
                _write(entry, out, wanted.pop(entry.digest), report)
        if wanted:
            raise IntegrityError(f"bundle {bundle} lacks the content of {', '.join(sorted(wanted))}")
    kept = {path: digest for path, digest in previous.items() if (out / path).is_file()}
    _write_sums(out, {**kept, **sums})
    return report


def _relative(record: ArtifactRecord, bundle: Path) -> str:
    if record.folder not in FOLDERS or not _NAME.fullmatch(record.file):
        raise IntegrityError(f"bundle {bundle}: refusing to write {record.folder!r}/{record.file!r}: "
                             "not a plain name under the output directory")
    return f"{record.folder}/{record.file}"


def _present_digest(path: Path) -> str | None:
    """The sha256 of a regular file at ``path``; None when nothing is there; a link or folder counts as other."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    hasher = hashlib.sha256()
    with open(path, "rb") as existing:
        for chunk in iter(lambda: existing.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _folder(out: Path, folder: str) -> Path:
    """``out/folder``, made if missing; a link or a file there is refused (never followed)."""
    path = out / folder
    try:
        path.mkdir(mode=0o755)
    except FileExistsError:
        if not stat.S_ISDIR(path.lstat().st_mode):
            raise UsageError(f"{path} is not a directory (a link or a file): refusing to write through it") from None
    return path


def _write(entry, out: Path, records: list[ArtifactRecord], report: ExtractReport) -> None:
    """The entry's bytes to each record's place: under a temporary name beside it, hashed, then renamed."""
    first, *others = records
    with _replacement(out, first) as new:
        hasher = hashlib.sha256()
        for chunk in entry.chunks():  # the reader checks the digest too, before the last chunk
            hasher.update(chunk)
            new.file.write(chunk)
        if hasher.hexdigest() != digest_hex(first.layer):
            raise IntegrityError(f"{first.file}: content hashes to sha256:{hasher.hexdigest()}, not {first.layer}")
    report.written.append(f"{first.folder}/{first.file}")
    for record in others:  # the same content under another name
        with _replacement(out, record) as copy, open(out / first.folder / first.file, "rb") as source:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                copy.file.write(chunk)
        report.written.append(f"{record.folder}/{record.file}")


def _replacement(out: Path, record: ArtifactRecord) -> Replacement:
    """A new file for ``record``: the rename at the end replaces a link there, never follows it."""
    return Replacement(out / record.folder / record.file, 0o755 if record.executable else 0o644)


def _read_sums(path: Path, force: bool) -> dict[str, str]:
    """The entries of a SHA256SUMS already in DIR (an earlier extract), kept beside this bundle's."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode) or path.lstat().st_size > MAX_SUMS:
            raise ValueError
        lines = path.read_text(encoding="ascii").splitlines()
        matches = [_SUM_LINE.fullmatch(line) for line in lines if line.strip()]
        if not all(matches):
            raise ValueError
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError, OSError):
        if force:
            return {}
        raise UsageError(f"{path} exists and is not one extract wrote: pass --force to replace it; "
                         "nothing written") from None
    return {m.group(2): m.group(1) for m in matches if m.group(2).split("/")[0] in FOLDERS}


def _write_sums(out: Path, sums: dict[str, str]) -> None:
    write_file(out / SUMS, "".join(f"{digest}  {path}\n" for path, digest in sorted(sums.items())).encode())
