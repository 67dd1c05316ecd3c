"""`registry up` with the operator's own certificate, with plain HTTP and no auth, and as a
systemd unit: each still leaves push and config a registry they can reach."""

from __future__ import annotations

import json
import os
import pty
import shlex
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mirror.errors import UsageError
from mirror.server import binary
from mirror.server.probe import answers, require_local_registry
from mirror.server.state import find_local_registry
from mirror.bundle.store import BlobStore
from support import testbed
from support.cli import ROOT, run_mirror
from support.registry_image import build_other_image, write_test_bundle


def up(state_dir, port, *extra):
    return run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
                      "--engine", "binary", *extra)


def test_operator_certificate_and_ca_are_used_and_recorded(tmp_path):
    tls = testbed.make_tls(tmp_path / "tls", ("127.0.0.1", "reg.example.com"))
    state_dir, port = tmp_path / "state", testbed.free_port()
    try:
        result = up(state_dir, port, "--cert", tls.cert, "--key", tls.key, "--ca-file", tls.ca_cert)
        assert result.returncode == 0, result.stderr
        local = find_local_registry(state_dir)
        assert local.ca_file == tls.ca_cert and not (state_dir / "ca").exists()
        auth = (local.credentials.username, local.credentials.password)
        trust = ssl.create_default_context(cafile=str(tls.ca_cert))
        response = httpx.get(f"https://{local.host}/v2/_catalog", verify=trust, auth=auth)
        assert response.status_code == 200
        served = subprocess.run(["openssl", "s_client", "-connect", local.host, "-showcerts"],
                                input="", capture_output=True, text=True, timeout=30).stdout
        assert tls.cert.read_text().strip().splitlines()[1] in served  # our certificate, not a generated one
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def test_plain_http_without_auth(tmp_path):
    state_dir, port = tmp_path / "state", testbed.free_port()
    try:
        result = up(state_dir, port, "--no-tls", "--auth", "none")
        assert result.returncode == 0, result.stderr
        assert "password" not in result.stdout
        local = find_local_registry(state_dir)
        assert local.plain_http and local.credentials is None and local.ca_file is None
        assert httpx.get(f"http://{local.host}/v2/").status_code == 200
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def test_ipv6_listen_address_serves_with_its_certificate(tmp_path):
    state_dir, port = tmp_path / "state", testbed.free_port()
    try:
        result = run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "::1",
                            "--engine", "binary")
        assert result.returncode == 0, result.stderr
        local = find_local_registry(state_dir)
        assert local.host == f"[::1]:{port}"
        trust = ssl.create_default_context(cafile=str(local.ca_file))  # the certificate names ::1
        response = httpx.get(f"https://{local.host}/v2/_catalog", verify=trust,
                             auth=(local.credentials.username, local.credentials.password))
        assert response.status_code == 200
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def test_systemd_unit_runs_the_prepared_registry_and_nothing_starts_before(tmp_path):
    state_dir, port = tmp_path / "state", testbed.free_port()
    result = up(state_dir, port, "--print-systemd-unit")
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    assert unit.startswith("[Unit]\n") and "WantedBy=multi-user.target" in unit
    assert "password" not in unit and "password" in result.stderr  # stdout is the unit file alone
    local = find_local_registry(state_dir)
    assert not answers(local)  # prepared, not started
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    process = subprocess.Popen(shlex.split(exec_start.removeprefix("ExecStart=")), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # what systemd would run
    try:
        deadline = time.monotonic() + 20
        while not answers(local) and time.monotonic() < deadline:
            time.sleep(0.1)
        status = run_mirror("registry", "status", "--state-dir", state_dir, "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["engine"] == "systemd", status.stdout
        down = run_mirror("registry", "down", "--state-dir", state_dir)
        assert down.returncode == 2 and "systemctl disable --now mirror-registry" in down.stderr
    finally:
        process.terminate()
        process.wait(10)


def test_require_local_registry_says_the_next_step(tmp_path):
    state_dir, port = tmp_path / "state", testbed.free_port()
    with pytest.raises(UsageError, match=r"no --registry given .* run `mirror registry up --from-bundle BUNDLE`"):
        require_local_registry(state_dir)
    store = BlobStore(tmp_path / "store")
    bundle = write_test_bundle(tmp_path / "bundle.tar.zst", store, [build_other_image(store)])
    pushed = run_mirror("push", bundle, env={"MIRROR_STATE_DIR": str(state_dir)})
    assert pushed.returncode == 2 and "run `mirror registry up --from-bundle BUNDLE`" in pushed.stderr
    try:
        assert up(state_dir, port).returncode == 0
        found = require_local_registry(state_dir)
        assert found == find_local_registry(state_dir) and found.host == f"127.0.0.1:{port}"
        binary.stop(state_dir / "registry.pid", state_dir / "registry" / "config.yml")  # it died
        with pytest.raises(UsageError, match=rf"127.0.0.1:{port} does not answer: see `mirror registry status`"):
            require_local_registry(state_dir)
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def on_terminal(*args: str) -> tuple[int, str]:
    """Run mirror with its stdout on a terminal (a pty), as an operator typing the command."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mirror", *map(str, args)], stdin=subprocess.DEVNULL,
                               stdout=slave, stderr=subprocess.DEVNULL, cwd=ROOT)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    return process.wait(timeout=120), output.decode(errors="replace")


def test_generated_password_is_shown_on_a_terminal_never_in_json(tmp_path):
    state_dir, port = tmp_path / "json", testbed.free_port()
    try:
        result = up(state_dir, port, "--json")
        assert result.returncode == 0, result.stderr
        password = find_local_registry(state_dir).credentials.password
        assert password not in result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert "password" not in report and report["username"] == "mirror"
        assert report["credentials_file"] == str(state_dir / "credentials")
        assert json.loads((state_dir / "credentials").read_text())["password"] == password
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)

    state_dir, port = tmp_path / "terminal", testbed.free_port()
    try:
        code, output = on_terminal("registry", "up", "--state-dir", state_dir, "--port", port, "--address",
                                   "127.0.0.1", "--engine", "binary")
        assert code == 0, output
        password = find_local_registry(state_dir).credentials.password
        assert f"user mirror, password {password}" in output and "shown once" in output
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def test_the_operators_registry_variables_do_not_reach_the_registry(tmp_path):
    """distribution takes any REGISTRY_* variable as configuration: REGISTRY_AUTH_FILE (podman's and skopeo's)
    made it print its usage and exit, REGISTRY_HTTP_ADDR would move it. It gets a clean environment."""
    state_dir, port, elsewhere = tmp_path / "state", testbed.free_port(), testbed.free_port()
    shell = {"REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"), "REGISTRY_HTTP_ADDR": f"127.0.0.1:{elsewhere}",
             "AWS_CA_BUNDLE": str(tmp_path / "aws.pem"), "SSL_CERT_FILE": str(tmp_path / "ca.pem")}
    try:
        result = run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address",
                            "127.0.0.1", "--engine", "binary", "--no-tls", "--auth", "none", env=shell)
        assert result.returncode == 0, result.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/v2/").status_code == 200
        pid = int((state_dir / "registry.pid").read_text())
        environment = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        assert [v for v in environment if v.startswith(("REGISTRY_", "AWS_", "SSL_"))] == []
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)
