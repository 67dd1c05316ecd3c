"""What ``mirror`` loads to start: each command imports what it uses, so ``mirror --help`` answers at once and
every run, hundreds in this suite, skips the libraries it does not need."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support.cli import ROOT
from support.corpus_fixtures import single_platform_image

# Runs `python -m mirror ARGS` and, at exit, writes the names of the modules it loaded to the file named first.
PROBE = """
import atexit, runpy, sys
listing, sys.argv = sys.argv[1], ["mirror", *sys.argv[2:]]
atexit.register(lambda: open(listing, "w").write(" ".join(n for n, m in sys.modules.items() if m is not None)))
runpy.run_module("mirror", run_name="__main__", alter_sys=True)
"""


def loaded_by(tmp_path, *args: str) -> set[str]:
    listing = tmp_path / "modules"
    result = subprocess.run([sys.executable, "-c", PROBE, listing, *map(str, args)], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(listing.read_text().split())


def packages(modules: set[str], *names: str) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["pull", "--help"], ["push", "--help"]])
def test_help_and_version_load_no_network_crypto_or_archive_library(tmp_path, args):
    modules = loaded_by(tmp_path, *args)
    assert packages(modules, "httpx", "cryptography", "docker", "yaml", "zstandard") == []


def test_a_pull_without_signature_flags_loads_no_x509_parser_nor_the_terminal_ui_of_httpx_s_own_cli(
        tmp_path, seeded_source):
    image = single_platform_image(seeded_source.corpus)
    modules = loaded_by(tmp_path, "pull", image.source, "-o", tmp_path / "b.tar.zst", *seeded_source.mirror_args, "-q")
    assert "mirror.transfer.pull" in modules  # it did pull
    assert packages(modules, "rich", "pygments", "click") == []
    assert not [m for m in modules if m.startswith("cryptography.x509")]
