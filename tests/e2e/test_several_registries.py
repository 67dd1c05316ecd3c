"""Two real registries, one lacking an image: `verify` names it there only; `inventory` of both holds what both hold,
and a delta pulled against it brings both up to date."""

from __future__ import annotations

import json

from support.cli import assert_refused, run_mirror


def test_verify_inventory_and_a_delta_across_two_registries(seeded_source, corpus_bundle, start_registry, tmp_path):
    refs = [image.source for image in seeded_source.corpus.images]
    lacking, kept = refs[0], refs[1:]
    partial = tmp_path / "partial.tar.zst"
    assert run_mirror("pull", *kept, "-o", partial, *seeded_source.mirror_args, "-q").returncode == 0
    full, behind = start_registry(), start_registry()
    for bundle, registry in ((corpus_bundle, full), (partial, behind)):
        pushed = run_mirror("push", bundle, "--registry", registry.host, "--plain-http", "-q")
        assert pushed.returncode == 0, pushed.stderr
    both = ["--registry", full.host, "--registry", behind.host, "--plain-http"]

    checked = run_mirror("verify", corpus_bundle, *both, "--json")
    assert checked.returncode == 1, checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["exit_code"] == 1 and [t["registry"] for t in doc["targets"]] == [full.host, behind.host]
    assert doc["targets"][0]["problems"] == {} and doc["targets"][0]["exit_code"] == 0
    assert list(doc["targets"][1]["problems"]) == [lacking] and doc["targets"][1]["exit_code"] == 1
    text = run_mirror("verify", corpus_bundle, *both)
    assert f"{len(refs)} images verified in {full.host}" in text.stdout
    assert f"mirror: missing: {lacking}: tag {behind.host}/" in text.stderr and behind.host not in text.stdout

    have = tmp_path / "have.json"
    taken = run_mirror("inventory", *both, "-o", have, "--json")
    assert taken.returncode == 0, taken.stderr
    report, inventory = json.loads(taken.stdout), json.loads(have.read_text())
    assert [t["images"] for t in report["targets"]] == [len(refs), len(kept)]
    assert sorted(i["source"] for i in inventory["images"]) == sorted(kept)
    assert inventory["format_version"] == 2 and inventory["registries"] == [full.host, behind.host]

    delta = tmp_path / "delta.tar.zst"
    pulled = run_mirror("pull", *refs, "--base", have, "-o", delta, *seeded_source.mirror_args, "-q")
    assert pulled.returncode == 0, pulled.stderr
    pushed = run_mirror("push", delta, *both, "-q")
    assert pushed.returncode == 0 and "warning" not in pushed.stderr, pushed.stderr
    assert run_mirror("verify", corpus_bundle, *both).returncode == 0


def test_the_registry_options_refuse_alike_on_every_command(tmp_path):
    """push, verify, inventory and prune take one declaration of the registry options: the same refusals."""
    bundle, keep = tmp_path / "b.tar.zst", tmp_path / "have.json"
    twice = ["--registry", "reg.test:5000", "--registry", "reg.test:5000"]
    for command in (["push", bundle], ["verify", bundle], ["inventory", "-o", tmp_path / "x.json"]):
        assert_refused(run_mirror(*command, *twice), "--registry", "each registry once")
    assert_refused(run_mirror("prune", "--keep", keep, "--registry", "reg.test:5000", "--local-registry"),
                   "--registry and --local-registry exclude each other")
