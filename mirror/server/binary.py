"""The distribution binary as a background process, tracked by a pid file.

Used where no Docker Engine is reachable. The process gets its own session
(a closed terminal does not stop it), its output goes to a log file, and
the pid file is trusted only while that pid still runs our config.

Its environment is REGISTRY_ENVIRONMENT, not ours: distribution reads every
REGISTRY_* variable as configuration, and the operator's shell has them for
other tools (REGISTRY_AUTH_FILE is podman's and skopeo's, and made the
registry print its usage and exit), besides AWS_*, SSL_CERT_FILE and proxies
that are not for it. A systemd unit's process gets the service manager's
environment, and a container the image's: neither sees the operator's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError
from ..safefiles import open_append, write_file

# Upstream installs `registry`; Debian's docker-registry package renames it.
BINARY_NAMES = ("registry", "docker-registry")
REGISTRY_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # all it gets: its config is a file


def find_binary() -> str | None:
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_binary() -> str:
    found = find_binary()
    if not found:
        raise UsageError(
            "no registry binary on PATH (looked for registry, docker-registry) and no --from-bundle: pass "
            "--from-bundle BUNDLE (its registry image carries the binary), or install Debian's docker-registry"
        )
    return found


def start(binary: str, config: Path, pid_file: Path, log_file: Path) -> int:
    with open_append(log_file) as log:
        process = subprocess.Popen(
            [binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(REGISTRY_ENVIRONMENT), start_new_session=True, close_fds=True)
    write_file(pid_file, f"{process.pid}\n".encode())
    return process.pid


def run(binary: str, args: list[str], output: BinaryIO) -> int:
    """Run the registry binary with ``args`` to the end (not serving: ``garbage-collect``, ``--version``),
    its output to ``output``; its exit status."""
    return subprocess.run([binary, *args], stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                          env=dict(REGISTRY_ENVIRONMENT), close_fds=True).returncode


def running_pid(pid_file: Path, config: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive and serving ``config``."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    # A zombie has an empty cmdline; a recycled pid runs something else.
    return pid if str(config).encode() in cmdline else None


def stop(pid_file: Path, config: Path, timeout: float = 15.0) -> bool:
    """SIGTERM (then SIGKILL) the process and wait until it has let go of its port; remove the pid file.
    True if one ran."""
    pid = running_pid(pid_file, config)
    if pid is not None:
        started = _start_time(pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not _exited(pid, started):
            if time.monotonic() > deadline and running_pid(pid_file, config) is not None:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.02)
    pid_file.unlink(missing_ok=True)
    return pid is not None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): state first, start time 20th."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _exited(pid: int, started: str | None) -> bool:
    """The process is gone, a zombie, or its pid runs another process. Not its empty cmdline: the kernel
    drops a dying process's memory (and so its cmdline) before its files, so the listening socket may
    still be open then, and the next ``up`` on the same port would find it in use."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X") or _start_time(pid) != started


def systemd_unit(binary: str, config: Path, port: int) -> str:
    """A unit for a permanent install: ``systemctl enable --now mirror-registry``."""
    return "\n".join([
        "[Unit]",
        f"Description=mirror container registry (distribution) on port {port}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"ExecStart={binary} serve {config}",
        "Restart=on-failure",
        "RestartSec=2",
        "NoNewPrivileges=true",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]) + "\n"
