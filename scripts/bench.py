"""Benchmark: `mirror pull` and `mirror push` against skopeo and against floors, on loopback and over a WAN.

One run measures every figure of the table it prints at the end. Registries
are the Debian docker-registry (tests/support/testbed.py) seeded with generated
corpora (tests/support/corpus.py); the WAN is scripts/wan.py's proxy (round-trip
time, a cap per connection and one for the whole site) with a token server
in front, so each repository costs a token round trip, as on Docker Hub.
Each command runs alone under /usr/bin/time (wall, CPU, peak RSS), after a
`sync`. Scenarios (`--only a,b`; default all):

  loopback-large  500 MB / 20 images: `mirror pull` vs `skopeo copy --all` image
                  by image + `tar | zstd -T0 -3`; mirror's CPU-s vs the CPU floor,
                  a bare httpx + sha256 download of the same blobs
  wan-large       the same corpus over the WAN: pull vs the bandwidth floor
                  (bytes / site cap) and vs skopeo
  wan-small       300 small images (a third with attestations) over the WAN:
                  pull vs the bandwidth floor and vs skopeo
                  (WAN scenarios also print, for mirror and skopeo, the requests per image by kind
                  as the link counted them and the share of time it sat idle: wan.py Traffic)
  loopback-small  the 300 small images: pull -j 8 vs skopeo, -j 32 vs -j 8
  push-small      push their bundle vs skopeo from the OCI layout; re-push of
                  the unchanged bundle vs the first push
  push-large      the same on a 2.1 GB corpus (peak RSS must stay flat past 2 GB)
  sync            registry to registry: `mirror sync run` vs skopeo copy docker:// -> docker:// image
                  by image and vs mirror pull + push; then a run with nothing to do vs the first
  push-fanout     the large corpus's bundle pushed to 1, 2 and 3 fresh registries in one run
                  (`--registry A --registry B ...`): the bundle is read once, so 2 and 3 targets
                  cost at most 1.3x and 1.6x one; and the push to 3 against the CPU floor of all it
                  runs (mirror's CPU and the registries', over the cores): on 2 cores that floor alone
                  comes to 1.5-1.7x a push to 1, so there the 1.6x goal is out of reach
  delta           resync: v1 pushed and inventoried, v2 adds ~10% new bytes; the delta bundle's
                  size against the new bytes' share, delta pull and push against full ones
  release         a Rancher release's shape over the WAN: the 696 images of manifests/rancher/v2.7.9.txt
                  (199 repositories), ~3 GB drawn from one seeded log-normal (a few images of 100+ MB,
                  most under 2 MB): pull vs the bandwidth floor, peak RSS, requests per image and the
                  link's idle share; skopeo on every 7th image (700 runs take too long), its time x7
  kit             the large corpus over the WAN with a Rancher kit beside it (a chart and a K3s-sized
                  binary from a release host behind the same link): the time the kit adds against
                  its bytes over the site's link (they download in parallel with the images); the
                  pulls with and without it alternate 3 times, the fastest of each compared
  attachments     the small images over the WAN, unsigned and with every image signed (cosign's .sig,
                  .att, .sbom and an OCI 1.1 referrer), and signed with --no-attachments, in turns 3
                  times: the time carrying them adds against their bytes over the site's link plus one
                  round trip per image, and against the request floor (a tag list per image and a GET
                  per attachment manifest, 8 small requests in flight)

Two floors besides skopeo: the CPU the registries themselves spend on a loopback run, spread
over this machine's cores (no client finishes sooner here), and for runs with nothing to do,
the interpreter starting and importing mirror's dependencies.

skopeo reaches the WAN registry over plain HTTP with the token flow
(`--src-tls-verify=false --src-no-creds`, an empty registries.conf). `--quick`
scales every corpus down to iterate in a few minutes. Generated corpora are
cached under WORK/corpus.

    .venv/bin/python scripts/bench.py [--only wan-small,loopback-small] [--quick] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' support package: their corpus and real registry

import wan  # noqa: E402  (beside this file)
from support import corpus, testbed  # noqa: E402

MIRROR = [sys.executable, "-m", "mirror"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
STEP_TIMEOUT = 3600  # seconds; a step that hangs fails the run instead


@dataclass(frozen=True)
class Sizes:
    large_mb: int = 500  # loopback-large and wan-large
    large_images: int = 20
    small_images: int = 300  # loopback-small, wan-small, push-small
    small_kb: int = 900  # per small image, besides shared base layers
    push_mb: int = 2100  # push-large
    release_images: int = 700  # release: as many of the Rancher list's 696 as there are
    release_mb: int = 3000
    release_skopeo_every: int = 7  # skopeo copies every 7th image of the release


QUICK = Sizes(large_mb=100, large_images=10, small_images=60, push_mb=200, release_images=100, release_mb=400,
              release_skopeo_every=4)
RELEASE_LIST = ROOT / "manifests" / "rancher" / "v2.7.9.txt"


@dataclass
class Step:
    name: str
    wall_s: float
    cpu_s: float
    peak_rss_kb: int
    registries_cpu_s: float = 0.0  # of the registries passed to measure(), over the step
    traffic: wan.Watched | None = None  # what crossed the link passed to measure(), over the command alone
    link_cpu_s: float = 0.0  # this process's over the step, with a link: its proxies and token server


@contextlib.contextmanager
def registries_cpu(registries: list[testbed.Registry]) -> Iterator[Callable[[], float]]:
    """CPU-s the ``registries`` spend inside the block (read after it)."""
    before = sum(r.cpu_seconds() for r in registries)
    spent: list[float] = []
    yield lambda: spent[0]
    spent.append(sum(r.cpu_seconds() for r in registries) - before)


@dataclass
class Row:
    """One line of the final table: a measured figure against what it is compared with."""

    scenario: str
    what: str
    value: float  # seconds (wall, or CPU where ``what`` says so)
    against: str
    reference: float
    goal: str = ""
    peak_rss_kb: int | None = None


def measure(name: str, command: list[str], env: dict[str, str] | None = None,
            registries: list[testbed.Registry] = (), link: wan.WanLink | None = None) -> Step:
    """Run ``command`` under /usr/bin/time after a sync; CPU and peak RSS cover a shell pipeline's children.
    With ``link``, what crossed it while the command ran (not during the sync) is the step's ``traffic``."""
    subprocess.run(["sync"], check=True)
    before = os.times()
    with (tempfile.NamedTemporaryFile("r", suffix=".time") as report, registries_cpu(list(registries)) as spent,
          link.watch() if link else contextlib.nullcontext([None]) as traffic):
        done = subprocess.run([testbed.require("time"), "-f", "%e %U %S %M", "-o", report.name, *command],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or ENV,
                              timeout=STEP_TIMEOUT)
        if done.returncode:
            raise RuntimeError(f"{name}: exit {done.returncode}: {done.stderr.decode()[-2000:]}")
        wall, user, system, rss = report.read().split()[-4:]
    after = os.times()
    link_cpu = after.user + after.system - before.user - before.system if link else 0.0
    return Step(name, float(wall), float(user) + float(system), int(rss), spent(), traffic[0], link_cpu)


