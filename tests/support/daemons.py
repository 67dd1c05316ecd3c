"""Real containerd and Docker Engine daemons for tests, rooted under a temp dir.

Each daemon keeps its data (content, snapshots, images) under the given
directory and its sockets in a short private directory under /tmp (unix
socket paths are limited to ~108 bytes, pytest's tmp paths are long). Nothing
touches the host's own /var/lib/containerd, /var/lib/docker or their sockets.

    from support.daemons import start_dockerd, start_containerd
    docker = start_dockerd(tmp / "docker", config_file=tmp / "daemon.json")
    ctr = start_containerd(tmp / "containerd")   # ctr --address ctr.address ...
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker

from support.testbed import require

START_TIMEOUT = 60.0  # dockerd with vfs on 2 cores can take a while


@dataclass
class _Daemon:
    directory: Path
    run_dir: Path  # short path holding the sockets; removed on stop
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _check_alive(self, name: str) -> None:
        if self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"{name} exited ({self.process.returncode}): {self.log.read_text()[-3000:]}")


@dataclass
class Dockerd(_Daemon):
    etc_docker: Path | None = None  # its own /etc/docker, when started with ``hosts``

    @property
    def certs_dir(self) -> Path:
        """Where this dockerd reads registry CAs: ``certs.d/<host:port>/ca.crt``."""
        return (self.etc_docker or Path("/etc/docker")) / "certs.d"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=120)


@dataclass
class Containerd(_Daemon):
    @property
    def address(self) -> Path:
        return self.run_dir / "containerd.sock"

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``ctr --address ADDRESS ARGS``; output captured, never raises on failure."""
        return subprocess.run([require("ctr"), "--address", str(self.address), *args],
                              capture_output=True, text=True, timeout=timeout)


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def start_dockerd(directory: Path, *, config_file: Path | None = None,
                  hosts: dict[str, str] | None = None) -> Dockerd:
    """dockerd (vfs, no iptables, no bridge) with data under ``directory``; waits for /_ping.

    ``config_file`` is passed as ``--config-file`` (a daemon.json, e.g. with
    ``registry-mirrors``); without it an empty one is used so the host's
    /etc/docker/daemon.json never leaks in.

    ``hosts`` ({name: address}) runs dockerd in a mount namespace of its own
    whose /etc/hosts maps those names and whose /etc/docker is under
    ``directory`` (CAs go in ``daemon.certs_dir``). dockerd never verifies TLS
    of a registry in 127.0.0.0/8; a name mapped to ::1 is verified as on a
    real node, and the host's /etc is left alone.
    """
    directory.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="mirror-dockerd-"))
    if config_file is None:
        config_file = directory / "daemon.json"
        config_file.write_text("{}\n")
    argv = [
        require("dockerd"), "--config-file", str(config_file),
        "--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none",
        "--data-root", str(directory / "data"), "--exec-root", str(run_dir / "exec"),
        "--pidfile", str(run_dir / "docker.pid"), "-H", f"unix://{run_dir / 'docker.sock'}",
    ]
    etc_docker = None
    if hosts is not None:
        etc_docker = directory / "etc-docker"
        (etc_docker / "certs.d").mkdir(parents=True, exist_ok=True)
        hosts_file = directory / "hosts"
        hosts_file.write_text("127.0.0.1 localhost\n::1 localhost\n"
                              + "".join(f"{address} {name}\n" for name, address in hosts.items()))
        argv = [require("unshare"), "--mount", "--propagation", "private", "sh", "-c",
                'mkdir -p /etc/docker && mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/docker '
                '&& shift 2 && exec "$@"', "sh", str(hosts_file), str(etc_docker), *argv]
    daemon = Dockerd(directory, run_dir, _spawn(argv, directory / "dockerd.log"), directory / "dockerd.log",
                     etc_docker)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        daemon._check_alive("dockerd")
        if daemon.socket.exists():
            client = daemon.client()
            try:
                if client.ping():
                    return daemon
            except docker.errors.DockerException:
                pass
            finally:
                client.close()
        time.sleep(0.2)
    daemon.stop()
    raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT}s: {daemon.log.read_text()[-3000:]}")


def start_containerd(directory: Path) -> Containerd:
    """containerd with root/state under ``directory`` and the CRI plugin off; waits for ``ctr version``."""
    directory.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="mirror-containerd-"))
    config = directory / "config.toml"
    config.write_text("\n".join([
        "version = 2",
        f'root = "{directory / "root"}"',
        f'state = "{run_dir / "state"}"',
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        f'  address = "{run_dir / "containerd.sock"}"',
        "[ttrpc]",
        f'  address = "{run_dir / "containerd.sock.ttrpc"}"',
        "[debug]",
        '  address = ""',
        "[metrics]",
        '  address = ""',
    ]) + "\n")
    argv = [require("containerd"), "--config", str(config)]
    daemon = Containerd(directory, run_dir, _spawn(argv, directory / "containerd.log"),
                        directory / "containerd.log")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        daemon._check_alive("containerd")
        if daemon.address.exists() and daemon.ctr("version", timeout=10).returncode == 0:
            return daemon
        time.sleep(0.2)
    daemon.stop()
    raise RuntimeError(f"containerd did not answer within {START_TIMEOUT}s: {daemon.log.read_text()[-3000:]}")
