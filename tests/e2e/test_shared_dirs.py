"""Files whose names another user can predict (reports, locks, state, generated configs), in directories
others may write in: no link planted there is followed, no lock file is truncated, and a directory every
user may write in without the sticky bit is refused (exit 2).

The links are planted in a plain tmp dir: fs.protected_symlinks guards only sticky world-writable
directories, so this is what a shared report or state dir looks like to the user who planted them.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from mirror.errors import UsageError
from mirror.runlock import RunLock, lock_path
from mirror.safefiles import Replacement, write_file
from mirror.server.state import RegistryState, StatePaths, save_state
from support.cli import run_mirror

PRECIOUS = "root's own file: must stay as it is\n"


@pytest.fixture
def victim(tmp_path):
    """A file elsewhere that a planted link points at (as /etc/shadow would be)."""
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "elsewhere" / "precious"
    path.write_text(PRECIOUS)
    return path


def plant_link(at, victim):
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(victim)


def test_write_file_replaces_a_link_at_its_name_and_leaves_no_temporary(tmp_path, victim):
    shared = tmp_path / "shared"
    plant_link(shared / "report.json", victim)
    write_file(shared / "report.json", b"{}\n", mode=0o600)
    assert victim.read_text() == PRECIOUS
    written = shared / "report.json"
    assert not written.is_symlink() and written.read_bytes() == b"{}\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600  # the mode asked, from creation on
    assert [p.name for p in shared.iterdir()] == ["report.json"]


def test_temporary_names_are_random_so_no_link_can_wait_for_them(tmp_path):
    first, second = Replacement(tmp_path / "state.json"), Replacement(tmp_path / "state.json")
    try:
        assert first.temp != second.temp and first.temp.parent == tmp_path
    finally:
        first.discard()
        second.discard()
    assert list(tmp_path.iterdir()) == []


def test_sync_report_is_not_written_through_a_link_planted_at_its_temporary_name(
        seeded_source, registry, tmp_path, victim, monkeypatch):
    """`sync run --report` wrote through the fixed name .NAME.partial: a link there overwrote its target."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    reports = tmp_path / "reports"
    plant_link(reports / ".run.json.partial", victim)
    result = run_mirror("sync", "run", "docker.io/rancher/fleet:v0.3.10", "--to", registry.host, "--to-plain-http",
                        "--dry-run", "-q", "--report", reports / "run.json", *seeded_source.mirror_args)
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == PRECIOUS
    assert json.loads((reports / "run.json").read_text())["dry_run"] is True


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_run_lock_refuses_a_planted_link_and_truncates_nothing(tmp_path, victim, monkeypatch, link):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = lock_path("sync -> registry.example:5000")
    path.parent.mkdir(parents=True)
    os.symlink(victim, path) if link == "symbolic" else os.link(victim, path)
    with pytest.raises(UsageError) as refused:
        with RunLock("sync -> registry.example:5000", "sync to registry.example:5000"):
            pass
    assert victim.read_text() == PRECIOUS
    assert str(path) in str(refused.value)


def test_registry_down_does_not_truncate_what_a_lock_link_points_at(tmp_path, victim):
    state_dir = tmp_path / "state"
    plant_link(state_dir / "lock", victim)
    result = run_mirror("registry", "down", "--state-dir", state_dir)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"mirror: error: lock file {state_dir / 'lock'} is a symbolic link: refusing to follow "
                             "it (remove it if it is not someone's trap)\n")
    assert victim.read_text() == PRECIOUS


def test_registry_state_is_not_written_through_a_link_planted_at_its_temporary_name(tmp_path, victim):
    """save_state wrote STATE/state.partial, then renamed it: a link there received the state."""
    paths = StatePaths(tmp_path / "state")
    save_state(paths, RegistryState(engine="binary", host="127.0.0.1:5000", hostnames=[], port=5000,
                                    address="127.0.0.1", data_dir=str(tmp_path / "data"), tls=False, running=False))
    plant_link(paths.root / "state.partial", victim)
    result = run_mirror("registry", "down", "--state-dir", paths.root)
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == PRECIOUS
    assert json.loads(paths.state_file.read_text())["running"] is False


def test_config_force_replaces_a_link_instead_of_writing_through_it(tmp_path, victim):
    out = tmp_path / "out"
    plant_link(out / "registries.yaml", victim)
    result = run_mirror("config", "k3s", "--registry", "registry.example:5000", "--output-dir", out, "--force")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == PRECIOUS
    written = out / "registries.yaml"
    assert not written.is_symlink() and "registry.example:5000" in written.read_text()


def test_a_directory_every_user_may_write_in_without_the_sticky_bit_is_refused(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state_dir.chmod(0o777)
    result = run_mirror("registry", "down", "--state-dir", state_dir)
    assert result.returncode == 2
    assert result.stderr == (f"mirror: error: directory {state_dir} is writable by every user and not sticky: "
                             "refusing to write there (another user could swap the files in it); use another "
                             "directory, or `chmod o-w` or `chmod +t` it\n")
    assert list(state_dir.iterdir()) == []
    state_dir.chmod(0o1777)  # sticky, as /tmp: others cannot rename or delete what is ours
    assert run_mirror("registry", "down", "--state-dir", state_dir).returncode == 0
