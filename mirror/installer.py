"""The offline installer: one archive that installs mirror on a host with no network (the bastion).

It holds ``install.sh``, the file ``targets`` (one ``ARCH X.Y`` line per
platform carried), ``wheels/``: mirror's wheel and every dependency's for
each target, so pip never needs an index there, and ``wheels.sha256``: the
digest of every wheel, made with them, which install.sh checks first. The
wheels come from, in order:

1. the installer this mirror was installed from: ``install.sh`` keeps the
   archive's contents in the installed environment (``KEPT``), so a bastion's
   mirror makes its installer again with no network;
2. a checkout (this package beside ``pyproject.toml``): mirror's wheel is built
   from the checkout's files and the dependencies' wheels are downloaded from
   the index pip is set up for (PyPI on the connected side).

Only the standard library is imported (and mirror's errors and safefiles,
which need no more), so ``scripts/make-installer.sh`` runs this module with
any Python that has pip. The archive appears under its name
only once complete, with ``NAME.sha256`` beside it (``sha256sum -c`` format).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from .errors import MirrorError, UsageError
from .safefiles import Replacement, write_file

ROOT = "mirror-installer"  # the directory the archive unpacks to
ARCHES = ("x86_64", "aarch64")
# Debian 12 and RHEL 9's python3.11 package; RHEL 9's python3.12; Debian 13. RHEL 9's own python3 (3.9) is too old.
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
# glibc 2.34 is RHEL 9's; Debian 12 has 2.36, Debian 13 2.41.
GLIBC_TAGS = ("manylinux_2_34", "manylinux_2_28", "manylinux_2_17", "manylinux2014")
WHEEL_DIGESTS = "wheels.sha256"  # the digest of every file in wheels/, which install.sh checks before installing
KEPT = Path(sys.prefix) / "share" / "mirror" / "installer"  # where install.sh keeps the archive's contents
CHECKOUT = Path(__file__).resolve().parent.parent
INSTALL_SH = Path(__file__).resolve().parent / "install.sh"  # package data: an installed mirror carries it too

Log = Callable[[str], None]


@dataclass(frozen=True)
class Installer:
    path: Path
    sha256: str
    size: int
    wheels: int
    targets: list[str]  # "ARCH X.Y"

    def describe(self) -> str:
        return (f"{self.path} ({self.size / 2**20:.1f} MiB, {self.wheels} wheels for: "
                f"{', '.join(self.targets)})")


def installer_beside(bundle: Path) -> Path:
    """Where ``pull --with-installer`` puts the installer: NAME.mirror-installer.tar.gz beside NAME.tar.zst."""
    name = bundle.name.removesuffix(".tar.zst")
    return bundle.with_name(f"{name}.{ROOT}.tar.gz")


class PendingInstaller:
    """An installer built under a temporary name beside ``out``, published when what it goes with is done.

    ``pull --with-installer`` builds it before fetching any image (a failure
    costs no download) and publishes it once the bundle is written.
    """

    def __init__(self, out: Path, arches: Iterable[str] = (), versions: Iterable[str] = (),
                 log: Log | None = None):
        if out.is_dir():  # found now, not after every wheel is downloaded
            raise UsageError(f"{out}: is a directory; name the installer's file (NAME.tar.gz)")
        if not out.parent.is_dir():
            raise UsageError(f"{out.parent}: no such directory to write the installer in")
        self.out = out
        self.pending = Replacement(out)
        try:
            self.wheels, self.targets = build(self.pending.file, arches, versions, log)
        except BaseException:
            self.discard()
            raise

    def publish(self) -> Installer:
        """Move the archive to ``out`` and write ``out.sha256`` beside it."""
        self.pending.file.flush()
        digest = hashlib.sha256()
        with self.pending.temp.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        size = self.pending.temp.stat().st_size
        self.pending.commit()
        write_file(self.out.with_name(self.out.name + ".sha256"), f"{digest.hexdigest()}  {self.out.name}\n".encode())
        return Installer(self.out, digest.hexdigest(), size, self.wheels, self.targets)

    def discard(self) -> None:
        """Remove the archive if it was not published."""
        self.pending.discard()


def make_installer(out: Path, arches: Iterable[str] = (), versions: Iterable[str] = (),
                   log: Log | None = None) -> Installer:
    """Write the installer to ``out`` (and ``out.sha256``); empty ``arches``/``versions`` mean all of them."""
    pending = PendingInstaller(out, arches, versions, log)
    try:
        return pending.publish()
    finally:
        pending.discard()


def build(archive: BinaryIO, arches: Iterable[str] = (), versions: Iterable[str] = (),
          log: Log | None = None) -> tuple[int, list[str]]:
    """Write the installer archive into ``archive``: (number of wheels, targets)."""
    arches, versions = list(arches), list(versions)
    for arch in arches:
        if arch not in ARCHES:
            raise UsageError(f"--arch {arch}: {' or '.join(ARCHES)}")
    for version in versions:
        if not re.fullmatch(r"3\.1\d", version):
            raise UsageError(f"--python-version {version}: 3.10 or newer, as X.Y")
    with tempfile.TemporaryDirectory(prefix="mirror-installer-") as stage:
        tree = Path(stage) / ROOT
        if (KEPT / "targets").is_file():
            if arches or versions:
                raise UsageError(f"this mirror makes its installer from the one it was installed with ({KEPT}), "
                                 "for the targets that carries; --arch and --python-version need a checkout")
            shutil.copytree(KEPT, tree)
        elif (CHECKOUT / "pyproject.toml").is_file() and INSTALL_SH.is_file():
            _from_checkout(tree, Path(stage), arches or list(ARCHES), versions or list(PYTHON_VERSIONS), log)
        else:
            raise UsageError(f"cannot make the offline installer: this mirror was neither installed by one "
                             f"(no {KEPT}) nor runs from a checkout (no {CHECKOUT / 'pyproject.toml'})")
        targets = (tree / "targets").read_text().splitlines()
        wheels = sum(1 for _ in (tree / "wheels").glob("*.whl"))
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            tar.add(tree, ROOT)
    return wheels, targets


def _from_checkout(tree: Path, stage: Path, arches: list[str], versions: list[str], log: Log | None) -> None:
    """mirror's wheel built from the checkout, the dependencies' downloaded for every target."""
    wheels = tree / "wheels"
    wheels.mkdir(parents=True)
    # Built from a copy of the checkout's files: setuptools' build/ in the checkout would carry
    # modules deleted since into the wheel.
    source = stage / "src"
    listed = _run(["git", "-C", str(CHECKOUT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  "list the checkout's files (git ls-files)")
    for name in filter(None, listed.split("\0")):
        path = CHECKOUT / name
        if path.is_file():  # a file deleted but not yet committed is still listed
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(source)], "build mirror's wheel")
    mirror_wheel = next(wheels.glob("mirror-*.whl"))
    # install.sh runs pip from its wheel: a bastion's Python may have neither pip nor ensurepip.
    _run([*pip, "download", "--only-binary=:all:", "--no-deps", "--dest", str(wheels), "pip"], "download pip's wheel")
    targets = []
    for arch in arches:
        platforms = [arg for tag in GLIBC_TAGS for arg in ("--platform", f"{tag}_{arch}")]
        for version in versions:
            if log:
                log(f"wheels for linux {arch}, CPython {version}")
            _run([*pip, "download", "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
                  *platforms, "--dest", str(wheels), str(mirror_wheel)],
                 f"download the wheels for linux {arch}, CPython {version}")
            targets.append(f"{arch} {version}")
    (tree / "targets").write_text("".join(f"{t}\n" for t in targets))
    with (tree / WHEEL_DIGESTS).open("w") as digests:  # `sha256sum -c` format
        for wheel in sorted(wheels.iterdir()):
            with wheel.open("rb") as f:
                digests.write(f"{hashlib.sha256(f.read()).hexdigest()}  wheels/{wheel.name}\n")  # a wheel: MBs
    shutil.copy2(INSTALL_SH, tree / "install.sh")
    (tree / "install.sh").chmod(0o755)


def _run(argv: list[str], what: str) -> str:
    """stdout of ``argv``; a failure names ``what`` and the tool's last error line."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except OSError as exc:
        raise UsageError(f"cannot make the offline installer: cannot {what}: {exc}") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")] or lines
        raise UsageError(f"cannot make the offline installer: cannot {what}: "
                         f"{errors[-1] if errors else f'exit {done.returncode}'}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    """``scripts/make-installer.sh``: make-installer [--arch A]... [--python-version X.Y]... OUT.tar.gz"""
    parser = argparse.ArgumentParser(prog="make-installer", description="Build the offline installer archive.")
    parser.add_argument("--arch", action="append", default=[], help=f"{' or '.join(ARCHES)}; repeatable; default: all")
    parser.add_argument("--python-version", action="append", default=[], metavar="X.Y",
                        help=f"repeatable; default: {', '.join(PYTHON_VERSIONS)}")
    parser.add_argument("out", type=Path, metavar="OUT.tar.gz")
    args = parser.parse_args(argv)
    try:
        made = make_installer(args.out.absolute(), args.arch, args.python_version,
                              log=lambda line: print(f"make-installer: {line}", file=sys.stderr))
    except MirrorError as exc:
        print(f"make-installer: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except OSError as exc:  # a full disk, an unwritable directory: one line and exit 1, as mirror's commands
        print(f"make-installer: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {made.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
