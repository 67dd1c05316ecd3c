"""Benchmark: `mirror pull` against what a user does today with skopeo.

Starts a loopback registry (scripts/testbed.py), seeds the bench corpus
(scripts/corpus.py: ~500 MB of multi-arch images, shared base layers, one
large layer), then times, one command at a time, with /usr/bin/time:

  skopeo baseline  `skopeo copy --all` of each image into one OCI layout,
                   one after another, then `tar | zstd -T0 -3` into one file
  mirror           `mirror pull --images-file` of the same images into one bundle

and prints wall time and peak RSS of each, and the mirror/skopeo ratios.
The generated corpus is cached under WORK/corpus; registry storage and
outputs are removed afterwards unless --keep.

    python3 scripts/bench.py [--size-mb 500] [--images 20] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpus  # noqa: E402
import testbed  # noqa: E402


@dataclass
class Step:
    name: str
    wall_s: float
    peak_rss_kb: int


def measure(name: str, command: list[str], env: dict[str, str] | None = None) -> Step:
    """Run ``command`` under /usr/bin/time; peak RSS covers the children it waits for (a shell pipeline)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        subprocess.run([testbed.require("time"), "-f", "%e %M", "-o", report.name, *command],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        wall, rss = report.read().split()[-2:]
    return Step(name, float(wall), int(rss))


def total(name: str, steps: list[Step]) -> Step:
    """Steps run one after another: wall times add up, the peak is the largest."""
    return Step(name, sum(s.wall_s for s in steps), max(s.peak_rss_kb for s in steps))


def run_skopeo_baseline(seeded: corpus.Corpus, out_dir: Path) -> tuple[list[Step], Path]:
    layout, bundle = out_dir / "skopeo-oci", out_dir / "skopeo.tar.zst"
    copies = [measure(image.source, [
        testbed.require("skopeo"), "copy", "--all", "--src-tls-verify=false",
        f"docker://{seeded.seeded_reference(image.source)}", f"oci:{layout}:{image.source}",
    ]) for image in seeded.images]
    pack = measure("tar | zstd -T0 -3", ["sh", "-c", f"tar -C {shlex.quote(str(layout))} -cf - . | "
                                                     f"zstd -q -f -T0 -3 -o {shlex.quote(str(bundle))}"])
    return [total(f"skopeo copy --all x{len(copies)}", copies), pack], bundle


def run_mirror_pull(seeded: corpus.Corpus, images_file: Path, out_dir: Path) -> tuple[list[Step], Path]:
    """The same images through `mirror pull`, reading the seeding registry as docker.io and quay.io."""
    bundle = out_dir / "mirror.tar.zst"
    step = measure("mirror pull", [sys.executable, "-m", "mirror", "pull", "--images-file", str(images_file),
                                   *corpus.source_mirror_args(seeded.registry_host), "-o", str(bundle), "--quiet"],
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return [step], bundle


def print_report(skopeo: list[Step], skopeo_bundle: Path, mirror: list[Step], mirror_bundle: Path,
                 corpus_bytes: int) -> None:
    rows = skopeo + [total("skopeo total", skopeo)] + mirror
    print(f"corpus: {corpus_bytes / 1e6:.0f} MB unique blobs")
    print(f"{'step':<28} {'wall s':>8} {'peak RSS MB':>12}")
    for row in rows:
        print(f"{row.name:<28} {row.wall_s:>8.1f} {row.peak_rss_kb / 1024:>12.0f}")
    print(f"bundles: skopeo {skopeo_bundle.stat().st_size / 1e6:.0f} MB, "
          f"mirror {mirror_bundle.stat().st_size / 1e6:.0f} MB")
    base, ours = total("", skopeo), total("", mirror)
    print(f"mirror/skopeo: wall {ours.wall_s / base.wall_s:.2f}x, "
          f"peak RSS {ours.peak_rss_kb / base.peak_rss_kb:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500, help="unique compressed blob bytes in the corpus")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("bench-work"))
    parser.add_argument("--keep", action="store_true", help="keep the registry storage and the bundles")
    args = parser.parse_args()

    runs = args.work / "run"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    registry = testbed.start_registry(runs / "registry")
    try:
        seeded = corpus.seed_registry(registry.host, corpus.generate_corpus(
            args.work / "corpus", corpus.bench_spec(args.size_mb, args.images)))
        images_file = runs / "images.txt"
        corpus.write_image_list(seeded, images_file, "scripts/bench.py corpus")
        skopeo, skopeo_bundle = run_skopeo_baseline(seeded, runs)
        mirror, mirror_bundle = run_mirror_pull(seeded, images_file, runs)
        print_report(skopeo, skopeo_bundle, mirror, mirror_bundle, seeded.total_bytes)
    finally:
        registry.stop()
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
