"""The offline installer: built on a connected host, installed on a "bastion" with the network cut.

The bastion is this machine inside ``unshare -n`` (no interface but a downed
loopback), with only the distribution's own Python on PATH.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import shutil
import tarfile
from pathlib import Path

import pytest

import mirror
from support.cli import ROOT, run_mirror

SYSTEM_PYTHON = "/usr/bin/python3"
BASTION_PATH = "/usr/bin:/bin"


def offline(*args, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-n", *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installer(tmp_path_factory):
    """An installer archive for this host's architecture and its system Python, unpacked."""
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    work = tmp_path_factory.mktemp("installer")
    archive = work / "mirror-installer.tar.gz"
    build = subprocess.run([ROOT / "scripts" / "make-installer.sh", "--arch", platform.machine(),
                            "--python-version", version, archive],
                           env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    recorded = (work / "mirror-installer.tar.gz.sha256").read_text()
    assert recorded == f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  mirror-installer.tar.gz\n"
    (work / "bastion").mkdir()
    subprocess.run(["tar", "xzf", archive], cwd=work / "bastion", check=True)  # as the README says
    return work / "bastion" / "mirror-installer"


def install_offline(installer: Path, prefix: Path, home: Path) -> Path:
    """``installer``'s install.sh run with the network cut, as on the bastion; the ``mirror`` it installed, run."""
    env = {"PATH": BASTION_PATH, "HOME": str(home)}
    install = offline(installer / "install.sh", "--prefix", prefix, env=env)
    assert install.returncode == 0, install.stderr
    assert (prefix / "bin" / "mirror").resolve() == (prefix / "lib" / "mirror" / "bin" / "mirror").resolve()
    version = offline(prefix / "bin" / "mirror", "--version", env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"mirror {mirror.__version__}\n"
    return prefix / "bin" / "mirror"


def only_one_install(prefix: Path) -> bool:
    """PREFIX/lib holds the link mirror and the one environment it names, with the installer kept in it."""
    lib = prefix / "lib"
    current = lib / "mirror"
    return (current.is_symlink() and sorted(p.name for p in lib.iterdir()) == ["mirror", os.readlink(current)]
            and (current / "share" / "mirror" / "installer" / "install.sh").is_file())


def copy_of(installer: Path, tmp_path: Path) -> Path:
    """A copy of the unpacked installer, to alter without touching the module's."""
    copy = tmp_path / "copy" / installer.name
    shutil.copytree(installer, copy)
    return copy


def test_installs_with_the_network_cut_and_runs(installer, tmp_path):
    prefix = tmp_path / "prefix"
    env = {"PATH": BASTION_PATH, "HOME": str(tmp_path)}
    install_offline(installer, prefix, tmp_path)
    listed = offline(prefix / "bin" / "mirror", "lists", "--mode", "k3s", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "docker.io/rancher/klipper-helm" in listed.stdout
    again = offline(installer / "install.sh", "--prefix", prefix, env=env)  # an upgrade replaces the install
    assert again.returncode == 0, again.stderr
    assert only_one_install(prefix)
    assert offline(prefix / "bin" / "mirror", "--version", env=env).returncode == 0


def test_refuses_a_python_it_has_no_wheels_for(installer, tmp_path):
    targets = installer / "targets"
    carried = targets.read_text()
    targets.write_text(f"{platform.machine()} 3.99\n")
    try:
        result = offline(installer / "install.sh", "--prefix", tmp_path / "prefix",
                         env={"PATH": BASTION_PATH, "HOME": str(tmp_path)})
    finally:
        targets.write_text(carried)
    assert result.returncode == 2
    assert result.stderr == (f"install.sh: no Python this installer carries wheels for on {platform.machine()} "
                             f"(carried: {platform.machine()} 3.99); name one with --python\n")
    assert not (tmp_path / "prefix").exists()


def test_pull_with_installer_on_the_bastion_carries_an_installer_that_installs(installer, seeded_source, tmp_path):
    """A mirror installed offline makes its installer again from the wheels it kept: no checkout, no index."""
    installed = install_offline(installer, tmp_path / "first", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    image = seeded_source.corpus.images[0].source
    pulled = subprocess.run([installed, "pull", image, *seeded_source.mirror_args, "-o", out / "b.tar.zst",
                             "--with-installer", "-q"], env={"PATH": BASTION_PATH, "HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "b.mirror-installer.tar.gz", "b.mirror-installer.tar.gz.sha256", "b.tar.zst", "b.tar.zst.sha256"]
    checked = subprocess.run(["sha256sum", "-c", "b.mirror-installer.tar.gz.sha256"], cwd=out,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with tarfile.open(out / "b.mirror-installer.tar.gz") as again:
        carried = sorted(again.getnames())
    # As the README has the operator do it (tarfile's extraction filters need Python 3.11.4+).
    (tmp_path / "bastion2").mkdir()
    subprocess.run(["tar", "xzf", out / "b.mirror-installer.tar.gz", "-C", tmp_path / "bastion2"], check=True)
    assert carried == sorted(["mirror-installer", *(str(p.relative_to(installer.parent)) for p in installer.rglob("*"))])
    install_offline(tmp_path / "bastion2" / "mirror-installer", tmp_path / "second", tmp_path)


def test_pull_with_installer_fails_before_fetching_when_the_installer_cannot_be_made(tmp_path):
    """From a checkout whose index is unreachable: exit 2 naming what failed, no image asked for, nothing written."""
    no_index = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_FIND_LINKS": "",
                "PIP_RETRIES": "0"}
    result = run_mirror("pull", "127.0.0.1:9/nowhere/image:1", "-o", tmp_path / "b.tar.zst", "--with-installer",
                        env=no_index)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mirror: error: cannot make the offline installer: cannot build mirror's wheel: ")
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_make_installer_to_a_directory_exits_2_before_downloading(tmp_path):
    """OUT an existing directory is refused at once, in one line: it used to fail after every download, with a traceback."""
    (tmp_path / "out").mkdir()
    build = subprocess.run([ROOT / "scripts" / "make-installer.sh", "--arch", "x86_64", "--python-version", "3.11",
                            tmp_path / "out"], env={**os.environ, "PYTHON": sys.executable, "PIP_INDEX_URL":
                            "http://127.0.0.1:9/simple", "PIP_RETRIES": "0"}, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 2, build.stderr
    assert build.stderr == f"make-installer: {tmp_path / 'out'}: is a directory; name the installer's file (NAME.tar.gz)\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not list((tmp_path / "out").iterdir())


def test_refuses_a_prefix_whose_lib_mirror_it_did_not_make(installer, tmp_path):
    """`--prefix /var` cleared /var/lib/mirror, where `registry up` keeps its state and the registry's data."""
    prefix = tmp_path / "var"
    state = prefix / "lib" / "mirror" / "registry"
    state.mkdir(parents=True)
    (state / "state.json").write_text("{}")
    result = offline(installer / "install.sh", "--prefix", prefix, env={"PATH": BASTION_PATH, "HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr == (f"install.sh: {prefix / 'lib' / 'mirror'} exists and is not a mirror install made by "
                             "install.sh (no .mirror-install in it): refusing to replace it; choose another --prefix\n")
    assert (state / "state.json").read_text() == "{}"
    assert [p.name for p in (prefix / "lib").iterdir()] == ["mirror"]


def test_a_failed_reinstall_leaves_the_previous_install_as_it_was(installer, tmp_path):
    """The re-install cleared the environment first: when pip then failed, bin/mirror was left dangling and
    the installer kept in the install was gone."""
    prefix, env = tmp_path / "prefix", {"PATH": BASTION_PATH, "HOME": str(tmp_path)}
    install_offline(installer, prefix, tmp_path)
    broken = copy_of(installer, tmp_path)
    missing = next((broken / "wheels").glob("httpx-*.whl"))  # a dependency pip will not find
    missing.unlink()
    digests = broken / "wheels.sha256"
    if digests.exists():
        digests.write_text("".join(line for line in digests.read_text().splitlines(keepends=True)
                                   if not line.endswith(f"wheels/{missing.name}\n")))
    result = offline(broken / "install.sh", "--prefix", prefix, env=env)
    version = offline(prefix / "bin" / "mirror", "--version", env=env)
    assert version.returncode == 0 and version.stdout == f"mirror {mirror.__version__}\n", version.stderr
    assert only_one_install(prefix)
    assert result.returncode == 2, result.stderr
    assert result.stderr.endswith(f"install.sh: pip could not install mirror from {broken / 'wheels'}; "
                                  "the previous install is unchanged\n")


@pytest.mark.parametrize("alteration", ["changed", "added"])
def test_a_wheel_not_as_the_archive_lists_it_is_refused_before_anything_is_installed(installer, tmp_path, alteration):
    altered = copy_of(installer, tmp_path)
    if alteration == "changed":
        wheel = next((altered / "wheels").glob("mirror-*.whl"))
        with wheel.open("ab") as f:
            f.write(b"not what was built")  # a zip still reads with bytes after its end
        said = f"wheels/{wheel.name}: does not match its sha256 in wheels.sha256: refusing to install (was it altered?)"
    else:
        wheel = altered / "wheels" / "evil-1.0-py3-none-any.whl"
        shutil.copy(next((altered / "wheels").glob("idna-*.whl")), wheel)
        said = f"wheels/{wheel.name} is not in wheels.sha256: refusing to install from this archive (was it altered?)"
    result = offline(altered / "install.sh", "--prefix", tmp_path / "prefix",
                     env={"PATH": BASTION_PATH, "HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr == f"install.sh: {said}\n"
    assert not (tmp_path / "prefix").exists()
