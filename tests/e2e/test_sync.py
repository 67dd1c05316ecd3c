"""mirror sync run: registry to registry, real loopback registries; a fault proxy counts upstream requests."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import httpx
import pytest

from mirror.model.reference import Reference
from mirror.model.target import target_repository
from mirror.runlock import lock_path
from support import corpus
from support.cli import ROOT, run_mirror
from support.faults import FaultProxy
from support.push_checks import ACCEPT, tag_as, tags_at, tags_pointing_at_incomplete_images

@pytest.fixture
def state_home(tmp_path, monkeypatch):
    """Locks go under a directory of this test (the runs and the test process agree on it)."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def sync(*args, input=None):
    result = run_mirror("sync", "run", *args, "--json", "-q", input=input)
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, report


def digest_at(registry_url: str, repository: str, reference: str) -> str | None:
    response = httpx.head(f"{registry_url}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
    return response.headers.get("docker-content-digest") if response.status_code == 200 else None


def repository_of(source: str) -> str:
    return target_repository(Reference.parse(source))


def actions(report) -> dict[str, str]:
    return {image["source"]: image["action"] for image in report["images"]}


def test_first_run_copies_every_image_byte_identical_second_run_costs_only_heads(
        seeded_source, registry, state_home, containerd):
    images = seeded_source.corpus.images
    with FaultProxy(seeded_source.registry.host) as proxy:
        args = [*(i.source for i in images), "--to", registry.host, "--to-plain-http",
                *corpus.source_mirror_args(proxy.host)]
        first, report = sync(*args)
        assert first.returncode == 0, first.stderr
        assert report["schema_version"] == 1 and report["result"] == "ok"
        assert set(actions(report).values()) == {"copied"}
        assert [i["source"] for i in report["images"]] == sorted(i["source"] for i in report["images"])
        for image in images:
            assert digest_at(registry.url, repository_of(image.source), image.tag) == image.digest
        assert report["bytes"]["uploaded"] > 0

        proxy.seen.clear()
        second, again = sync(*args)
        assert second.returncode == 0, second.stderr
        assert set(actions(again).values()) == {"unchanged"}
        assert again["bytes"]["uploaded"] == 0 and again["blobs"]["uploaded"] == 0
        # no manifest GET, no blob: HEADs only (and the attachment lookups' referrers API and tag lists,
        # which Docker Hub does not count as pulls)
        assert [r for r in proxy.requests("GET") if "/referrers/" not in r.path and "/tags/list" not in r.path] == []
        own = [r for r in proxy.requests("HEAD", "/manifests/") if "/manifests/sha256-" not in r.path]
        assert len(own) == len(images)  # and, alongside, the HEADs of each one's attachment tags

    image = seeded_source.corpus.image("docker.io/rancher/klipper-helm:v0.7.3-build20220613")
    pulled = containerd.ctr("images", "pull", "--plain-http", "--all-platforms",
                            f"{registry.host}/{repository_of(image.source)}:{image.tag}")
    assert pulled.returncode == 0, pulled.stderr


@pytest.fixture
def upstream(seeded_source, start_registry, state_home):
    """A source registry the test may change: two images synced into it from the seeded corpus.

    It holds them as ``rancher/fleet:v0.3.10`` etc., so ``--source-mirror docker.io=http://HOST`` reads it.
    """
    registry = start_registry()
    sources = ["docker.io/rancher/fleet:v0.3.10", "docker.io/rancher/mirrored-pause:3.6"]
    result, _ = sync(*sources, "--to", registry.host, "--to-plain-http", *seeded_source.mirror_args)
    assert result.returncode == 0, result.stderr
    return registry


def retag(registry, repository: str, tag: str, mark: str = "1") -> str:
    """Point ``tag`` at a new manifest (same blobs, one annotation more); returns its digest."""
    response = httpx.get(f"{registry.url}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
    document = response.json()
    document.setdefault("annotations", {})["org.example.rebuilt"] = mark
    put = httpx.put(f"{registry.url}/v2/{repository}/manifests/{tag}", content=json.dumps(document).encode(),
                    headers={"Content-Type": response.headers["content-type"]})
    assert put.status_code == 201, put.text
    return put.headers["docker-content-digest"]


@pytest.mark.parametrize("policy", ["update", "backup", "fail"])
def test_a_tag_moved_upstream_is_updated_backed_up_or_refused(upstream, registry, policy):
    source = "docker.io/rancher/fleet:v0.3.10"
    args = [source, "docker.io/rancher/mirrored-pause:3.6", "--to", registry.host, "--to-plain-http",
            "--source-mirror", f"docker.io=http://{upstream.host}", "--on-retag", policy]
    first, _ = sync(*args)
    assert first.returncode == 0, first.stderr
    old = digest_at(registry.url, "rancher/fleet", "v0.3.10")
    new = retag(upstream, "rancher/fleet", "v0.3.10")

    result, report = sync(*args)
    entry = next(i for i in report["images"] if i["source"] == source)
    assert actions(report)["docker.io/rancher/mirrored-pause:3.6"] == "unchanged"
    assert entry["old_digest"] == old
    backup = f"v0.3.10-prev-{old.split(':')[1][:12]}"
    if policy == "fail":
        assert result.returncode == 1 and entry["action"] == "failed" and "on_retag: fail" in entry["error"]
        assert digest_at(registry.url, "rancher/fleet", "v0.3.10") == old
    else:
        assert result.returncode == 0, result.stderr
        assert entry["action"] == "updated" and entry["new_digest"] == new
        assert digest_at(registry.url, "rancher/fleet", "v0.3.10") == new
        assert digest_at(registry.url, "rancher/fleet", backup) == (old if policy == "backup" else None)
        assert entry["backup_tag"] == (backup if policy == "backup" else None)

        newer = retag(upstream, "rancher/fleet", "v0.3.10", mark="2")  # said in the text too, with both digests
        said = run_mirror("sync", "run", *args)
        assert said.returncode == 0, said.stderr
        kept = f", the old kept as v0.3.10-prev-{new.split(':')[1][:12]}" if policy == "backup" else ""
        assert f"  updated: {source} -> {registry.host}/rancher/fleet:v0.3.10 ({new} -> {newer}{kept})\n" \
               in said.stdout, said.stdout
        quiet = run_mirror("sync", "run", *args, "-q")
        assert quiet.returncode == 0 and quiet.stdout.count("\n") == 1, quiet.stdout  # cron's one line


def test_dry_run_says_what_would_change_and_writes_nothing(seeded_source, registry, state_home):
    source = "docker.io/rancher/fleet:v0.3.10"
    result, report = sync(source, "--to", registry.host, "--to-plain-http", "--dry-run",
                          *seeded_source.mirror_args)
    assert result.returncode == 0, result.stderr
    assert report["dry_run"] and actions(report) == {source: "copied"}
    assert report["images"][0]["new_digest"] == seeded_source.corpus.image(source).digest
    assert httpx.get(f"{registry.url}/v2/_catalog").json()["repositories"] == []


def test_a_missing_image_fails_alone_with_keep_going_and_stops_the_run_without(seeded_source, registry, state_home):
    args = ["docker.io/rancher/fleet:v0.3.10", "docker.io/rancher/no-such-image:1", "--to", registry.host,
            "--to-plain-http", *seeded_source.mirror_args]
    stopped, report = sync(*args)
    assert stopped.returncode == 1
    assert report["result"] == "failed" and set(actions(report).values()) == {"failed"}
    assert "no-such-image" in stopped.stderr
    assert httpx.get(f"{registry.url}/v2/_catalog").json()["repositories"] == []

    kept, report = sync(*args, "--keep-going")
    assert kept.returncode == 1 and report["result"] == "partial" and report["exit_code"] == 1
    assert actions(report) == {"docker.io/rancher/fleet:v0.3.10": "copied",
                               "docker.io/rancher/no-such-image:1": "failed"}


def test_exit_codes_bad_flags_2_refused_target_3(seeded_source, start_registry, state_home, tmp_path):
    bad, _ = sync("docker.io/rancher/fleet:v0.3.10", "--to", "Not A Host", *seeded_source.mirror_args)
    assert bad.returncode == 2 and "--to" in bad.stderr
    missing_dir, _ = sync("docker.io/rancher/fleet:v0.3.10", "--to", "127.0.0.1:1", "--report",
                          tmp_path / "no" / "r.json")
    assert missing_dir.returncode == 2 and "--report" in missing_dir.stderr

    from support import testbed

    guarded = start_registry(htpasswd=testbed.make_htpasswd(tmp_path / "htpasswd", "alice", "s3cret"))
    refused, _ = sync("docker.io/rancher/fleet:v0.3.10", "--to", guarded.host, "--to-plain-http",
                      "-u", "alice", "--password-stdin", *seeded_source.mirror_args, input="wrong\n")
    assert refused.returncode == 3, refused.stderr


def test_report_file_is_written_with_the_run(seeded_source, registry, state_home, tmp_path):
    path = tmp_path / "report.json"
    result, printed = sync("docker.io/rancher/mirrored-pause:3.6", "--to", registry.host, "--to-plain-http",
                           "--report", path, *seeded_source.mirror_args)
    assert result.returncode == 0, result.stderr
    written = json.loads(path.read_text())
    assert written == printed
    assert written["run_id"] and written["started"] <= written["ended"]


def test_a_second_run_while_one_holds_the_lock_exits_7_naming_its_pid(seeded_source, registry, state_home):
    path = lock_path(f"sync -> {registry.host}")
    path.parent.mkdir(parents=True)
    with open(path, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        result, _ = sync("docker.io/rancher/mirrored-pause:3.6", "--to", registry.host, "--to-plain-http",
                         *seeded_source.mirror_args)
    assert result.returncode == 7
    assert f"PID {os.getpid()}" in result.stderr
    assert httpx.get(f"{registry.url}/v2/_catalog").json()["repositories"] == []


def test_a_lock_left_by_a_dead_process_is_taken_over(seeded_source, registry, state_home):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = lock_path(f"sync -> {registry.host}")
    path.parent.mkdir(parents=True)
    path.write_text(dead.stdout)
    result, report = sync("docker.io/rancher/mirrored-pause:3.6", "--to", registry.host, "--to-plain-http",
                          *seeded_source.mirror_args)
    assert result.returncode == 0, result.stderr
    assert actions(report) == {"docker.io/rancher/mirrored-pause:3.6": "copied"}


def write_config(path, text: str):
    path.write_text(text)
    return path


def sync_config(config, *extra):
    result = run_mirror("sync", "run", "-c", config, "--json", "-q", *extra)
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


def test_config_selects_exactly_the_tags_its_rules_allow(upstream, registry, tmp_path):
    tag_as(upstream, "rancher/fleet", "v0.3.10", "v0.3.8", "v0.3.9", "v0.4.0", "v0.4.1-rc1", "latest", "v0.5.0")
    config = write_config(tmp_path / "sync.yaml", f"""
target:
  registry: {registry.host}/mirrored
  plain_http: true
sources:
  - registry: docker.io
    mirror: http://{upstream.host}
images:
  - repository: docker.io/rancher/fleet
    semver: ">=0.3.0 <0.4.0"
    keep_latest: 2
  - repository: docker.io/rancher/fleet
    allow: ['^v0\\.4\\.']
    deny: ['-rc']
  - image: docker.io/rancher/mirrored-pause:3.6
""")
    result, report = sync_config(config)
    assert result.returncode == 0, result.stderr
    assert tags_at(registry, "mirrored/rancher/fleet") == {"v0.3.10", "v0.3.9", "v0.4.0"}
    assert tags_at(registry, "mirrored/rancher/mirrored-pause") == {"3.6"}
    assert report["config_sha256"] and len(report["images"]) == 4


def test_an_immutable_tag_at_the_target_is_never_replaced_and_a_move_upstream_is_reported(upstream, registry,
                                                                                            tmp_path):
    """Upstream rebuilt v0.3.10: a free HEAD says so (`moved`, old and new digest); nothing is fetched or copied."""
    config = write_config(tmp_path / "sync.yaml", f"""
target: {{registry: {registry.host}, plain_http: true}}
images:
  - image: docker.io/rancher/fleet:v0.3.10
    immutable: ['^v\\d+\\.\\d+\\.\\d+$']
""")
    with FaultProxy(upstream.host) as proxy:
        text = config.read_text() + f"sources:\n  - {{registry: docker.io, mirror: 'http://{proxy.host}'}}\n"
        config.write_text(text)
        first, _ = sync_config(config)
        assert first.returncode == 0, first.stderr
        old = digest_at(registry.url, "rancher/fleet", "v0.3.10")
        moved = retag(upstream, "rancher/fleet", "v0.3.10")
        proxy.seen.clear()
        again, report = sync_config(config)
        assert again.returncode == 0, again.stderr
        assert actions(report) == {"docker.io/rancher/fleet:v0.3.10": "moved"}
        assert (report["images"][0]["old_digest"], report["images"][0]["new_digest"]) == (old, moved)
        assert {seen.method for seen in proxy.requests()} == {"HEAD"}
    assert digest_at(registry.url, "rancher/fleet", "v0.3.10") == old


@pytest.mark.parametrize("entry, line, key", [
    ("  - repository: docker.io/rancher/fleet\n    alow: ['x']\n", 6, "alow"),
    ("  - repository: docker.io/rancher/fleet\n    allow: ['v(']\n", 6, "allow"),
    ("  - repository: docker.io/rancher/fleet\n    semver: '>=banana'\n", 6, "semver"),
    ("  - repository: docker.io/rancher/fleet\n    keep_latest: 0\n", 6, "keep_latest"),
    ("  - image: docker.io/rancher/fleet:v1\n    on_retag: sometimes\n", 6, "on_retag"),
    ("  - image: docker.io/rancher/fleet:v1\n    prune: true\n", 6, "prune"),
    ("  - repository: docker.io/rancher/fleet\n    prune: yes please\n", 6, "prune"),
    ("  - image: docker.io/rancher/fleet:v1\nschedule: '15 2 * *'\n", 6, "schedule"),
    ("  - image: docker.io/rancher/fleet:v1\ninterval: 6h\nschedule: '15 2 * * *'\n", 7, "schedule"),
])
def test_a_bad_config_exits_2_naming_file_line_and_key(tmp_path, state_home, entry, line, key):
    config = write_config(tmp_path / "sync.yaml", "target:\n  registry: 127.0.0.1:1\n  plain_http: true\n"
                                                  "images:\n" + entry)
    result, _ = sync_config(config)
    assert result.returncode == 2
    assert f"{config}:{line}: {key}:" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_a_password_written_inline_is_refused_one_by_reference_is_used(seeded_source, start_registry, tmp_path,
                                                                        state_home):
    from support import testbed

    guarded = start_registry(htpasswd=testbed.make_htpasswd(tmp_path / "htpasswd", "alice", "s3cret"))
    inline = write_config(tmp_path / "inline.yaml", f"""
target:
  registry: {guarded.host}
  plain_http: true
  username: alice
  password: s3cret
images:
  - image: docker.io/rancher/mirrored-pause:3.6
""")
    refused, _ = sync_config(inline)
    assert refused.returncode == 2 and f"{inline}:6: password:" in refused.stderr
    assert "s3cret" not in refused.stderr

    mirror = seeded_source.mirror_args[1].split("=", 1)[1]
    by_env = write_config(tmp_path / "env.yaml", inline.read_text().replace(
        "password: s3cret", "password: {env: SYNC_TEST_PASSWORD}")
        + f"sources:\n  - {{registry: docker.io, mirror: '{mirror}'}}\n")
    result = run_mirror("sync", "run", "-c", by_env, "--json", "-q", env={"SYNC_TEST_PASSWORD": "s3cret"})
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_a_spent_rate_limit_defers_what_does_not_fit_and_exits_6(seeded_source, registry, state_home):
    images = [i.source for i in seeded_source.corpus.images if i.source.startswith("docker.io/")]
    # A pull per manifest GET, in the job's order: klipper-helm's index and its 3 platforms (4), then
    # mirrored-pause's index and 2 platforms (3) use the 7 left; busybox (3), fleet and rancher-agent wait.
    assert [len(seeded_source.corpus.image(s).platforms) for s in images[:2]] == [3, 2]
    with FaultProxy(seeded_source.registry.host) as proxy:
        limited = proxy.add_headers(r"/manifests/", {"RateLimit-Limit": "100;w=21600",
                                                     "RateLimit-Remaining": "7;w=21600"}, method="HEAD")
        args = [*images, "--to", registry.host, "--to-plain-http", *corpus.source_mirror_args(proxy.host)]
        result, report = sync(*args)
        assert result.returncode == 6, result.stderr
        assert report["result"] == "deferred"
        assert actions(report) == {**{s: "copied" for s in images[:2]}, **{s: "deferred" for s in images[2:]}}
        assert report["ratelimits"] == {proxy.host: {"remaining": 7, "limit": 100, "window": 21600}}
        assert "rate limit" in result.stderr
        assert len(proxy.requests("GET", "/manifests/")) == 7  # what was left, and no more
        tops = {f"/manifests/{seeded_source.corpus.image(s).tag}" for s in images[2:]}
        assert not [r for r in proxy.requests("GET", "/manifests/") if any(r.path.endswith(t) for t in tops)]

        limited.times = 0  # the window has passed
        rest, report = sync(*args)
        assert rest.returncode == 0, rest.stderr
        assert actions(report) == {**{s: "unchanged" for s in images[:2]}, **{s: "copied" for s in images[2:]}}


def test_wait_for_limit_waits_for_the_window_and_copies_everything_in_one_run(seeded_source, registry, state_home):
    images = [i.source for i in seeded_source.corpus.images if i.source.startswith("docker.io/")]
    costs = [1 + len(image.platforms) if image.media_type in (corpus.DOCKER_LIST, corpus.OCI_INDEX) else 1
             for image in map(seeded_source.corpus.image, images)]  # a pull per manifest GET
    cost, limit = sum(costs), max(costs)  # one window holds the dearest image, not all of them
    with FaultProxy(seeded_source.registry.host) as proxy:
        proxy.limit_pulls(limit, window=2)
        result, report = sync(*images, "--to", registry.host, "--to-plain-http",
                              *corpus.source_mirror_args(proxy.host), "--wait-for-limit")
        assert result.returncode == 0, result.stderr
        assert not [r for r in proxy.requests() if r.status == 429]
        assert len(proxy.requests("GET", "/manifests/")) == cost  # each once
    assert actions(report) == {s: "copied" for s in images}
    waits = [line for line in result.stderr.splitlines() if "waiting until" in line]
    assert waits and all(proxy.host in line for line in waits), result.stderr


def test_a_blob_corrupted_on_the_way_is_never_committed_and_exits_4(seeded_source, registry, state_home):
    source = "docker.io/rancher/fleet:v0.3.10"
    image = seeded_source.corpus.image(source)
    with FaultProxy(seeded_source.registry.host) as proxy:
        proxy.corrupt(r"/blobs/sha256:", times=None)
        result, report = sync(source, "--to", registry.host, "--to-plain-http",
                              *corpus.source_mirror_args(proxy.host))
    assert result.returncode == 4, result.stderr
    assert actions(report) == {source: "failed"} and "hash" in report["images"][0]["error"]
    assert digest_at(registry.url, "rancher/fleet", "v0.3.10") is None
    for blob in image.blob_digests:
        assert httpx.head(f"{registry.url}/v2/rancher/fleet/blobs/{blob}").status_code == 404


def pause_job(path, seeded_source, registry, timing: str):
    """A config syncing one small image from the seeded source, run on ``timing`` (interval/schedule line)."""
    mirror = seeded_source.mirror_args[1].split("=", 1)[1]
    return write_config(path, f"""
target: {{registry: {registry.host}, plain_http: true}}
sources:
  - {{registry: docker.io, mirror: '{mirror}'}}
{timing}
images:
  - image: docker.io/rancher/mirrored-pause:3.6
""")


def serve_until(command: list[str], reports, count: int, timeout: float = 120) -> tuple[int, str]:
    """Run ``mirror sync serve`` until ``count`` reports are kept, then SIGTERM it: (exit code, its log)."""
    import signal
    import time

    server = subprocess.Popen([sys.executable, "-m", "mirror", *command], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout  # a bound on a hang, not a timing assertion
        while (len(list(reports.glob("sync-*.json"))) < count and time.monotonic() < deadline
               and server.poll() is None):  # a serve that ended will keep no more
            time.sleep(0.2)
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=120)
    finally:
        server.kill()
    return server.returncode, log


def test_serve_runs_on_its_interval_keeps_each_report_and_stops_cleanly_on_sigterm(
        seeded_source, registry, state_home, tmp_path):
    config = pause_job(tmp_path / "sync.yaml", seeded_source, registry, "interval: 1s")
    reports = tmp_path / "reports"
    code, log = serve_until(["sync", "serve", "-c", str(config), "--report-dir", str(reports),
                             "--keep-reports", "50"], reports, 2)
    assert code == 0, log
    kept = [json.loads(p.read_text()) for p in sorted(reports.glob("sync-*.json"))]
    assert len(kept) >= 2
    assert actions(kept[0]) == {"docker.io/rancher/mirrored-pause:3.6": "copied"}
    assert all(actions(r) == {"docker.io/rancher/mirrored-pause:3.6": "unchanged"} for r in kept[1:])
    assert log.count(": ok (exit 0)") == len(kept) and log.rstrip().endswith("stopped")


@pytest.fixture
def serve_here(tmp_path, state_home, monkeypatch):
    """``serve_here(*errors)``: ``mirror sync serve`` in this process, its runs raising ``errors`` in turn.

    The last run also stops serve, as SIGTERM does. Returns how many runs serve
    started (``calls``, kept as serve ends either way); the signal handlers serve
    installs are put back afterwards.
    """
    import signal

    from mirror.cli import sync_serve_cmd
    from mirror.transfer import serve as serving

    config = write_config(tmp_path / "sync.yaml", "target: {registry: 127.0.0.1:1}\ninterval: 1s\n"
                                                  "images:\n  - image: docker.io/rancher/fleet:v1\n")
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    calls: list[object] = []

    def serve(*errors: BaseException) -> None:
        def run_sync(request, progress, bundle=None, topology=None):
            calls.append(request)
            if len(calls) == len(errors):
                signal.raise_signal(signal.SIGTERM)  # serve ends after this run
            raise errors[len(calls) - 1]

        monkeypatch.setattr(serving, "run_sync", run_sync)
        sync_serve_cmd.serve_command(config=config, interval=None, schedule=None, report_dir=tmp_path / "reports",
                               keep_reports=30, jobs=1)

    serve.calls = calls  # type: ignore[attr-defined]
    yield serve
    for number, handler in saved.items():
        signal.signal(number, handler)


def test_serve_logs_a_run_whose_task_group_failed_with_mirror_errors_and_runs_again(serve_here, capsys, tmp_path):
    from mirror.errors import AuthError, MirrorError

    group = ExceptionGroup("unhandled errors in a TaskGroup", [
        MirrorError("docker.io/rancher/fleet:v1: 500 from the source"),
        ExceptionGroup("unhandled errors in a TaskGroup", [AuthError("127.0.0.1:1: 401 Unauthorized")])])
    serve_here(group, MirrorError("127.0.0.1:1: connection refused"))
    assert len(serve_here.calls) == 2
    log = [line.split(" mirror sync serve: ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert log[1:] == ["run failed (exit 3): 127.0.0.1:1: 401 Unauthorized (and 1 more)",  # the worst, as exit codes
                       "run failed (exit 1): 127.0.0.1:1: connection refused", "stopped"]
    kept = [json.loads(p.read_text()) for p in sorted((tmp_path / "reports").glob("sync-*.json"))]
    assert [(r["result"], r["exit_code"], r["error"]) for r in kept] == [
        ("failed", 3, "127.0.0.1:1: 401 Unauthorized"), ("failed", 1, "127.0.0.1:1: connection refused")]


def test_serve_ends_on_a_task_group_failure_that_is_a_bug(serve_here):
    from mirror.errors import MirrorError

    bug = ExceptionGroup("unhandled errors in a TaskGroup", [MirrorError("fine"), KeyError("not fine")])
    with pytest.raises(ExceptionGroup) as raised:
        serve_here(bug, MirrorError("never run"))
    assert raised.value is bug and len(serve_here.calls) == 1


def test_print_systemd_and_cronjob_schedule_the_config_checked_without_its_secrets(tmp_path):
    import yaml

    config = write_config(tmp_path / "nightly.yaml", """
target:
  registry: reg.dmz.corp:5000
  username: robot
  password: {env: ROBOT_PASSWORD}
images:
  - repository: docker.io/rancher/rancher
    semver: '>=2.7.0 <2.8.0'
""")
    units = run_mirror("sync", "print-systemd", "-c", config, "--on-calendar", "*-*-* 02:15")
    assert units.returncode == 0, units.stderr
    assert f"sync run -c {config}" in units.stdout
    for line in ("OnCalendar=*-*-* 02:15", "Persistent=true", "RandomizedDelaySec=15min", "SuccessExitStatus=6 7"):
        assert line in units.stdout

    cron = run_mirror("sync", "print-cronjob", "-c", config, "--image", "reg.corp/tools/mirror:1",
                      "--schedule", "15 2 * * *")
    assert cron.returncode == 0, cron.stderr
    document = yaml.safe_load(cron.stdout)
    assert document["kind"] == "CronJob" and document["spec"]["concurrencyPolicy"] == "Forbid"
    pod = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "reg.corp/tools/mirror:1"
    assert pod["volumes"][0]["secret"]["secretName"] == "mirror-sync-nightly"
    assert "--from-literal=ROBOT_PASSWORD=" in cron.stdout

    config.write_text(config.read_text().replace("semver", "semvr"))
    bad = run_mirror("sync", "print-systemd", "-c", config)
    assert bad.returncode == 2 and f"{config}:8: semvr:" in bad.stderr


def test_a_429_from_the_source_is_waited_out_once_not_stormed(seeded_source, registry, state_home):
    source = "docker.io/rancher/fleet:v0.3.10"
    with FaultProxy(seeded_source.registry.host) as proxy:
        proxy.fail(r"/manifests/", 429, method="GET", headers={"Retry-After": "1"})
        result, report = sync(source, "--to", registry.host, "--to-plain-http",
                              *corpus.source_mirror_args(proxy.host))
        gets = proxy.requests("GET", "/manifests/")
    assert result.returncode == 0, result.stderr
    assert actions(report) == {source: "copied"}
    assert [r.status for r in gets] == [429, 200]


def test_flags_that_the_config_already_says_are_refused_beside_it(tmp_path, state_home):
    config = write_config(tmp_path / "sync.yaml", "target: {registry: 127.0.0.1:1}\n"
                                                  "images:\n  - image: docker.io/rancher/fleet:v1\n")
    result, _ = sync_config(config, "--to", "127.0.0.1:2", "--platform", "linux/amd64")
    assert result.returncode == 2
    assert "drop --platform, --to" in result.stderr


def test_to_bundle_writes_a_delta_the_bastion_can_push_and_nothing_when_nothing_changed(
        seeded_source, registry, state_home, tmp_path):
    """The air-gap shape: the connected side never sees the bastion, only its inventory."""
    first, later = [i.source for i in seeded_source.corpus.images[:2]], seeded_source.corpus.images[2].source
    out = tmp_path / "outbox"
    out.mkdir()
    full = tmp_path / "full.tar.zst"
    assert run_mirror("pull", *first, "-o", full, *seeded_source.mirror_args, "-q").returncode == 0
    assert run_mirror("push", full, "--registry", registry.host, "--plain-http", "-q").returncode == 0
    have = tmp_path / "have.json"
    assert run_mirror("inventory", "--registry", registry.host, "--plain-http", "-o", have).returncode == 0

    same = run_mirror("sync", "run", *first, "--to-bundle", out, "--base", have, *seeded_source.mirror_args)
    assert same.returncode == 0, same.stderr
    assert "nothing changed" in same.stdout and not list(out.iterdir())  # no bundle, no work dir left

    grown = run_mirror("sync", "run", *first, later, "--to-bundle", out, "--base", have, *seeded_source.mirror_args)
    assert grown.returncode == 0, grown.stderr
    (bundle,) = out.glob("mirror-*.tar.zst")
    summary = json.loads(run_mirror("inspect", bundle, "--json").stdout)
    assert summary["kind"] == "delta"
    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http")
    assert pushed.returncode == 0, pushed.stderr
    image = seeded_source.corpus.image(later)
    assert digest_at(f"http://{registry.host}", repository_of(later), image.tag) == image.digest


def test_to_bundle_needs_a_base_and_no_registry_target(tmp_path, state_home):
    result = run_mirror("sync", "run", "docker.io/library/busybox:1", "--to-bundle", tmp_path)
    assert result.returncode == 2 and "--to-bundle goes with --base" in result.stderr


def test_to_bundle_name_that_would_leave_the_directory_exits_2(tmp_path, state_home):
    (tmp_path / "out").mkdir()
    (tmp_path / "have.json").write_text("{}")
    result = run_mirror("sync", "run", "docker.io/library/busybox:1", "--to-bundle", tmp_path / "out",
                        "--base", tmp_path / "have.json", "--name", "../x")
    assert result.returncode == 2 and "--name '../x'" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["have.json", "out"] and not list((tmp_path / "out").iterdir())


class KillsTheRun(FaultProxy):
    """SIGKILLs the sync process as the third blob commit reaches the target, as a crash would."""

    victim: subprocess.Popen | None = None
    commits = 0

    def _record(self, seen):
        super()._record(seen)
        if seen.method == "PUT" and "digest=" in seen.path:
            self.commits += 1
            if self.commits == 3 and self.victim is not None:
                self.victim.kill()


def test_kill_9_mid_run_leaves_no_tag_on_an_incomplete_image_and_a_rerun_finishes(
        seeded_source, registry, state_home):
    images = [i.source for i in seeded_source.corpus.images]
    command = [sys.executable, "-m", "mirror", "sync", "run", *images, *seeded_source.mirror_args, "-q"]

    with KillsTheRun(registry.host) as proxy:
        proxy.victim = subprocess.Popen([*command, "--to", proxy.host, "--to-plain-http"], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proxy.victim.wait(timeout=300)
        assert proxy.victim.returncode == -9  # killed mid-run, not finished
    assert tags_pointing_at_incomplete_images(registry) == []
    again, report = sync(*images, *seeded_source.mirror_args, "--to", registry.host, "--to-plain-http")
    assert again.returncode == 0, again.stderr
    # the blobs committed before the kill, in repositories that got no tag yet, are found, not sent again
    assert report["blobs"]["skipped"] >= 2
    assert tags_pointing_at_incomplete_images(registry) == []
    assert all(digest_at(registry.url, repository_of(i.source), i.tag) == i.digest for i in seeded_source.corpus.images)


def test_a_config_to_bundle_selects_by_its_rules_and_carries_only_what_the_bastion_lacks(
        seeded_source, upstream, registry, tmp_path):
    """The air-gap shape from a config: entries' tag rules choose, the bastion's inventory subtracts."""
    from mirror.bundle.reader import BundleReader

    tag_as(upstream, "rancher/fleet", "v0.3.10", "v0.3.8", "v0.3.9", "v0.4.0", "latest")
    tag_as(upstream, "rancher/mirrored-pause", "3.6", "3.5", "3.6-rc1", "latest")
    mirror_args = ["--source-mirror", f"docker.io=http://{upstream.host}"]
    bastion, _ = sync("docker.io/rancher/fleet:v0.3.9", "docker.io/rancher/fleet:v0.3.10", "--to", registry.host,
                      "--to-plain-http", *mirror_args)
    assert bastion.returncode == 0, bastion.stderr
    old = digest_at(registry.url, "rancher/fleet", "v0.3.10")
    have = tmp_path / "have.json"
    assert run_mirror("inventory", "--registry", registry.host, "--plain-http", "-o", have).returncode == 0
    new = retag(upstream, "rancher/fleet", "v0.3.10")
    config = write_config(tmp_path / "sync.yaml", f"""
sources:
  - registry: docker.io
    mirror: http://{upstream.host}
images:
  - repository: docker.io/rancher/fleet
    semver: ">=0.3.0 <0.4.0"
    keep_latest: 2
  - repository: docker.io/rancher/mirrored-pause
    allow: ['^3\\.']
    deny: ['-rc']
""")
    out = tmp_path / "outbox"
    out.mkdir()
    dry, planned = sync_config(config, "--to-bundle", out, "--base", have, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not list(out.iterdir())
    result, report = sync_config(config, "--to-bundle", out, "--base", have)
    assert result.returncode == 0, result.stderr
    assert actions(planned) == actions(report) == {"docker.io/rancher/fleet:v0.3.9": "unchanged",
                               "docker.io/rancher/fleet:v0.3.10": "updated",
                               "docker.io/rancher/mirrored-pause:3.5": "copied",
                               "docker.io/rancher/mirrored-pause:3.6": "copied"}
    fleet = next(i for i in report["images"] if i["source"] == "docker.io/rancher/fleet:v0.3.10")
    assert (fleet["old_digest"], fleet["new_digest"]) == (old, new)
    assert fleet["target"] == f"{registry.host}/rancher/fleet:v0.3.10"  # where the bastion's push puts it
    (bundle,) = out.glob("mirror-*.tar.zst")
    assert report["bundle"]["path"] == str(bundle) and report["bundle"]["base"] == [json.loads(have.read_text())["id"]]
    with BundleReader(bundle) as reader:
        manifest = reader.manifest
    assert manifest.kind == "delta"
    assert {i.source for i in manifest.images} == set(actions(report))  # exactly the selected tags
    pause = seeded_source.corpus.image("docker.io/rancher/mirrored-pause:3.6")
    assert set(manifest.stored_blobs) == {new, pause.digest, *pause.manifest_digests.values(), *pause.blob_digests}
    assert not set(manifest.stored_blobs) & set(json.loads(have.read_text())["digests"])
    assert run_mirror("verify", bundle).returncode == 0

    pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "-q")
    assert pushed.returncode == 0, pushed.stderr
    assert digest_at(registry.url, "rancher/fleet", "v0.3.10") == new
    assert digest_at(registry.url, "rancher/mirrored-pause", "3.5") == pause.digest

    # the next night, from the config's own bundle target, against the inventory taken after the push
    after = tmp_path / "after.json"
    assert run_mirror("inventory", "--registry", registry.host, "--plain-http", "-o", after).returncode == 0
    config.write_text(config.read_text() + "target:\n  bundle: outbox\n  base: [have.json, after.json]\n")
    written = sorted(out.iterdir())  # the bundle and its .sha256
    again, report = sync_config(config)
    assert again.returncode == 0, again.stderr
    assert set(actions(report).values()) == {"unchanged"} and report["bundle"]["path"] is None
    assert sorted(out.iterdir()) == written  # nothing written, no work dir left


@pytest.mark.parametrize("target, line, key", [
    ("  bundle: nowhere\n  base: [have.json]\n", 2, "bundle"),
    ("  bundle: .\n  base: [missing.json]\n", 3, "base"),
    ("  bundle: .\n", 2, "bundle"),
    ("  bundle: .\n  base: [have.json]\n  plain_http: true\n", 4, "plain_http"),
    ("  registry: 127.0.0.1:1\n  base: [have.json]\n", 3, "base"),
    ("  bundle: .\n  base: [have.json]\n  name: ../x\n", 4, "name"),
    ("  bundle: .\n  base: [have.json]\nimages:\n  - image: docker.io/rancher/fleet:v1\n    on_retag: backup\n",
     6, "on_retag"),
    ("  bundle: .\n  base: [have.json]\nimages:\n  - repository: docker.io/rancher/fleet\n    prune: true\n",
     6, "prune"),
])
def test_a_bad_bundle_target_exits_2_naming_file_line_and_key(tmp_path, state_home, target, line, key):
    (tmp_path / "have.json").write_text("{}")
    text = "target:\n" + target
    if "images:" not in text:
        text += "images:\n  - image: docker.io/rancher/fleet:v1\n"
    config = write_config(tmp_path / "sync.yaml", text)
    result, _ = sync_config(config)
    assert result.returncode == 2
    assert f"{config}:{line}: {key}:" in result.stderr, result.stderr


def next_times_systemd(expressions: list[str], base: str, count: int) -> list[str]:
    """The first ``count`` times after ``base`` at which a timer with these OnCalendar= lines fires."""
    import re
    import shutil

    assert shutil.which("systemd-analyze"), "systemd-analyze is part of the test bed (systemd)"
    times: set[str] = set()
    for expression in expressions:
        shown = subprocess.run(["systemd-analyze", "calendar", f"--iterations={count}", f"--base-time={base}",
                                expression], capture_output=True, text=True, env={**os.environ, "TZ": "UTC"})
        assert shown.returncode == 0, shown.stderr  # systemd accepts the expression
        times |= set(re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", shown.stdout))
    return sorted(times)[:count]


def next_times_cron(schedule: str, base: str, count: int) -> list[str]:
    from datetime import datetime

    from mirror.model.cron import CronSchedule

    cron, moment, times = CronSchedule.parse(schedule), datetime.fromisoformat(base), []
    for _ in range(count):
        moment = cron.next_after(moment)
        times.append(moment.strftime("%Y-%m-%d %H:%M:%S"))
    return times


def timer_of(config) -> tuple[list[str], str]:
    units = run_mirror("sync", "print-systemd", "-c", config)
    assert units.returncode == 0, units.stderr
    timer = units.stdout.split("[Timer]")[1].split("[Install]")[0]
    assert "Persistent=true" in timer and "RandomizedDelaySec=15min" in timer
    return [line.split("=", 1)[1] for line in timer.splitlines() if line.startswith("OnCalendar=")], timer


@pytest.mark.parametrize("key, value, cron, expected", [
    ("schedule", "*/15 2-4 * * 1-5", "*/15 2-4 * * 1-5", ["Mon..Fri *-*-* 02..04:00/15:00"]),
    ("schedule", "0 0 1,15 * 0", "0 0 1,15 * 0", ["*-*-01,15 00:00:00", "Sun *-*-* 00:00:00"]),  # cron: either day
    ("schedule", "5 */3 1-10 2,4,6 *", "5 */3 1-10 2,4,6 *", None),
    ("schedule", "0,1,2,10,20,30 23 * * 6,0", "0,1,2,10,20,30 23 * * 6,0", None),
    # Kubernetes takes weekdays 0-6 (a 7 is refused, N/S stops at 6): the CronJob gets the days listed
    ("schedule", "30 1 * * 1/2", "30 1 * * 0,1,3,5", ["Mon,Wed,Fri,Sun *-*-* 01:30:00"]),
    ("interval", "6h", "0 */6 * * *", ["*-*-* 00/6:00:00"]),
    ("interval", "15m", "*/15 * * * *", None),
])
def test_print_systemd_and_cronjob_run_on_the_config_schedule(tmp_path, key, value, cron, expected):
    """The timer's OnCalendar= fires at exactly the cron schedule's times (as systemd itself computes them)."""
    import yaml

    config = write_config(tmp_path / "sync.yaml", f"target: {{registry: reg.dmz.corp:5000}}\n{key}: '{value}'\n"
                                                  "images:\n  - image: docker.io/rancher/fleet:v1\n")
    expressions, _ = timer_of(config)
    if expected is not None:
        assert expressions == expected
    for base in ("2026-02-27 22:50:00", "2028-02-28 23:59:00", "2026-12-31 01:00:00"):
        assert next_times_systemd(expressions, base, 40) == next_times_cron(cron, base, 40)

    job = run_mirror("sync", "print-cronjob", "-c", config, "--image", "reg.corp/tools/mirror:1")
    assert job.returncode == 0, job.stderr
    assert yaml.safe_load(job.stdout)["spec"]["schedule"] == cron


def test_an_interval_no_calendar_can_hold_is_counted_by_systemd_and_refused_for_a_cronjob(tmp_path):
    config = write_config(tmp_path / "sync.yaml", "target: {registry: reg.dmz.corp:5000}\ninterval: 90m\n"
                                                  "images:\n  - image: docker.io/rancher/fleet:v1\n")
    expressions, timer = timer_of(config)
    assert expressions == [] and "OnUnitActiveSec=5400s" in timer and "OnBootSec=" in timer
    job = run_mirror("sync", "print-cronjob", "-c", config, "--image", "reg.corp/tools/mirror:1")
    assert job.returncode == 2 and f"{config}:2: interval:" in job.stderr
    given = run_mirror("sync", "print-cronjob", "-c", config, "--image", "reg.corp/tools/mirror:1",
                       "--schedule", "0 3 * * *")
    assert given.returncode == 0 and '"0 3 * * *"' in given.stdout

    config.write_text(config.read_text().replace("interval: 90m\n", ""))
    unscheduled = run_mirror("sync", "print-systemd", "-c", config)
    assert unscheduled.returncode == 2 and "no schedule" in unscheduled.stderr


def test_serve_killed_mid_run_restarts_takes_its_lock_over_and_its_first_run_finishes_the_job(
        seeded_source, registry, state_home, tmp_path):
    """Serve keeps only its reports between runs; the kernel drops a dead serve's lock."""
    images = seeded_source.corpus.images
    sources = "".join(f"  - {{registry: {pair.split('=')[0]}, mirror: '{pair.split('=')[1]}'}}\n"
                      for pair in seeded_source.mirror_args[1::2])
    reports = tmp_path / "reports"
    with KillsTheRun(registry.host) as proxy:
        config = write_config(tmp_path / "sync.yaml", f"target: {{registry: {proxy.host}, plain_http: true}}\n"
                                                      f"interval: 1h\nsources:\n{sources}images:\n"
                              + "".join(f"  - image: {image.source}\n" for image in images))
        command = [sys.executable, "-m", "mirror", "sync", "serve", "-c", str(config), "--report-dir", str(reports)]
        proxy.victim = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        proxy.victim.wait(timeout=300)
        assert proxy.victim.returncode == -9  # killed mid-run
        assert not list(reports.glob("sync-*.json"))
        proxy.victim = None
        code, log = serve_until(command[3:], reports, 1, timeout=300)
    assert code == 0, log
    (report,) = [json.loads(p.read_text()) for p in reports.glob("sync-*.json")]
    assert report["result"] == "ok" and set(actions(report).values()) <= {"copied", "unchanged"}
    assert tags_pointing_at_incomplete_images(registry) == []
    assert all(digest_at(registry.url, repository_of(i.source), i.tag) == i.digest for i in images)


def test_serve_on_a_schedule_runs_at_once_when_a_time_passed_while_it_was_down(
        seeded_source, registry, state_home, tmp_path):
    """As systemd's Persistent=true: the last kept report says when the job last ran."""
    config = pause_job(tmp_path / "sync.yaml", seeded_source, registry, "schedule: '0 0 1 1 *'")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "sync-2024-01-01T000000Z-0000aaaa.json").write_text('{"started": "2024-01-01T00:00:00Z"}')
    code, log = serve_until(["sync", "serve", "-c", str(config), "--report-dir", str(reports)], reports, 2)
    assert code == 0, log
    newest = json.loads(sorted(reports.glob("sync-*.json"))[-1].read_text())
    assert actions(newest) == {"docker.io/rancher/mirrored-pause:3.6": "copied"}


def test_a_tag_list_with_bad_tags_skips_and_reports_them_and_syncs_the_rest(upstream, registry, tmp_path):
    """A peer's tags are untrusted: one shaped like a path, or not a string at all, is skipped and named."""
    traversal = "../../library/nginx/manifests/latest"
    with FaultProxy(upstream.host) as proxy:
        proxy.serve(r"/v2/rancher/fleet/tags/list", json.dumps(
            {"name": "rancher/fleet", "tags": ["v0.3.10", traversal, -5, {"a": 1}, "v1/" + "x" * 500, "v2\n"]}
        ).encode(), headers={"Content-Type": "application/json"})
        config = write_config(tmp_path / "sync.yaml", f"""
target: {{registry: {registry.host}, plain_http: true}}
sources:
  - {{registry: docker.io, mirror: 'http://{proxy.host}'}}
images:
  - repository: docker.io/rancher/fleet
  - image: docker.io/rancher/mirrored-pause:3.6
""")
        result, report = sync_config(config)
        text = run_mirror("sync", "run", "-c", config, "-q")
    assert result.returncode == 0, result.stderr
    assert actions(report) == {"docker.io/rancher/fleet:v0.3.10": "copied",
                               "docker.io/rancher/mirrored-pause:3.6": "copied"}
    (skipped,) = report["skipped_tags"]
    assert skipped["repository"] == "docker.io/rancher/fleet" and skipped["count"] == 5
    assert skipped["tags"][0] == repr(traversal) and skipped["tags"][4] == repr("v2\n")
    assert "-5" in skipped["tags"][1] and "a" in skipped["tags"][2] and "v1/xxx" in skipped["tags"][3]
    assert all(len(shown) < 80 for shown in skipped["tags"])
    assert tags_at(registry, "rancher/fleet") == {"v0.3.10"}
    assert text.returncode == 0, text.stderr
    (line,) = [line for line in text.stderr.splitlines() if line.startswith("mirror: skipped: ")]
    assert line.startswith("mirror: skipped: docker.io/rancher/fleet: 5 listed tag(s)") and repr(traversal) in line


def test_serve_outlives_a_source_answering_bad_tags_numbers_and_garbage_keeping_a_report_per_run(
        upstream, registry, tmp_path):
    """Each run meets another bad answer to its tag listing; serve logs it, keeps its report and runs again."""
    answers = [
        {"tags": ["v0.3.10", "../../library/nginx/manifests/latest", "a" * 200]},  # tags shaped like paths
        {"tags": ["v0.3.10", -7, 1.5e300, -0.5, {"n": 1}, ["v0.3.10"]]},  # numbers and others where tags belong
        b'{"tags": ["v0.3.10", ',  # garbage: cut off
    ]
    reports = tmp_path / "reports"
    with FaultProxy(upstream.host) as proxy:
        for answer in answers:
            body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            proxy.serve(r"/v2/rancher/fleet/tags/list", body, times=1, headers={"Content-Type": "application/json"})
        config = write_config(tmp_path / "sync.yaml", f"""
target: {{registry: {registry.host}, plain_http: true}}
sources:
  - {{registry: docker.io, mirror: 'http://{proxy.host}'}}
interval: 1s
images:
  - repository: docker.io/rancher/fleet
""")
        code, log = serve_until(["sync", "serve", "-c", str(config), "--report-dir", str(reports)], reports, 4)
    assert code == 0, log
    kept = [json.loads(p.read_text()) for p in sorted(reports.glob("sync-*.json"))]
    assert [(r["result"], r["exit_code"]) for r in kept[:4]] == [("ok", 0), ("ok", 0), ("failed", 1), ("ok", 0)]
    assert [[s["count"] for s in r["skipped_tags"]] for r in kept[:4]] == [[2], [5], [], []]
    assert actions(kept[0]) == {"docker.io/rancher/fleet:v0.3.10": "copied"}
    assert actions(kept[1]) == actions(kept[3]) == {"docker.io/rancher/fleet:v0.3.10": "unchanged"}
    assert kept[2]["images"][0]["error"].startswith(f"tags of {proxy.host}/rancher/fleet: ")
    runs = [line for line in log.splitlines() if " mirror sync serve: run " in line]
    assert len(runs) == len(kept) and "2 listed tag(s) that are no tags skipped" in runs[0], log
    assert "Traceback" not in log and log.rstrip().endswith("stopped")


def test_a_schedule_that_never_fires_exits_2_naming_file_and_line_wherever_it_is_read(tmp_path, state_home):
    """February has no 30th: serve would wait forever, a timer made of it would never fire."""
    config = write_config(tmp_path / "sync.yaml", "target: {registry: 127.0.0.1:1}\nschedule: '0 0 30 2 *'\n"
                                                  "images:\n  - image: docker.io/rancher/fleet:v1\n")
    for command in (["sync", "serve", "-c", config, "--report-dir", tmp_path / "reports"],
                    ["sync", "print-systemd", "-c", config],
                    ["sync", "print-cronjob", "-c", config, "--image", "reg.corp/tools/mirror:1"],
                    ["sync", "run", "-c", config]):
        result = run_mirror(*command, timeout=120)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr == (f"mirror: error: {config}:2: schedule: schedule '0 0 30 2 *' never fires: no month "
                                 "it names (2) has a day it names (30)\n"), command
        assert result.stdout == ""
    config.write_text(config.read_text().replace("schedule: '0 0 30 2 *'", "interval: 1h"))
    flag = run_mirror("sync", "serve", "-c", config, "--schedule", "0 0 31 4 *", timeout=120)
    assert flag.returncode == 2 and flag.stderr.startswith("mirror: error: --schedule: schedule '0 0 31 4 *' never")


def test_a_pattern_that_backtracks_without_end_on_a_listed_tag_exits_2_naming_it(upstream, registry, tmp_path):
    """re would search '^(a|aa)+$' in 'aaa…ab' for longer than the universe has; the run ends as a bad config."""
    slow = "a" * 64 + "b"
    with FaultProxy(upstream.host) as proxy:
        proxy.serve(r"/v2/rancher/fleet/tags/list", json.dumps({"tags": ["v0.3.10", slow]}).encode(),
                    headers={"Content-Type": "application/json"})
        config = write_config(tmp_path / "sync.yaml", f"""
target: {{registry: {registry.host}, plain_http: true}}
sources:
  - {{registry: docker.io, mirror: 'http://{proxy.host}'}}
images:
  - image: docker.io/rancher/mirrored-pause:3.6
  - repository: docker.io/rancher/fleet
    deny: ['-rc', '^(a|aa)+$']
""")
        result = run_mirror("sync", "run", "-c", config, "-q", timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"mirror: error: {config}:8: deny: '^(a|aa)+$' took over 1 s on the tag {slow!r}")
    assert result.stderr.count("\n") == 1
    assert httpx.get(f"{registry.url}/v2/_catalog").json()["repositories"] == []
