"""`mirror config` for the registry `mirror registry up` started: its CA and user reach the nodes' files.

A real registry (Debian's docker-registry, TLS + htpasswd) started by `up`
on loopback; config finds it through MIRROR_STATE_DIR, as push does.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mirror.server.state import find_local_registry
from support import testbed
from support.cli import run_mirror


class Started:
    def __init__(self, state_dir: Path, port: int):
        self.state_dir = state_dir
        self.port = port
        self.env = {"MIRROR_STATE_DIR": str(state_dir)}
        local = find_local_registry(state_dir)
        assert local is not None and local.credentials is not None
        self.ca_file = local.ca_file
        self.credentials = local.credentials

    def config(self, *args, input: str | None = None):
        return run_mirror("config", *args, env=self.env, input=input)


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> Started:
    state_dir = tmp_path_factory.mktemp("up") / "state"
    port = testbed.free_port()
    up = run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
                    "--hostname", "reg.example.com", "--engine", "binary")
    assert up.returncode == 0, up.stderr
    try:
        yield Started(state_dir, port)
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def k3s_config(started: Started, out: Path, *args: str) -> str:
    result = started.config("k3s", *args, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert (out / "registry-ca.crt").read_bytes() == started.ca_file.read_bytes()
    return result.stderr


def expected_configs(registry: str, password: str = "REPLACE-WITH-PASSWORD") -> str:
    return (f'configs:\n  "{registry}":\n    auth:\n      username: "mirror"\n      password: "{password}"\n'
            f'    tls:\n      ca_file: "/etc/rancher/k3s/registry-ca.crt"\n')


def test_named_by_a_certificate_name_gets_ca_and_user(started, tmp_path):
    registry = f"reg.example.com:{started.port}"
    stderr = k3s_config(started, tmp_path, "--registry", registry)
    text = (tmp_path / "registries.yaml").read_text()
    assert f'endpoint:\n      - "https://{registry}"' in text
    assert text.endswith(expected_configs(registry))
    assert "warning" not in stderr


def test_without_registry_names_it_as_nodes_reach_it(started, tmp_path):
    k3s_config(started, tmp_path)
    registry = f"reg.example.com:{started.port}"
    text = (tmp_path / "registries.yaml").read_text()
    assert f'endpoint:\n      - "https://{registry}"' in text
    assert text.endswith(expected_configs(registry))


def test_recorded_password_only_with_include_secrets(started, tmp_path):
    k3s_config(started, tmp_path, "--include-secrets")
    written = tmp_path / "registries.yaml"
    assert written.read_text().endswith(expected_configs(f"reg.example.com:{started.port}",
                                                         started.credentials.password))
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_an_address_of_this_host_outside_the_certificate_warns(started, tmp_path):
    """127.0.0.7 is this machine (all of 127/8 is) but not in the certificate: nodes would refuse its TLS."""
    registry = f"127.0.0.7:{started.port}"
    stderr = k3s_config(started, tmp_path, "--registry", registry)
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, stderr
    assert f"--registry {registry}: 127.0.0.7 is not in the certificate" in warnings[0]
    assert "reg.example.com" in warnings[0]
    assert (tmp_path / "registries.yaml").read_text().endswith(expected_configs(registry))


def test_another_registry_gets_no_recorded_secrets(started, tmp_path):
    result = started.config("k3s", "--registry", f"reg.example.com:{started.port + 1}")
    assert result.returncode == 0, result.stderr
    assert "configs:" not in result.stdout and "warning" not in result.stderr