def total(name: str, steps: list[Step]) -> Step:
    """Steps run one after another: times add up, the peak is the largest."""
    return Step(name, sum(s.wall_s for s in steps), sum(s.cpu_s for s in steps), max(s.peak_rss_kb for s in steps),
                sum(s.registries_cpu_s for s in steps))


# --- what the scenarios share: seeded registries, layouts, bundles, the WAN ----


@dataclass
class Source:
    registry: testbed.Registry
    seeded: corpus.Corpus
    images_file: Path


class Bench:
    """Seeded registries and artefacts, made on first use and shared by the scenarios that need them."""

    def __init__(self, work: Path, sizes: Sizes, network: wan.Network, stack: contextlib.ExitStack,
                 trace: bool = False):
        self.work, self.sizes, self.network, self.stack = work, sizes, network, stack
        self.trace = trace  # print the link's use over time under each WAN pull of mirror's
        self.runs = work / "runs"
        self.sources: dict[str, Source] = {}
        self.layouts: dict[str, Path] = {}
        self.bundles: dict[str, Path] = {}
        self.link: wan.WanLink | None = None
        self.remotes: dict[str, wan.Remote] = {}
        self.skopeo_env = {**ENV, "CONTAINERS_REGISTRIES_CONF": str(self._empty_registries_conf())}

    def timeline(self, step: Step) -> str:
        """With --trace, the link's use over ``step`` (wan.Watched.timeline), for the report's note."""
        if not self.trace or step.traffic is None:
            return ""
        return (f"\n  {step.name}, the link per {wan.BIN * 1000:.0f} ms: % of the site's rate / connections moving "
                f"bytes\n{step.traffic.timeline()}")

    def _empty_registries_conf(self) -> Path:
        path = self.runs / "registries.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        return path

    def spec(self, kind: str) -> corpus.CorpusSpec:
        return {"large": lambda: corpus.bench_spec(self.sizes.large_mb, self.sizes.large_images),
                "small": lambda: corpus.scale_spec(self.sizes.small_images, self.sizes.small_kb),
                "push": lambda: corpus.bench_spec(self.sizes.push_mb, self.sizes.large_images),
                "release": lambda: corpus.release_spec(
                    [line for line in RELEASE_LIST.read_text().splitlines() if line and not line.startswith("#")],
                    self.sizes.release_images, self.sizes.release_mb)}[kind]()

    def source(self, kind: str) -> Source:
        """A loopback registry seeded with the ``kind`` corpus, up until the run ends."""
        if kind not in self.sources:
            registry = testbed.start_registry(self.runs / f"{kind}-source")
            self.stack.callback(registry.stop)
            seeded = corpus.seed_registry(registry.host, corpus.generate_corpus(self.work / "corpus", self.spec(kind)))
            images_file = self.runs / f"{kind}-images.txt"
            corpus.write_image_list(seeded, images_file, f"scripts/bench.py {kind} corpus")
            self.sources[kind] = Source(registry, seeded, images_file)
        return self.sources[kind]

    def remote(self, kind: str) -> str:
        """The ``kind`` corpus as a far-away, token-auth registry (same storage): its host through the WAN."""
        if self.link is None:
            self.link = self.stack.enter_context(wan.WanLink(self.network))
        if kind not in self.remotes:
            storage = self.source(kind).registry.directory / "storage"
            self.remotes[kind] = self.stack.enter_context(
                wan.remote_registry(self.runs / f"{kind}-remote", storage, self.link))
        return self.remotes[kind].host

    def layout(self, kind: str) -> Path:
        """skopeo's OCI layout of the corpus (copied untimed if no scenario has made it)."""
        if kind not in self.layouts:
            self.skopeo_pull(kind, self.source(kind).registry.host, self.runs / f"{kind}-skopeo-oci")
        return self.layouts[kind]

    def bundle(self, kind: str) -> Path:
        """mirror's bundle of the corpus (pulled untimed if no scenario has made it)."""
        if kind not in self.bundles:
            self.mirror_pull(kind, self.source(kind).registry.host, self.runs / f"{kind}-mirror.tar.zst")
        return self.bundles[kind]

    def skopeo_pull(self, kind: str, host: str, layout: Path, every: int = 1) -> Step:
        """skopeo copy --all image by image (every ``every``th) into one OCI layout (kept as ``layout(kind)``)."""
        shutil.rmtree(layout, ignore_errors=True)
        images = self.source(kind).seeded.images[::every]
        step = total(f"skopeo copy --all x{len(images)}", [measure(image.source, [
            testbed.require("skopeo"), "copy", "--all", "--src-tls-verify=false", "--src-no-creds",
            f"docker://{host}/{image.repository}:{image.tag}", f"oci:{layout}:{image.source}",
        ], self.skopeo_env) for image in images])
        if every == 1:
            self.layouts.setdefault(kind, layout)
        return step

    def mirror_pull(self, kind: str, host: str, bundle: Path, jobs: int | None = None,
                    link: wan.WanLink | None = None) -> Step:
        """mirror pull of the whole corpus from ``host`` into one bundle (kept as ``bundle(kind)``); with
        ``link``, what crossed it is the step's traffic."""
        step = measure(f"mirror pull{f' -j {jobs}' if jobs else ''}", [
            *MIRROR, "pull", "--images-file", str(self.source(kind).images_file),
            *corpus.source_mirror_args(host), "-o", str(bundle), "--quiet", *(["-j", str(jobs)] if jobs else [])],
            registries=[self.remotes[kind].registry if link else self.source(kind).registry], link=link)
        self.bundles.setdefault(kind, bundle)
        return step


