"""`mirror registry up|status|down` end to end, with both engines, checked by real clients.

Docker Engine: the registry image is built from Debian's docker-registry,
carried in a bundle, loaded and run by `up --from-bundle`. Binary: the same
docker-registry runs as a background process. Either way skopeo and
`mirror push` push into it and containerd pulls from it, over TLS with the
generated credentials.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import shutil
import subprocess
import termios
import time
from pathlib import Path

import pytest

from mirror.server.state import find_local_registry
from support import testbed
from support.cli import run_mirror
from support.registry_image import images  # noqa: F401 - fixture: the registry image in a bundle and a source
from support.server import registries_running, secret_exposed, up_args


REPOSITORIES = {"library/busybox": ["1.36"], "library/registry": ["2.8.2"]}


def skopeo_copy(source: str, target: str, ca_file: Path, username: str, password: str,
                tmp_path: Path) -> subprocess.CompletedProcess:
    """Push with skopeo; the password goes in an authfile, never in argv."""
    host = target.split("/")[0]
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    authfile.chmod(0o600)
    certs = tmp_path / "certs"
    certs.mkdir(exist_ok=True)
    shutil.copy(ca_file, certs / "ca.crt")
    return subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-authfile",
                           str(authfile), "--dest-cert-dir", str(certs), f"docker://{source}",
                           f"docker://{target}"],
                          capture_output=True, text=True, timeout=120)


def ctr_pull(containerd, namespace: str, reference: str, ca_file: Path, hosts_dir: Path,
             username: str | None = None, password: str | None = None) -> tuple[int, str]:
    """`ctr images pull` over TLS; the password is typed at ctr's prompt through a pty, not argv.

    A hosts.toml says https: ctr would talk plain HTTP to 127.0.0.1 otherwise.
    """
    host = reference.split("/")[0]
    (hosts_dir / host).mkdir(parents=True, exist_ok=True)
    (hosts_dir / host / "hosts.toml").write_text(
        f'server = "https://{host}"\nca = "{ca_file}"\n'
        f'[host."https://{host}"]\n  ca = "{ca_file}"\n  capabilities = ["pull", "resolve"]\n')
    argv = ["ctr", "--address", str(containerd.address), "-n", namespace, "images", "pull",
            "--hosts-dir", str(hosts_dir), "--platform", "linux/amd64"]
    argv += ["--user", username] if username else []
    master, slave = pty.openpty()
    attributes = termios.tcgetattr(slave)
    attributes[3] &= ~termios.ECHO  # the typed password must not come back in the output
    termios.tcsetattr(slave, termios.TCSANOW, attributes)
    process = subprocess.Popen([*argv, reference], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    typed = password is None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: ctr closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not typed and b"Password:" in output:
                os.write(master, password.encode() + b"\n")
                typed = True
            if process.poll() is not None and not ready:
                break
        return process.wait(timeout=30), output.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


@pytest.mark.parametrize("engine", ["docker", "binary"])
def test_up_serves_real_clients_over_tls_with_auth_and_keeps_data(engine, images, dockerd, containerd,
                                                                   tmp_path):
    bundle, source, image_bytes = images
    state_dir = tmp_path / "state"
    port = testbed.free_port()
    env = {"DOCKER_HOST": dockerd.docker_host}
    try:
        first = run_mirror(*up_args(engine, state_dir, port, bundle), env=env)
        assert first.returncode == 0, first.stderr
        assert f"https://127.0.0.1:{port} ({engine})" in first.stdout

        local = find_local_registry(state_dir)
        assert local is not None and local.host == f"127.0.0.1:{port}" and not local.plain_http
        assert local.ca_file == state_dir / "ca" / "ca.crt"
        password = local.credentials.password
        assert password not in first.stdout  # not a terminal: output may end in a log
        assert f"password in {state_dir / 'credentials'} (mode 0600)" in first.stdout
        assert (state_dir / "credentials").stat().st_mode & 0o777 == 0o600
        assert password not in (state_dir / "state.json").read_text()

        target = f"{local.host}/library/registry:2.8.2"
        pushed = skopeo_copy(source, target, local.ca_file, local.credentials.username, password,
                             tmp_path)
        assert pushed.returncode == 0, pushed.stderr

        # No --registry, CA or credentials: push finds what `up` recorded.
        pushed = run_mirror("push", bundle, "--quiet", env={**env, "MIRROR_STATE_DIR": str(state_dir)})
        assert pushed.returncode == 0, pushed.stderr
        assert f"pushed 2 images to {local.host}" in pushed.stdout

        hosts_dir = tmp_path / "hosts"
        refused, output = ctr_pull(containerd, f"anon-{engine}", target, local.ca_file, hosts_dir)
        assert refused != 0 and "401 Unauthorized" in output
        pulled, output = ctr_pull(containerd, f"up-{engine}", target, local.ca_file, hosts_dir,
                                  local.credentials.username, password)
        assert pulled == 0, output
        pulled, output = ctr_pull(containerd, f"up-{engine}", f"{local.host}/library/busybox:1.36", local.ca_file,
                                  hosts_dir, local.credentials.username, password)
        assert pulled == 0, output  # what `mirror push` carried in from the bundle
        listed = containerd.ctr("-n", f"up-{engine}", "images", "ls", "-q").stdout.split()
        assert target in listed and f"{local.host}/library/busybox:1.36" in listed

        again = run_mirror(*up_args(engine, state_dir, port, bundle), env=env)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout and password not in again.stdout
        assert registries_running(engine, state_dir, dockerd) == 1

        assert not secret_exposed(engine, state_dir, dockerd, password)

        status = run_mirror("registry", "status", "--state-dir", state_dir, "--json", env=env)
        report = json.loads(status.stdout)
        assert status.returncode == 0 and report["engine"] == engine and report["answering"]
        assert report["repositories"] == REPOSITORIES
        assert report["storage_bytes"] >= image_bytes  # the pushed blobs are in the data dir

        down = run_mirror("registry", "down", "--state-dir", state_dir, env=env)
        assert down.returncode == 0, down.stderr
        assert registries_running(engine, state_dir, dockerd) == 0
        assert find_local_registry(state_dir) is None
        assert run_mirror("registry", "status", "--state-dir", state_dir, env=env).returncode == 1

        back = run_mirror(*up_args(engine, state_dir, port, bundle), env=env)
        assert back.returncode == 0, back.stderr
        assert password not in back.stdout  # the kept password, not a new one
        status = run_mirror("registry", "status", "--state-dir", state_dir, "--json", env=env)
        assert json.loads(status.stdout)["repositories"] == REPOSITORIES

        purge = run_mirror("registry", "down", "--purge", "--state-dir", state_dir, env=env)
        assert purge.returncode == 0, purge.stderr
        assert not state_dir.exists()
        assert registries_running(engine, state_dir, dockerd) == 0
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir, env=env)
