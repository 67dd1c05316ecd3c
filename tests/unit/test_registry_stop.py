"""Stopping the registry binary: `up --reconfigure` starts the next one on the same port right after."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from mirror.server import binary

SERVER = """
import signal, socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
print(sock.getsockname()[1], flush=True)
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.3), sys.exit(0)))  # a registry finishing requests
time.sleep(60)
"""


def test_stop_returns_once_the_process_has_let_go_of_its_port(tmp_path):
    config = tmp_path / "config.yml"
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(config)], stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline())
    pid_file = tmp_path / "registry.pid"
    pid_file.write_text(f"{process.pid}\n")

    assert binary.stop(pid_file, config) is True

    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # EADDRINUSE if the old one still held it
    assert not pid_file.exists()
    process.wait()


def test_a_zombie_or_a_reused_pid_is_an_exited_process_and_a_live_one_is_not():
    child = subprocess.Popen(["sleep", "30"])
    started = binary._start_time(child.pid)
    assert binary._exited(child.pid, started) is False
    assert binary._exited(child.pid, "1") is True  # the pid now runs a process started at another time
    child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not binary._exited(child.pid, started):  # not reaped: a zombie until wait()
        assert time.monotonic() < deadline, "a killed child never showed as exited"
        time.sleep(0.01)
    child.wait()
    assert binary._exited(child.pid, started) is True