def pack(layout: Path, out: Path) -> Step:
    return measure("tar | zstd -T0 -3", ["sh", "-c", f"tar -C {shlex.quote(str(layout))} -cf - . | "
                                                     f"zstd -q -f -T0 -3 -o {shlex.quote(str(out))}"])


def fetch_blobs(host: str, listing: Path) -> None:
    """The CPU floor of a pull: GET every blob once, one connection, sha256 over the bytes, nothing stored."""
    with httpx.Client(base_url=f"http://{host}", timeout=120) as client:
        for line in listing.read_text().splitlines():
            repository, digest = line.split()
            hasher = hashlib.sha256()
            with client.stream("GET", f"/v2/{repository}/blobs/{digest}") as response:
                response.raise_for_status()
                for chunk in response.iter_bytes(1 << 20):
                    hasher.update(chunk)
            if "sha256:" + hasher.hexdigest() != digest:
                raise SystemExit(f"{digest}: content does not match")


def cpu_floor(bench: Bench, kind: str) -> Step:
    source = bench.source(kind)
    listing, seen = bench.runs / f"{kind}-blobs.txt", set()
    with open(listing, "w") as out:
        for image in source.seeded.images:
            for digest in sorted(image.blob_digests - seen):
                out.write(f"{image.repository} {digest}\n")
            seen |= image.blob_digests
    return measure("httpx + sha256, every blob", [sys.executable, __file__, "--fetch-blobs",
                                                  source.registry.host, str(listing)])


# --- scenarios: each returns its rows of the final table ---------------------


def loopback_large(bench: Bench) -> list[Row]:
    source = bench.source("large")
    layout = bench.runs / "large-skopeo-oci"
    copies = bench.skopeo_pull("large", source.registry.host, layout)
    packed = pack(layout, bench.runs / "large-skopeo.tar.zst")
    skopeo = total("skopeo + tar | zstd", [copies, packed])
    ours = bench.mirror_pull("large", source.registry.host, bench.runs / "large-mirror.tar.zst")
    floor = cpu_floor(bench, "large")
    report("loopback-large", source, [copies, packed, skopeo, ours, floor])
    return [Row("loopback-large", "pull", ours.wall_s, "skopeo + tar|zstd", skopeo.wall_s, "<= 0.9x",
                ours.peak_rss_kb),
            Row("loopback-large", "pull CPU-s", ours.cpu_s, "httpx+sha256 CPU-s", floor.cpu_s, "<= 1.3x")]


