"""One state dir, one registry: `up` and `down` take turns, a running registry is replaced only when
asked, and `down --purge` deletes only what `up` made. The binary engine: nothing here is engine-specific."""

from __future__ import annotations

import os
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from cryptography import x509

from mirror.server.state import find_local_registry
from mirror.server.statelock import state_lock
from mirror.bundle.store import BlobStore
from support import testbed
from support.cli import assert_refused
from support.cli import run_mirror
from support.registry_image import build_other_image, write_test_bundle
from support.server import registries_running, serves


def up(state_dir, port, *extra):
    return run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
                      "--engine", "binary", "--no-tls", "--auth", "none", *extra)


def test_up_refuses_while_another_up_or_down_holds_the_state_dir(tmp_path):
    state_dir, port = tmp_path / "state", testbed.free_port()
    with state_lock(state_dir):  # as an `up` at work would
        result = up(state_dir, port)
    line = assert_refused(result, f"pid {os.getpid()}", str(state_dir))
    assert "another `mirror registry up` or `down`" in line
    assert registries_running("binary", state_dir, None) == 0
    assert find_local_registry(state_dir) is None and not serves(port)


def test_two_ups_at_once_leave_one_registry_that_down_stops(tmp_path):
    state_dir, port = tmp_path / "state", testbed.free_port()
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: up(state_dir, port), range(2)))
        assert any(r.returncode == 0 for r in results), [r.stderr for r in results]
        for result in results:  # the other one either found it running or was told who held the lock
            assert result.returncode == 0 or "another `mirror registry up` or `down` (pid" in result.stderr
        assert registries_running("binary", state_dir, None) == 1 and serves(port)
    finally:
        down = run_mirror("registry", "down", "--state-dir", state_dir)
    assert down.returncode == 0 and "registry stopped" in down.stdout, down.stdout + down.stderr
    assert registries_running("binary", state_dir, None) == 0 and not serves(port)


def test_up_on_another_port_or_data_dir_refuses_without_reconfigure(tmp_path):
    state_dir, port, other_port = tmp_path / "state", testbed.free_port(), testbed.free_port()
    try:
        assert up(state_dir, port).returncode == 0
        for refused, change in ((up(state_dir, other_port), f"port {port} (not {other_port})"),
                                (up(state_dir, port, "--data-dir", tmp_path / "elsewhere"),
                                 f"data dir {state_dir / 'data'}")):
            assert_refused(refused, str(state_dir), change, "--reconfigure")
            assert serves(port) and registries_running("binary", state_dir, None) == 1
        assert not serves(other_port) and not (tmp_path / "elsewhere").exists()

        moved = up(state_dir, other_port, "--reconfigure")
        assert moved.returncode == 0, moved.stderr
        assert serves(other_port) and not serves(port)
        assert registries_running("binary", state_dir, None) == 1
        assert find_local_registry(state_dir).host == f"127.0.0.1:{other_port}"
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def certificate_names(state_dir) -> set[str]:
    cert = x509.load_pem_x509_certificate((state_dir / "registry" / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*names.get_values_for_type(x509.DNSName), *map(str, names.get_values_for_type(x509.IPAddress))}


def test_up_after_a_reboot_starts_the_registry_nodes_know(tmp_path):
    """Nodes use reg.airgap.test:PORT over TLS with a password; the machine reboots (the registry process is
    gone, the state says it ran); `up` with no flags starts that same registry, not one on 0.0.0.0:5000 whose
    certificate names only this machine."""
    state_dir, port = tmp_path / "state", testbed.free_port()
    first = run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
                       "--hostname", "reg.airgap.test", "--engine", "binary")
    try:
        assert first.returncode == 0, first.stderr
        before = find_local_registry(state_dir)
        os.kill(int((state_dir / "registry.pid").read_text()), signal.SIGKILL)  # the reboot
        wait_until(lambda: registries_running("binary", state_dir, None) == 0)

        again = run_mirror("registry", "up", "--state-dir", state_dir)
        assert again.returncode == 0, again.stderr
        after = find_local_registry(state_dir)
        assert after == before  # address, port, CA, credentials, names
        assert "reg.airgap.test" in certificate_names(state_dir)
        answer = httpx.get(f"https://127.0.0.1:{port}/v2/", verify=ssl.create_default_context(cafile=after.ca_file), timeout=5,
                           auth=(after.credentials.username, after.credentials.password))
        assert answer.status_code == 200

        for flags, change in ((["--port", str(testbed.free_port())], f"port {port}"),
                              (["--hostname", "other.airgap.test"], "leaves out reg.airgap.test"),
                              (["--no-tls"], "TLS on"), (["--auth", "none"], "auth on")):
            assert_refused(run_mirror("registry", "up", "--state-dir", state_dir, *flags), change, "--reconfigure")
        assert find_local_registry(state_dir) == before and certificate_names(state_dir) >= {"reg.airgap.test"}

        renamed = run_mirror("registry", "up", "--state-dir", state_dir, "--hostname", "other.airgap.test",
                             "--reconfigure")
        assert renamed.returncode == 0, renamed.stderr
        assert {"reg.airgap.test", "other.airgap.test"} <= certificate_names(state_dir)  # old names kept
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def test_purge_deletes_only_what_up_created_in_directories_the_user_gave(tmp_path):
    state_dir, data_dir, port = tmp_path / "state", tmp_path / "images", testbed.free_port()
    state_dir.mkdir()
    data_dir.mkdir()
    (state_dir / "mine.txt").write_text("the operator's notes\n")
    (data_dir / "notes.txt").write_text("the operator's notes\n")
    store = BlobStore(tmp_path / "store")
    bundle = write_test_bundle(tmp_path / "bundle.tar.zst", store, [build_other_image(store)])
    try:
        assert up(state_dir, port, "--data-dir", data_dir).returncode == 0
        pushed = run_mirror("push", bundle, "--quiet", env={"MIRROR_STATE_DIR": str(state_dir)})
        assert pushed.returncode == 0, pushed.stderr
        assert (data_dir / "docker" / "registry" / "v2").is_dir()
    finally:
        purge = run_mirror("registry", "down", "--purge", "--state-dir", state_dir)
    assert purge.returncode == 0, purge.stderr
    lines = purge.stdout.splitlines()
    assert lines[0] == "registry stopped"
    deleted = {line.removeprefix("deleted ") for line in lines if line.startswith("deleted ")}
    assert deleted == {str(data_dir / "docker")} | {str(state_dir / name) for name in (
        "registry", "registry.log", "state.json", "lock")}
    assert [line for line in lines if line.startswith("kept ")] == [
        f"kept {data_dir} (up did not create it)", f"kept {state_dir} (up did not create it)"]
    assert len(lines) == 1 + len(deleted) + 2
    assert sorted(p.name for p in data_dir.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in state_dir.iterdir()) == ["mine.txt"]
    assert registries_running("binary", state_dir, None) == 0 and not serves(port)


