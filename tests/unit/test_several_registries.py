"""`verify --registry A --registry B` checks each on its own; `inventory` of several holds what all of them hold,
so a delta pulled against it pushes to every one of them."""

from __future__ import annotations

import json

import pytest

from mirror.errors import AuthError, ExitCode
from mirror.model.target import RegistryAddress
from mirror.transfer.delta import load_base
from mirror.transfer.inventory import Inventory, take_inventories
from mirror.transfer.plan import Target
from mirror.transfer.push import PushRequest, push_all
from mirror.transfer.verify import verify_in_registries
from support.fake_registry import FakeRegistry, by_host
from support.pulled import QUIET, pulled, plain, source  # noqa: F401 - source: a fixture

pytestmark = pytest.mark.anyio

APP, TOOL = "src.test/lib/app:1.0", "src.test/lib/tool:2"


def target(host: str, prefix: str = "") -> Target:
    return Target(RegistryAddress.parse(f"http://{host}/{prefix}"), plain(host))


async def two_registries(source, tmp_path):  # noqa: F811
    """a.test holds lib/app and lib/tool, b.test only lib/tool (under the prefix "ha"); the full bundle's result."""
    (tmp_path / "tool").mkdir()
    both = await pulled(source, tmp_path, "lib/app:1.0", "lib/tool:2")
    tool = await pulled(source, tmp_path / "tool", "lib/tool:2")
    registries = {"a.test": FakeRegistry(), "b.test": FakeRegistry()}
    transport = by_host(registries)
    await push_all(PushRequest(both.bundle.path, target("a.test"), http_transport=transport), QUIET)
    await push_all(PushRequest(tool.bundle.path, target("b.test", "ha"), http_transport=transport), QUIET)
    return both, registries, transport


async def test_verify_checks_each_registry_and_names_what_one_lacks(source, tmp_path):  # noqa: F811
    both, _, transport = await two_registries(source, tmp_path)
    a, b = await verify_in_registries(both.bundle.path, [target("a.test"), target("b.test", "ha")], 4, transport)
    assert (a.registry, a.exit_code, sorted(a.verified), a.problems) == ("a.test", ExitCode.OK, [APP, TOOL], {})
    assert (b.registry, b.exit_code, b.verified) == ("b.test", ExitCode.FAILED, [TOOL])
    assert list(b.problems) == [APP] and "tag b.test/ha/src.test/lib/app:1.0 is missing" in b.problems[APP]
    assert b.to_json()["exit_code"] == 1 and a.to_json()["exit_code"] == 0


async def test_a_registry_refusing_the_credentials_fails_its_check_alone(source, tmp_path):  # noqa: F811
    both, registries, _ = await two_registries(source, tmp_path)
    registries["c.test"] = FakeRegistry(auth="basic", credentials=("bob", "right"))
    transport = by_host(registries)
    refused, checked = await verify_in_registries(both.bundle.path, [target("c.test"), target("a.test")], 4,
                                                  transport)
    assert refused.exit_code == ExitCode.AUTH and isinstance(refused.error, AuthError)
    assert "error" in refused.to_json() and refused.verified == []
    assert checked.exit_code == ExitCode.OK and sorted(checked.verified) == [APP, TOOL]
    with pytest.raises(AuthError):  # one registry: its error is the command's, as before
        await verify_in_registries(both.bundle.path, [target("c.test")], 4, transport)


async def test_an_inventory_of_two_registries_holds_only_what_both_hold(source, tmp_path):  # noqa: F811
    _, _, transport = await two_registries(source, tmp_path)
    taken = await take_inventories([target("a.test"), target("b.test", "ha")], None, 4, http_transport=transport)
    assert [sorted(one.images) for one in taken] == [[APP, TOOL], [TOOL]]
    common = Inventory.common(taken)
    assert common.images == {TOOL: taken[1].images[TOOL]} and common.digests == taken[1].digests
    assert common.address == "a.test, b.test/ha"
    doc = json.loads(common.to_json())
    assert doc["format_version"] == 2 and doc["registries"] == ["a.test", "b.test/ha"]
    alone = json.loads(taken[0].to_json())  # one registry's file is as before: older mirrors read it
    assert alone["format_version"] == 1 and "registries" not in alone


async def test_a_delta_against_the_common_inventory_pushes_to_every_registry(source, tmp_path):  # noqa: F811
    _, registries, transport = await two_registries(source, tmp_path)
    taken = await take_inventories([target("a.test"), target("b.test", "ha")], None, 4, http_transport=transport)
    have = tmp_path / "have.json"
    have.write_bytes(Inventory.common(taken).to_json())
    base = load_base([have])  # read back: its id and registries checked
    assert list(base.registries.values()) == ["a.test, b.test/ha"]
    (tmp_path / "delta").mkdir()
    delta = await pulled(source, tmp_path / "delta", "lib/app:1.0", "lib/tool:2", base=base)
    assert delta.kind == "delta" and delta.omitted > 0
    reports = await push_all(PushRequest(delta.bundle.path, target("a.test"), also=(target("b.test", "ha"),),
                                         http_transport=transport), QUIET)
    assert [(r.failures, r.exit_code, r.warnings) for r in reports] == [({}, ExitCode.OK, [])] * 2
    assert "1.0" in registries["b.test"].tags["ha/src.test/lib/app"]


async def test_an_inventory_of_several_is_refused_when_its_registries_are_bad(source, tmp_path):  # noqa: F811
    _, _, transport = await two_registries(source, tmp_path)
    taken = await take_inventories([target("a.test"), target("b.test", "ha")], None, 4, http_transport=transport)
    doc = json.loads(Inventory.common(taken).to_json())
    doc["registries"] = ["a.test", "not a host"]
    have = tmp_path / "have.json"
    have.write_text(json.dumps(doc))
    with pytest.raises(Exception, match=r"registries\[1\]: expected HOST\[:PORT\]\[/PREFIX\]"):
        load_base([have])
