"""A whole topology in sync.yaml (`mode: k3s` with its versions): what `pull --mode` carries, on a schedule.

The lists come from the cache (offline_lists), as a bastion's scheduled job would have them; the source is a
loopback docker.io and quay.io holding exactly those images.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest

from support.cli import ROOT, run_mirror

RELEASES_URL = "https://releases.invalid"
K3S, RANCHER, CERT_MANAGER = "v1.99.0+k3s1", "v2.99.0", "v1.7.1"  # K3s and Rancher lists cached, cert-manager's built in
K3S_LIST = ["docker.io/rancher/klipper-helm:v0.99.0"]
RANCHER_LIST = ["docker.io/rancher/rancher:v2.99.0", "docker.io/rancher/system-agent-installer-k3s:v1.30.4-k3s1",
                "docker.io/rancher/k3s-upgrade:v1.99.0-k3s1"]
TRIMMED = "docker.io/rancher/k3s-upgrade:v1.29.8-k3s1"  # of another Kubernetes minor: downstream_versions leaves it
CERT_MANAGER_LIST = [f"quay.io/jetstack/cert-manager-{name}:{CERT_MANAGER}"
                     for name in ("cainjector", "controller", "ctl", "webhook")]
SYNCED = K3S_LIST + RANCHER_LIST + CERT_MANAGER_LIST


@pytest.fixture(scope="module")
def topology_source(tmp_path_factory):
    from support import corpus
    from support import testbed

    spec = corpus.CorpusSpec("topology", tuple(corpus.ImageSpec(name, "docker", (corpus.AMD64,), (10,))
                                               for name in [*SYNCED, TRIMMED]), base_kb=20)
    registry = testbed.start_registry(tmp_path_factory.mktemp("topology-source"))
    try:
        corpus.seed_registry(registry.host, corpus.generate_corpus(tmp_path_factory.mktemp("corpus"), spec))
        cache = tmp_path_factory.mktemp("cache")
        for component, version, asset, names in (
                ("k3s", K3S, f"k3s-io/k3s/releases/download/{K3S.replace('+', '%2B')}/k3s-images.txt", K3S_LIST),
                ("rancher", RANCHER, f"rancher/rancher/releases/download/{RANCHER}/rancher-images.txt",
                 [*RANCHER_LIST, TRIMMED])):
            cached = cache / "mirror" / "lists" / component / f"{version}.txt"
            cached.parent.mkdir(parents=True)
            cached.write_text(f"# source: {RELEASES_URL}/{asset}\n# sha256: {'0' * 64}\n"
                              + "".join(f"{name}\n" for name in names))
        yield registry.host, {"XDG_CACHE_HOME": str(cache), "MIRROR_RELEASES_URL": RELEASES_URL}
    finally:
        registry.stop()


def write_job(path, source_host: str, target_host: str):
    path.write_text(f"""
target: {{registry: '{target_host}', plain_http: true}}
sources:
  - {{registry: docker.io, mirror: 'http://{source_host}/dockerhub'}}
  - {{registry: quay.io, mirror: 'http://{source_host}/quay'}}
interval: 6h
keep_going: false
images:
  - mode: k3s
    k3s_version: '{K3S}'
    rancher_version: {RANCHER}
    cert_manager_version: {CERT_MANAGER}
    downstream_versions: [v1.30]
    offline_lists: true
    no_registry_image: true
    kit: false  # the images alone here; the kit: test_sync_kit.py
