"""An installed (non-editable) mirror works away from the repository: every package and the image lists ship."""

from __future__ import annotations

import os
import subprocess
import sys

from support.cli import ROOT


def test_installed_package_carries_every_module_and_the_topology_lists(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True)
    in_repo = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mirror").rglob("*.py")}
    installed = {p.relative_to(target).as_posix() for p in (target / "mirror").rglob("*.py")}
    assert in_repo <= installed, f"not shipped: {sorted(in_repo - installed)}"
    result = subprocess.run([sys.executable, "-m", "mirror", "lists", "--mode", "k3s"], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr
    assert "docker.io/rancher/klipper-helm" in result.stdout