def over_wan(bench: Bench, kind: str, scenario: str, goal_floor: str, goal_skopeo: str) -> list[Row]:
    """Pull the ``kind`` corpus through the WAN: mirror, then skopeo image by image + tar|zstd."""
    source, host = bench.source(kind), bench.remote(kind)
    assert bench.link is not None  # bench.remote made it
    ours = bench.mirror_pull(kind, host, bench.runs / f"{scenario}-mirror.tar.zst", link=bench.link)
    layout = bench.runs / f"{scenario}-skopeo-oci"
    with bench.link.watch() as skopeo_traffic:
        copies = bench.skopeo_pull(kind, host, layout)
    packed = pack(layout, bench.runs / f"{scenario}-skopeo.tar.zst")
    skopeo = total("skopeo + tar | zstd", [copies, packed])
    floor = source.seeded.total_bytes / bench.network.site_rate
    largest = max(source.seeded.sizes.values())
    images = len(source.seeded.images)
    report(scenario, source, [copies, packed, skopeo, ours],
           f"{bench.network.describe()}; bandwidth floor {floor:.1f} s, the largest blob alone on one connection "
           f"{largest / bench.network.connection_rate:.1f} s\n  mirror pull: {ours.traffic.describe(images)}; "
           f"{cpu_note(ours)}"
           f"\n  skopeo: {skopeo_traffic[0].describe(images)}{bench.timeline(ours)}")
    return [Row(scenario, "pull", ours.wall_s, "bandwidth floor", floor, goal_floor, ours.peak_rss_kb),
            Row(scenario, "pull", ours.wall_s, "skopeo + tar|zstd", skopeo.wall_s, goal_skopeo),
            Row(scenario, "pull", ours.wall_s, "all CPU floor", machine_floor(ours), "")]


def wan_large(bench: Bench) -> list[Row]:
    return over_wan(bench, "large", "wan-large", "<= 1.3x", "")


def wan_small(bench: Bench) -> list[Row]:
    return over_wan(bench, "small", "wan-small", "<= 3x", "<= 0.05x")


def release(bench: Bench) -> list[Row]:
    """A release-shaped pull through the WAN against the bandwidth floor; skopeo on a subset, scaled up."""
    source, host = bench.source("release"), bench.remote("release")
    assert bench.link is not None  # bench.remote made it
    ours = bench.mirror_pull("release", host, bench.runs / "release-mirror.tar.zst", link=bench.link)
    every = bench.sizes.release_skopeo_every
    with bench.link.watch() as skopeo_traffic:
        copies = bench.skopeo_pull("release", host, bench.runs / "release-skopeo-oci", every)
    shutil.rmtree(bench.runs / "release-skopeo-oci", ignore_errors=True)
    images = source.seeded.images
    factor = len(images) / len(images[::every])
    scaled = replace(copies, name=f"skopeo x{every} (estimate)", wall_s=copies.wall_s * factor,
                     cpu_s=copies.cpu_s * factor)
    floor = source.seeded.total_bytes / bench.network.site_rate
    repositories = len({image.repository for image in images})
    report("release", source, [copies, scaled, ours],
           f"{repositories} repositories; {bench.network.describe()}; bandwidth floor {floor:.1f} s, the largest "
           f"blob alone on one connection {max(source.seeded.sizes.values()) / bench.network.connection_rate:.1f} s"
           f"\n  mirror pull: {ours.traffic.describe(len(images))}; {cpu_note(ours)}"
           f"\n  skopeo (every {every}th image): {skopeo_traffic[0].describe(len(images[::every]))}"
           f"{bench.timeline(ours)}")
    return [Row("release", "pull", ours.wall_s, "bandwidth floor", floor, "<= 1.5x", ours.peak_rss_kb),
            Row("release", "pull", ours.wall_s, f"skopeo x{every} est.", scaled.wall_s, ""),
            Row("release", "pull", ours.wall_s, "all CPU floor", machine_floor(ours), "")]


def loopback_small(bench: Bench) -> list[Row]:
    source = bench.source("small")
    layout = bench.runs / "small-skopeo-oci"
    copies = bench.skopeo_pull("small", source.registry.host, layout)
    packed = pack(layout, bench.runs / "small-skopeo.tar.zst")
    skopeo = total("skopeo + tar | zstd", [copies, packed])
    j8 = bench.mirror_pull("small", source.registry.host, bench.runs / "small-mirror.tar.zst", jobs=8)
    j32 = bench.mirror_pull("small", source.registry.host, bench.runs / "small-mirror-j32.tar.zst", jobs=32)
    report("loopback-small", source, [copies, packed, skopeo, j8, j32], registry_note(j8, "mirror pull -j 8"))
    return [Row("loopback-small", "pull -j 8", j8.wall_s, "skopeo + tar|zstd", skopeo.wall_s, "<= 0.3x",
                j8.peak_rss_kb),
            Row("loopback-small", "pull -j 8", j8.wall_s, "registry's CPU floor", registry_floor(j8), ""),
            Row("loopback-small", "pull -j 32", j32.wall_s, "pull -j 8", j8.wall_s, "<= 1.05x", j32.peak_rss_kb)]