""")
    return path


def tags_at(host: str) -> set[str]:
    from mirror.model.reference import Reference
    from mirror.model.target import source_name

    found = set()
    for repository in httpx.get(f"http://{host}/v2/_catalog", timeout=10).json()["repositories"]:
        for tag in httpx.get(f"http://{host}/v2/{repository}/tags/list", timeout=10).json()["tags"] or []:
            found.add(str(Reference.parse(f"{source_name(repository)}:{tag}")))
    return found


def test_a_mode_entry_syncs_the_topology_as_pull_mode_selects_it(topology_source, registry, tmp_path):
    source_host, env = topology_source
    job = write_job(tmp_path / "rancher.yaml", source_host, registry.host)
    ran = run_mirror("sync", "run", "-c", job, "--json", "-q", env={**env, "XDG_STATE_HOME": str(tmp_path)})
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert sorted(i["source"] for i in report["images"] if i["action"] == "copied") == sorted(SYNCED)
    assert tags_at(registry.host) == set(SYNCED)
    assert f"mirror: rancher {RANCHER}: " in ran.stderr  # where its list came from, as pull says it
    assert "left out 1 per-Kubernetes-version images" in ran.stderr

    listed = run_mirror("lists", "--mode", "k3s", "--k3s-version", K3S, "--rancher-version", RANCHER,
                        "--cert-manager-version", CERT_MANAGER, "--downstream-versions", "v1.30", "--offline-lists",
                        "--no-registry-image", env=env)
    assert sorted(line for line in listed.stdout.splitlines() if line and not line.startswith("#")) == sorted(SYNCED)


def test_a_mode_entry_is_scheduled_by_both_printers_without_fetching_a_list(topology_source, tmp_path):
    source_host, _ = topology_source  # no cache given: printing never reads the lists
    job = write_job(tmp_path / "rancher.yaml", source_host, "reg.dmz.corp:5000")
    units = run_mirror("sync", "print-systemd", "-c", job)
    assert units.returncode == 0, units.stderr
    assert f"sync run -c {job}" in units.stdout and "OnCalendar=*-*-* 00/6:00:00" in units.stdout
    cron = run_mirror("sync", "print-cronjob", "-c", job, "--image", "reg.corp/tools/mirror:1")
    assert cron.returncode == 0 and '"0 */6 * * *"' in cron.stdout, cron.stderr


def test_serve_runs_a_mode_entry(topology_source, registry, tmp_path):
    source_host, env = topology_source
    job = write_job(tmp_path / "rancher.yaml", source_host, registry.host)
    reports = tmp_path / "reports"
    serve = subprocess.Popen([sys.executable, "-m", "mirror", "sync", "serve", "-c", job, "--report-dir", reports],
                             cwd=ROOT, env={**__import__("os").environ, **env, "XDG_STATE_HOME": str(tmp_path)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(reports.glob("*.json")) and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        serve.send_signal(signal.SIGTERM)
        _, log = serve.communicate(timeout=60)
    kept = list(reports.glob("*.json"))
    assert len(kept) == 1, log
    assert json.loads(kept[0].read_text())["result"] == "ok", log
    assert tags_at(registry.host) == set(SYNCED)
    assert f"rancher {RANCHER}: " in log  # the list's origin, in serve's log


@pytest.mark.parametrize("entry, key, why", [
    ("{mode: k3s, repository: docker.io/rancher/x}", "mode", "an entry names one of"),
    ("{mode: k4s}", "mode", "unknown mode 'k4s'"),
    ("{image: docker.io/rancher/x:1, k3s_version: v1}", "k3s_version", "belongs to a mode: entry"),
    ("{mode: k3s, keep_latest: 2}", "keep_latest", "selects tags"),
    ("{images_files: [missing.txt]}", "images_files", "no such file"),
    ("{image: docker.io/rancher/x:1, charts: false}", "charts", "belongs to a mode: entry"),
    ("{mode: k3s, files: extra.txt}", "files", "expected false (the mode's own left out) or a list of more"),
    ("{mode: k3s, kit: 1}", "kit", "expected true or false"),
])
def test_a_bad_list_entry_is_exit_2_naming_file_line_and_key(tmp_path, entry, key, why):
    job = tmp_path / "bad.yaml"
    job.write_text(f"target: {{registry: reg.dmz.corp:5000}}\nimages:\n  - {entry}\n")
    result = run_mirror("sync", "run", "-c", job)
    assert result.returncode == 2, result.stderr
    assert f"{job}:3: {key}: {why}" in result.stderr, result.stderr