def test_rotate_password_and_renew_cert_restart_the_registry_as_recorded(tmp_path):
    state_dir, port = tmp_path / "state", testbed.free_port()
    assert run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
                      "--hostname", "reg.airgap.test", "--engine", "binary").returncode == 0
    try:
        before = find_local_registry(state_dir)
        trusted = ssl.create_default_context(cafile=before.ca_file)

        def answer(credentials) -> int:
            return httpx.get(f"https://127.0.0.1:{port}/v2/", verify=trusted, timeout=5,
                             auth=(credentials.username, credentials.password)).status_code

        rotated = run_mirror("registry", "rotate-password", "--state-dir", state_dir)
        assert rotated.returncode == 0, rotated.stderr
        assert "put the new password" in rotated.stdout and before.credentials.password not in rotated.stdout
        after = find_local_registry(state_dir)
        assert after.credentials.username == before.credentials.username
        assert after.credentials.password != before.credentials.password
        assert (answer(after.credentials), answer(before.credentials)) == (200, 401)

        old_cert = (state_dir / "registry" / "server.crt").read_bytes()
        renewed = run_mirror("registry", "renew-cert", "--state-dir", state_dir)
        assert renewed.returncode == 0, renewed.stderr
        assert (state_dir / "registry" / "server.crt").read_bytes() != old_cert
        assert "reg.airgap.test" in certificate_names(state_dir)
        assert find_local_registry(state_dir).ca_file == before.ca_file  # nodes trust the same CA
        assert answer(after.credentials) == 200  # verified against the old CA file

        status = run_mirror("registry", "status", "--state-dir", state_dir)
        assert "certificate for reg.airgap.test" in status.stdout and "expires" in status.stdout, status.stdout
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def test_rotate_and_renew_refuse_without_a_registry_set_up(tmp_path):
    for verb in ("rotate-password", "renew-cert"):
        assert_refused(run_mirror("registry", verb, "--state-dir", tmp_path / "none"), "run `mirror registry up` first")
    assert not (tmp_path / "none").exists()