def push(bench: Bench, kind: str, scenario: str, goal_skopeo: str) -> list[Row]:
    """Into fresh registries: skopeo image by image from its OCI layout; mirror push, then the same again."""
    source, layout, bundle = bench.source(kind), bench.layout(kind), bench.bundle(kind)
    skopeo_target = testbed.start_registry(bench.runs / f"{scenario}-skopeo-target")
    mirror_target = testbed.start_registry(bench.runs / f"{scenario}-mirror-target")
    try:
        skopeo = total(f"skopeo copy --all x{len(source.seeded.images)}", [measure(image.source, [
            testbed.require("skopeo"), "copy", "--all", "--dest-tls-verify=false", "--dest-no-creds",
            f"oci:{layout}:{image.source}", f"docker://{skopeo_target.host}/{image.repository}:{image.tag}",
        ], bench.skopeo_env, [skopeo_target]) for image in source.seeded.images])
        command = [*MIRROR, "push", str(bundle), "--registry", mirror_target.host, "--plain-http", "--quiet"]
        first = measure("mirror push", command, registries=[mirror_target])
        again = measure("mirror push (again)", command)
    finally:
        skopeo_target.stop()
        mirror_target.stop()
    start = start_up()
    report(scenario, source, [skopeo, first, again, start],
           f"bundle {bundle.stat().st_size / 1e6:.0f} MB; {registry_note(first, 'mirror push')}, "
           f"{skopeo.registries_cpu_s:.1f} under skopeo")
    return [Row(scenario, "push", first.wall_s, "skopeo copy --all", skopeo.wall_s, goal_skopeo, first.peak_rss_kb),
            Row(scenario, "push", first.wall_s, "registry's CPU floor", registry_floor(first), ""),
            Row(scenario, "re-push", again.wall_s, "first push", first.wall_s, "<= 0.03x", again.peak_rss_kb),
            Row(scenario, "re-push", again.wall_s, "start-up floor", start.wall_s, "")]


def start_up() -> Step:
    """The floor of any mirror command: the interpreter starting and importing mirror's dependencies."""
    return measure("python + imports (floor)", [sys.executable, "-c", "import anyio, httpx, typer, zstandard"])


def registry_floor(step: Step) -> float:
    """Wall time the registries' own CPU during ``step`` takes at the least, spread over every core."""
    return step.registries_cpu_s / (os.cpu_count() or 1)


def registry_note(step: Step, name: str) -> str:
    return (f"the registry spent {step.registries_cpu_s:.1f} CPU-s under {name} "
            f"({registry_floor(step):.1f} s over {os.cpu_count()} cores)")


def push_small(bench: Bench) -> list[Row]:
    return push(bench, "small", "push-small", "<= 0.3x")


def push_large(bench: Bench) -> list[Row]:
    return push(bench, "push", "push-large", "")


def push_fanout(bench: Bench) -> list[Row]:
    """One push to 1, 2 and 3 fresh registries at once, against the push to one."""
    bundle = bench.bundle("large")
    steps = []
    for count in (1, 2, 3):
        targets = [testbed.start_registry(bench.runs / f"fanout-{count}-{i}") for i in range(count)]
        try:
            command = [*MIRROR, "push", str(bundle), "--plain-http", "--quiet",
                       *[arg for t in targets for arg in ("--registry", t.host)]]
            steps.append(measure(f"mirror push to {count}", command, registries=targets))
        finally:
            for target in targets:
                target.stop()
    one, two, three = steps
    report("push-fanout", bench.source("large"), steps,
           f"bundle {bundle.stat().st_size / 1e6:.0f} MB; {registry_note(three, 'the push to 3')}; with mirror's "
           f"{three.cpu_s:.1f} CPU-s no push to 3 beats {machine_floor(three):.1f} s here, "
           f"{machine_floor(three) / one.wall_s:.2f}x the push to 1")
    return [Row("push-fanout", "push to 2", two.wall_s, "push to 1", one.wall_s, "<= 1.3x", two.peak_rss_kb),
            Row("push-fanout", "push to 3", three.wall_s, "push to 1", one.wall_s, "<= 1.6x", three.peak_rss_kb),
            Row("push-fanout", "push to 3", three.wall_s, "registries' CPU floor", registry_floor(three), ""),
            Row("push-fanout", "push to 3", three.wall_s, "all CPU floor", machine_floor(three), "")]


def cpu_note(step: Step) -> str:
    return (f"CPU-s: mirror {step.cpu_s:.1f}, the registry {step.registries_cpu_s:.1f}, the link {step.link_cpu_s:.1f} "
            f"({machine_floor(step):.1f} s over {os.cpu_count()} cores)")


def machine_floor(step: Step) -> float:
    """Wall time all of ``step``'s CPU takes at the least, spread over every core: mirror's, the registries'
    and, over the WAN, the link's (its proxies run on this machine too)."""
    return (step.cpu_s + step.registries_cpu_s + step.link_cpu_s) / (os.cpu_count() or 1)


