"""The printed schedulers run as printed: systemd accepts the units, the service finds its passwords and may
write its state as the user it runs as, and the CronJob mounts every file the config names where the config
looks for it."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from support import testbed
from support.cli import run_mirror

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def shared_dir():
    """A directory other users can read (pytest's tmp_path is 0700 root): the config, as in /etc/mirror."""
    path = Path(tempfile.mkdtemp(prefix="mirror-units-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def run_as_systemd_would(service: str, root: Path, user: pwd.struct_passwd) -> subprocess.CompletedProcess:
    """Run a oneshot service's ExecStart as systemd does: its own environment only (Environment=,
    EnvironmentFile= read by root), %S and %C made and owned by the service's user, run as that user."""
    settings: dict[str, list[str]] = {}
    for line in service.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key, []).append(value)
    state, cache = root / "state", root / "cache"
    for directory, names in ((state, settings["StateDirectory"]), (cache, settings["CacheDirectory"])):
        for name in names:
            (directory / name).mkdir(parents=True)
            os.chown(directory / name, user.pw_uid, user.pw_gid)
    expand = lambda text: text.replace("%S", str(state)).replace("%C", str(cache))  # noqa: E731
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/"}
    for assignments in settings.get("Environment", []):
        env.update(item.split("=", 1) for item in shlex.split(expand(assignments)))
    for env_file in settings.get("EnvironmentFile", []):
        env.update(line.split("=", 1) for line in Path(env_file).read_text().splitlines() if "=" in line)
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
               *shlex.split(expand(settings["ExecStart"][0]))]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd="/")


def test_the_service_runs_as_printed_with_its_password_from_the_environment_file(
        seeded_source, start_registry, tmp_path, shared_dir):
    guarded = start_registry(htpasswd=testbed.make_htpasswd(tmp_path / "htpasswd", "robot", "s3cret"))
    mirror = seeded_source.mirror_args[1].split("=", 1)[1]
    config = shared_dir / "nightly.yaml"
    config.write_text(f"""
target:
  registry: {guarded.host}
  plain_http: true
  username: robot
  password: {{env: ROBOT_PASSWORD}}
schedule: '15 2 * * *'
sources:
  - {{registry: docker.io, mirror: '{mirror}'}}
images:
  - image: docker.io/rancher/mirrored-pause:3.6
""")
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    written = run_mirror("sync", "print-systemd", "-c", config, "--output-dir", units_dir)
    assert written.returncode == 0, written.stderr
    service, timer = units_dir / "mirror-sync-nightly.service", units_dir / "mirror-sync-nightly.timer"
    assert sorted(units_dir.iterdir()) == [service, timer]
    verified = subprocess.run(["systemd-analyze", "verify", service, timer], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    text = service.read_text()
    assert "DynamicUser=yes" in text and "s3cret" not in text
    env_file = Path(next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("EnvironmentFile=")))
    assert env_file == Path("/etc/mirror/mirror-sync-nightly.env")

    # What the unit's comment tells the operator to write, where it says.
    made_dir = not env_file.parent.exists()
    env_file.parent.mkdir(exist_ok=True)
    assert not env_file.exists(), f"{env_file} is not the test's to overwrite"
    try:
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"ROBOT_PASSWORD=s3cret\n")
        os.close(fd)
        ran = run_as_systemd_would(text, shared_dir / "systemd", NOBODY)
    finally:
        env_file.unlink()
        if made_dir:
            env_file.parent.rmdir()
    assert ran.returncode == 0, ran.stderr
    report = shared_dir / "systemd" / "state" / "mirror" / "mirror-sync-nightly.json"
    assert yaml.safe_load(report.read_text())["result"] == "ok"
    assert httpx_get_tags(guarded.host, "rancher/mirrored-pause") == ["3.6"]


def httpx_get_tags(host: str, repository: str) -> list[str]:
    import httpx

    answer = httpx.get(f"http://{host}/v2/{repository}/tags/list", auth=("robot", "s3cret"), timeout=10)
    return answer.json()["tags"]


def test_a_job_reading_files_or_writing_bundles_names_the_user_it_runs_as(tmp_path):
    password = tmp_path / "robot.password"
    config = tmp_path / "files.yaml"
    config.write_text("target:\n  registry: reg.dmz.corp:5000\n  username: robot\n"
                      "  password: {file: robot.password}\ninterval: 6h\nimages:\n  - image: docker.io/x/y:1\n")
    refused = run_mirror("sync", "print-systemd", "-c", config)
    assert refused.returncode == 2 and str(password) in refused.stderr and "--user" in refused.stderr
    given = run_mirror("sync", "print-systemd", "-c", config, "--user", "mirror")
    assert given.returncode == 0, given.stderr
    assert "User=mirror" in given.stdout and "DynamicUser" not in given.stdout


def test_the_cronjob_mounts_every_file_the_config_names_and_keeps_its_time_zone(tmp_path):
    (tmp_path / "ca.crt").write_text("not read\n")
    config = tmp_path / "dmz.yaml"
    config.write_text("target:\n  registry: reg.dmz.corp:5000\n  ca_file: ca.crt\n  username: robot\n"
                      "  password: {file: /run/secrets/robot}\n"
                      "sources:\n  - {registry: docker.io, username: hub, password: {env: HUB_TOKEN}}\n"
                      "schedule: '15 2 * * *'\nimages:\n  - image: docker.io/x/y:1\n")
    printed = run_mirror("sync", "print-cronjob", "-c", config, "--image", "reg.corp/tools/mirror:1",
                         "--time-zone", "Europe/Berlin")
    assert printed.returncode == 0, printed.stderr
    job = yaml.safe_load(printed.stdout)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "CronJob"
    assert job["spec"]["schedule"] == "15 2 * * *" and job["spec"]["timeZone"] == "Europe/Berlin"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounted = {m["mountPath"]: m["subPath"] for m in container["volumeMounts"]}
    assert set(mounted) == {str(config), str(tmp_path / "ca.crt"), "/run/secrets/robot"}
    assert container["args"][:4] == ["sync", "run", "-c", str(config)]
    secret = pod["volumes"][0]["secret"]["secretName"]
    assert container["env"] == [{"name": "HUB_TOKEN",
                                 "valueFrom": {"secretKeyRef": {"name": secret, "key": "HUB_TOKEN"}}}]
    create = next(line for line in printed.stdout.splitlines() if "kubectl" in line)
    for path, key in mounted.items():  # each file goes into the Secret under the key the pod mounts
        assert f"--from-file={key}={path}" in create
    assert "--from-literal=HUB_TOKEN=" in create
