"""`--registry` is read like every other registry address: http:// means plain HTTP."""

from __future__ import annotations

import json

from support.cli import run_mirror


def test_push_and_verify_to_an_http_address_need_no_plain_http_flag(corpus_bundle, registry):
    pushed = run_mirror("push", corpus_bundle, "--registry", f"http://{registry.host}/site", "--json")
    assert pushed.returncode == 0, pushed.stderr
    report = json.loads(pushed.stdout)
    assert report["images"] and all(i["target"].startswith(f"{registry.host}/site/") for i in report["images"])
    checked = run_mirror("verify", corpus_bundle, "--registry", f"http://{registry.host}/site")
    assert checked.returncode == 0, checked.stderr


def test_without_a_scheme_the_registry_is_spoken_to_over_tls(corpus_bundle, registry):
    refused = run_mirror("push", corpus_bundle, "--registry", registry.host)
    assert refused.returncode != 0
    assert "TLS" in refused.stderr or "plain-http" in refused.stderr, refused.stderr