def delta(bench: Bench) -> list[Row]:
    """Resync: v1 pushed and inventoried; v2 adds about 10% new bytes; a full v2 bundle against a delta."""
    source, v1_bundle = bench.source("large"), bench.bundle("large")
    target = testbed.start_registry(bench.runs / "delta-target")
    fresh = testbed.start_registry(bench.runs / "delta-fresh")
    try:
        measure("mirror push v1 (setup)", [*MIRROR, "push", str(v1_bundle), "--registry", target.host,
                                          "--plain-http", "--quiet"])
        have = bench.runs / "delta-have.json"
        measure("mirror inventory (setup)", [*MIRROR, "inventory", "--registry", target.host, "--plain-http",
                                            "-o", str(have)])
        spec = corpus.bench_spec(max(10, bench.sizes.large_mb // 10), 5)
        spec = replace(spec, name=spec.name + "-v2", seed=2, images=tuple(
            replace(image, source=image.source.replace("/bench-", "/bench-v2-")) for image in spec.images))
        added = corpus.seed_registry(source.registry.host, corpus.generate_corpus(bench.work / "corpus", spec))
        v2_list = bench.runs / "delta-v2-images.txt"
        v2_list.write_text(source.images_file.read_text() + "".join(f"{i.source}\n" for i in added.images))
        args = [*MIRROR, "pull", "--images-file", str(v2_list), *corpus.source_mirror_args(source.registry.host),
                "--quiet"]
        full, delta_bundle = bench.runs / "delta-full-v2.tar.zst", bench.runs / "delta-v2.tar.zst"
        full_pull = measure("mirror pull v2 (full)", [*args, "-o", str(full)])
        delta_pull = measure("mirror pull v2 --base", [*args, "--base", str(have), "-o", str(delta_bundle)])
        full_push = measure("mirror push v2 (full, fresh registry)",
                            [*MIRROR, "push", str(full), "--registry", fresh.host, "--plain-http", "--quiet"])
        delta_push = measure("mirror push v2 (delta)",
                             [*MIRROR, "push", str(delta_bundle), "--registry", target.host, "--plain-http",
                              "--quiet"])
    finally:
        target.stop()
        fresh.stop()
    new_share = added.total_bytes / (source.seeded.total_bytes + added.total_bytes)
    size_ratio = delta_bundle.stat().st_size / full.stat().st_size
    report("delta", source, [full_pull, delta_pull, full_push, delta_push],
           f"v2 adds {added.total_bytes / 1e6:.0f} MB ({new_share:.1%} of v2); delta bundle "
           f"{delta_bundle.stat().st_size / 1e6:.1f} MB, full {full.stat().st_size / 1e6:.1f} MB")
    return [Row("delta", "bundle size", size_ratio, "new bytes' share", new_share, "within 2%"),
            Row("delta", "pull --base", delta_pull.wall_s, "full pull", full_pull.wall_s, "", delta_pull.peak_rss_kb),
            Row("delta", "push delta", delta_push.wall_s, "full push", full_push.wall_s, "", delta_push.peak_rss_kb)]


KIT_BINARY_MB = 70  # about the size of a k3s binary
KIT_ROUNDS = 3  # the kit's share is under a second of a pull's ten on a shared machine: alternate, take the fastest


def kit(bench: Bench) -> list[Row]:
    """The large corpus over the WAN, without and with a kit: --chart and --file from a far release host.

    The two pulls alternate KIT_ROUNDS times; the time the kit adds is the fastest with it less the
    fastest without (the medians are printed too)."""
    import statistics

    from support import kitbed

    source, host = bench.source("large"), bench.remote("large")
    upstream = kitbed.KitUpstream(kitbed.KitHost())
    bench.stack.callback(upstream.host.stop)
    binary = hashlib.shake_256(b"kit bench k3s").digest(int(KIT_BINARY_MB * 1e6))  # incompressible, reproducible
    upstream.release("k3s-io/k3s", "v1.99.0+k3s1", {"k3s": binary})
    chart = upstream.add_chart("rancher", "rancher", "2.99.0", kitbed.make_chart("rancher", "2.99.0", b"x" * 200_000))
    assert bench.link is not None  # bench.remote made it
    far = bench.link.proxy(upstream.host.url.removeprefix("http://"))
    kit_args = ["--chart", f"http://{far}/rancher/rancher@2.99.0", "--file",
                f"http://{far}/gh/k3s-io/k3s/releases/download/v1.99.0%2Bk3s1/k3s"
                f"#sha256={hashlib.sha256(binary).hexdigest()}"]
    pull = [*MIRROR, "pull", "--images-file", str(source.images_file), *corpus.source_mirror_args(host), "--quiet"]
    images: list[Step] = []
    with_kit: list[Step] = []
    for turn in range(1, KIT_ROUNDS + 1):
        bundle = bench.runs / f"kit-images-{turn}.tar.zst"
        images.append(measure(f"mirror pull ({turn})", [*pull, "-o", str(bundle)], link=bench.link))
        bench.bundles.setdefault("large", bundle)
        both = bench.runs / f"kit-both-{turn}.tar.zst"
        with_kit.append(measure(f"mirror pull + kit ({turn})", [*pull, *kit_args, "-o", str(both)],
                                {**ENV, "NO_PROXY": "127.0.0.1"}, link=bench.link))
        both.unlink()
        if bench.bundles["large"] != bundle:
            bundle.unlink()
    kit_bytes = len(binary) + len(chart)
    kit_floor = kit_bytes / bench.network.site_rate
    alone = kit_bytes / bench.network.connection_rate
    fastest = {name: min(steps, key=lambda s: s.wall_s) for name, steps in (("images", images), ("kit", with_kit))}
    medians = {name: statistics.median(s.wall_s for s in steps) for name, steps in (("images", images),
                                                                                    ("kit", with_kit))}
    report("kit", source, [*images, *with_kit], f"{bench.network.describe()}; the kit {kit_bytes / 1e6:.0f} MB: "
           f"{kit_floor:.1f} s at the site's rate, {alone:.1f} s on one connection; fastest without / with the kit "
           f"{fastest['images'].wall_s:.1f} / {fastest['kit'].wall_s:.1f} s, medians {medians['images']:.1f} / "
           f"{medians['kit']:.1f} s; load {os.getloadavg()[0]:.1f}; link idle (fastest) "
           f"{fastest['images'].traffic.idle_share:.0%} / {fastest['kit'].traffic.idle_share:.0%}"
           f"{bench.timeline(fastest['images'])}{bench.timeline(fastest['kit'])}")
    return [Row("kit", "time the kit adds", fastest["kit"].wall_s - fastest["images"].wall_s,
                "kit bytes / site rate", kit_floor, "<= 1x", max(s.peak_rss_kb for s in with_kit))]


def sync(bench: Bench) -> list[Row]:
    """Registry to registry: mirror sync against skopeo image by image and against pull + push; then no change."""
    source = bench.source("large")
    targets = {name: testbed.start_registry(bench.runs / f"sync-{name}") for name in ("skopeo", "sync", "bundle")}
    try:
        skopeo = total(f"skopeo copy --all x{len(source.seeded.images)}", [measure(image.source, [
            testbed.require("skopeo"), "copy", "--all", "--src-tls-verify=false", "--src-no-creds",
            "--dest-tls-verify=false", "--dest-no-creds",
            f"docker://{source.registry.host}/{image.repository}:{image.tag}",
            f"docker://{targets['skopeo'].host}/{image.repository}:{image.tag}",
        ], bench.skopeo_env, [source.registry, targets["skopeo"]]) for image in source.seeded.images])
        command = [*MIRROR, "sync", "run", "--images-file", str(source.images_file),
                   *corpus.source_mirror_args(source.registry.host), "--to", targets["sync"].host,
                   "--to-plain-http", "--quiet"]
        first = measure("mirror sync run", command, registries=[source.registry, targets["sync"]])
        again = measure("mirror sync run (no change)", command)
        start = start_up()
        bundle = bench.runs / "sync-bundle.tar.zst"
        pulled = measure("mirror pull", [*MIRROR, "pull", "--images-file", str(source.images_file),
                                         *corpus.source_mirror_args(source.registry.host), "-o", str(bundle),
                                         "--quiet"])
        pushed = measure("mirror push", [*MIRROR, "push", str(bundle), "--registry", targets["bundle"].host,
                                         "--plain-http", "--quiet"])
        both = total("mirror pull + push", [pulled, pushed])
    finally:
        for registry in targets.values():
            registry.stop()
    report("sync", source, [skopeo, first, again, both, start],
           f"{registry_note(first, 'mirror sync').replace('registry', 'registries', 1)}, "
           f"{skopeo.registries_cpu_s:.1f} under skopeo")
    return [Row("sync", "sync run", first.wall_s, "skopeo copy --all", skopeo.wall_s, "<= 0.6x", first.peak_rss_kb),
            Row("sync", "sync run", first.wall_s, "pull + push", both.wall_s, "<= 0.8x"),
            Row("sync", "sync run", first.wall_s, "registries' CPU floor", registry_floor(first), ""),
            Row("sync", "no-change run", again.wall_s, "first run", first.wall_s, "<= 0.05x", again.peak_rss_kb),
            Row("sync", "no-change run", again.wall_s, "start-up floor", start.wall_s, "")]


def attachments(bench: Bench) -> list[Row]:
    """The small corpus over the WAN unsigned, signed, and signed with --no-attachments: the time carrying
    what is attached adds, against their bytes over the site's link plus one round trip per image.

    Two registries of their own (signing changes a corpus other scenarios read) seeded with the same
    images, each registered as a source so it gets its far-away twin. The three pulls take turns,
    ATTACHMENT_ROUNDS times, and each one's quickest counts: on a shared host one run alone says little."""
    from support import signing

    generated = corpus.generate_corpus(bench.work / "corpus", bench.spec("small"))
    images_file = bench.runs / "attachments-images.txt"
    sources: dict[str, Source] = {}
    for kind in ("unsigned", "signed"):
        registry = testbed.start_registry(bench.runs / f"attachments-{kind}")
        bench.stack.callback(registry.stop)
        seeded = corpus.seed_registry(registry.host, generated)
        sources[kind] = bench.sources[f"attachments-{kind}"] = Source(registry, seeded, images_file)
    corpus.write_image_list(seeded, images_file, "scripts/bench.py attachments corpus")
    hosts = {kind: bench.remote(f"attachments-{kind}") for kind in sources}
    fetched, manifests = sign_every_image(sources["signed"].registry.host, seeded, signing)

    def pull(name: str, kind: str, bundle: str, *extra: str) -> Step:
        return measure(name, [*MIRROR, "pull", "--images-file", str(images_file),
                              *corpus.source_mirror_args(hosts[kind]), "--quiet", *extra,
                              "-o", str(bench.runs / f"attachments-{bundle}.tar.zst")],
                       registries=[sources[kind].registry])

    runs: dict[str, list[Step]] = {"skipped": [], "plain": [], "attached": []}
    for turn in range(ATTACHMENT_ROUNDS):
        runs["skipped"].append(pull("pull signed --no-attachments", "signed", f"skipped-{turn}", "--no-attachments"))
        runs["plain"].append(pull("pull unsigned", "unsigned", f"plain-{turn}"))
        runs["attached"].append(pull("pull signed", "signed", f"attached-{turn}"))
    skipped, plain, attached = (min(steps, key=lambda step: step.wall_s) for steps in runs.values())
    network, images = bench.network, len(seeded.images)
    allowance = fetched / network.site_rate + images * network.rtt
    floor = fetched / network.site_rate + (images + manifests) * network.rtt / SMALL_REQUESTS_IN_FLIGHT
    report("attachments", sources["signed"], [step for steps in zip(*runs.values()) for step in steps],
           f"{network.describe()}; {4 * images} attachments, {fetched / 1e6:.2f} MB in {manifests} manifests and "
           f"their blobs; allowance {allowance:.2f} s (their bytes / site rate + one round trip per image), "
           f"request floor {floor:.2f} s (their bytes / site rate + a tag list per image and a GET per manifest, "
           f"{SMALL_REQUESTS_IN_FLIGHT} at a time); each pull's quickest of {ATTACHMENT_ROUNDS} counts")
    return [Row("attachments", "over plain", attached.wall_s - plain.wall_s, "bytes/rate + N x RTT", allowance,
                "<= 1x", attached.peak_rss_kb),
            Row("attachments", "over no-att", attached.wall_s - skipped.wall_s, "bytes/rate + N x RTT", allowance,
                "<= 1x"),
            Row("attachments", "over no-att", attached.wall_s - skipped.wall_s, "request floor", floor, "")]


ATTACHMENT_ROUNDS = 3
SMALL_REQUESTS_IN_FLIGHT = 8  # to one registry at the default -j 16 (registry/transport.py), besides blob transfers


def sign_every_image(host: str, seeded: corpus.Corpus, signing) -> tuple[int, int]:
    """cosign's signature, attestation and SBOM of every image, and an OCI 1.1 referrer listed in the
    referrers tag schema (the registry has no referrers API); returns the bytes a pull of them fetches
    and the number of manifests among them."""
    signer, fetched, manifests = signing.Signer(), 0, 0
    for image in seeded.images:
        writer = signing.Source(host, image.repository)
        name = f"index.docker.io/{image.source.split('/', 1)[1].rsplit(':', 1)[0]}"
        subject = signing.Pushed(image.digest, seeded.sizes[image.digest], image.media_type)
        pushed = [writer.sign(image.digest, signer, name), writer.attest(image.digest, signer, name),
                  writer.sbom(image.digest), writer.referrer(subject)]
        index = writer.client.get(f"/v2/{image.repository}/manifests/sha256-{image.digest.split(':')[1]}",
                                  headers={"Accept": signing.OCI_INDEX})
        fetched, manifests = fetched + len(index.content), manifests + 1 + len(pushed)  # with the tag schema's index
        for attachment in pushed:
            manifest = writer.client.get(f"/v2/{image.repository}/manifests/{attachment.digest}",
                                         headers={"Accept": attachment.media_type}).json()
            fetched += attachment.size + sum(d["size"] for d in [manifest["config"], *manifest["layers"]])
        writer.client.close()
    return fetched, manifests


SCENARIOS: dict[str, Callable[[Bench], list[Row]]] = {
    "loopback-large": loopback_large, "wan-large": wan_large, "wan-small": wan_small,
    "loopback-small": loopback_small, "push-small": push_small, "push-large": push_large,
    "push-fanout": push_fanout, "delta": delta, "sync": sync, "kit": kit, "release": release,
    "attachments": attachments,
}


# --- output --------------------------------------------------------------------


def report(scenario: str, source: Source, steps: list[Step], note: str = "") -> None:
    seeded = source.seeded
    print(f"\n{scenario}: {len(seeded.images)} images, {seeded.total_bytes / 1e6:.0f} MB{'; ' + note if note else ''}")
    print(f"  {'step':<32} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    for step in steps:
        print(f"  {step.name:<32} {step.wall_s:>8.1f} {step.cpu_s:>8.1f} {step.peak_rss_kb / 1024:>12.0f}")
    sys.stdout.flush()


def print_table(rows: list[Row]) -> None:
    print(f"\n{'scenario':<15} {'mirror':<12} {'s':>7}   {'against':<20} {'s':>7} {'ratio':>7} {'goal':>9} "
          f"{'peak RSS MB':>12}")
    for row in rows:
        rss = f"{row.peak_rss_kb / 1024:.0f}" if row.peak_rss_kb is not None else ""
        print(f"{row.scenario:<15} {row.what:<12} {row.value:>7.2f}   {row.against:<20} {row.reference:>7.2f} "
              f"{row.value / row.reference:>6.2f}x {row.goal:>9} {rss:>12}")
    print("peak RSS goal: <= 200 MB for every mirror run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"small corpora for iterating ({QUICK.large_mb} MB / {QUICK.large_images} images, "
                             f"{QUICK.small_images} small images, {QUICK.push_mb} MB push, a release of "
                             f"{QUICK.release_images} images / {QUICK.release_mb} MB)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work")
    parser.add_argument("--keep", action="store_true", help="keep registries' storage and the bundles")
    parser.add_argument("--trace", action="store_true",
                        help="under each WAN pull of mirror's, the link's use per 100 ms: when it sat idle")
    parser.add_argument("--fetch-blobs", nargs=2, metavar=("HOST", "LIST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fetch_blobs:
        return fetch_blobs(args.fetch_blobs[0], Path(args.fetch_blobs[1]))
    chosen = args.only.split(",")
    if unknown := [name for name in chosen if name not in SCENARIOS]:
        parser.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    rows: list[Row] = []
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(args.work, QUICK if args.quick else Sizes(), wan.Network(), stack, args.trace)
            for name in SCENARIOS:
                if name in chosen:
                    rows += SCENARIOS[name](bench)
    finally:
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)
        if rows:
            print_table(rows)


if __name__ == "__main__":
    main()
