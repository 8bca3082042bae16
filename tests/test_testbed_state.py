"""The documented state a scenario starts from: read, compared, and put back.

``tests/data/guest-facts.txt`` is what ``GuestFacts.command`` printed in a
network namespace set up for the purpose with the host's iproute2 and
ethtool (the guest runs the host's userspace): eth0 as the lab sets a NIC up
(address, promiscuous, the host as permanent neighbour, GRO off), eth1 down
in a bridge with RPS on, and the bridge left over. NTA's part is written in
the format ``grep -H`` prints, as no NTA was loaded on that host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import InfraError
from lab.guestnet import GuestNic
from lab.nics import plan, variant
from lab.nta import Loaded
from lab.testbed import Departure, Documented, Drift, GuestFacts, RunModule, departures, describe
from tests.fakebed import FakeLink, fake_testbed, kernel_of

FACTS = Path(__file__).parent / "data" / "guest-facts.txt"


def lab_nics(tmp_path: Path) -> tuple[GuestNic, ...]:
    plans = plan([variant("e1000"), variant("rtl8139")], tmp_path)
    return tuple(GuestNic.of(p, f"eth{p.index}") for p in plans)


def test_the_facts_of_a_real_guest_state_read_as_they_are() -> None:
    facts = GuestFacts.parse(FACTS.read_text())
    assert set(facts.links) == {"lo", "eth0", "peer0", "eth1", "peer1", "ntabr1"}
    eth0, eth1 = facts.links["eth0"], facts.links["eth1"]
    assert (eth0.up, eth0.carrier, eth0.promisc, eth0.master) == (True, True, True, None)
    assert eth0.addresses == {"10.77.0.2/24"}
    assert (eth1.up, eth1.carrier, eth1.master) == (False, False, "ntabr1")
    assert facts.neighbours == {("eth0", "10.77.0.1", "52:54:00:4e:ff:01")}
    assert facts.netns == {"ntalab-facts"}
    assert facts.gro == {"eth0": False, "eth1": False}
    assert facts.rps == {"eth0": False, "eth1": True}
    assert facts.module == {"attach": "eth0,eth1", "fault_no_protect": "N", "max_shared": "64"}


def test_every_departure_is_named(tmp_path: Path) -> None:
    facts = GuestFacts.parse(FACTS.read_text())
    nics = lab_nics(tmp_path)
    doc = Documented(nics, frozenset({"lo", "eth0", "eth1", "peer0", "peer1"}), frozenset())
    assert departures(facts, doc) == [
        Departure(Drift.LEFTOVER_LINK, "ntabr1"),
        Departure(Drift.LEFTOVER_NETNS, "ntalab-facts"),
        Departure(Drift.LINK_DOWN, "eth1"),
        Departure(Drift.IN_BRIDGE, "eth1", "ntabr1"),
        Departure(Drift.NO_NEIGHBOUR, "eth1"),
        Departure(Drift.RPS_ON, "eth1"),
    ]
    values = {"attach": "eth0,eth1", "fault_no_protect": "N", "max_shared": "2048"}
    loaded = Loaded(Path("/b/nta.ko"), "attach=eth0,eth1")
    run = RunModule(loaded, values, frozenset({"fault_no_protect", "max_shared"}))
    with_module = departures(facts, Documented(nics, doc.links, doc.netns, run))
    assert with_module[-1] == Departure(Drift.NTA_PARAMETER, "max_shared", "64, the run's 2048")
    # A parameter only insmod sets differs: NTA was loaded otherwise.
    other = RunModule(run.loaded, {**values, "max_shared": "64", "attach": "eth0"}, run.writable)
    found = departures(facts, Documented(nics, doc.links, doc.netns, other))
    assert found[-1].drift is Drift.NTA_OTHER and found[-1].subject == "attach"
    assert str(found[0]) == "ntabr1 left over"
    restored = describe(found[2:4], "test_x")
    assert restored == "restored after test_x: eth1 down; eth1 in a bridge (ntabr1)"


def test_a_lab_nic_that_is_gone_is_the_labs_failure(tmp_path: Path) -> None:
    facts = GuestFacts.parse(FACTS.read_text())
    nics = (*lab_nics(tmp_path), GuestNic.of(plan([variant("e1000")], tmp_path)[0], "eth7"))
    with pytest.raises(InfraError, match="eth7"):
        departures(facts, Documented(nics, frozenset(facts.links), facts.netns))


def test_restore_puts_back_what_a_test_broke(tmp_path: Path) -> None:
    bed = fake_testbed(tmp_path)
    fake = kernel_of(bed)
    run = bed.load_run_module(tmp_path / "nta.ko", "attach=eth0,eth1")
    assert run.writable >= {"max_shared", "fault_uaf_on_close"} and "attach" not in run.writable
    assert bed.restore(with_module=True) == []
    fake.break_behind_the_door("eth1")
    fake.links["eth0"].gro = True
    found = bed.restore(with_module=True)
    assert [str(d) for d in found] == [
        "ntabr9 left over",
        "nta-left network namespace left over",
        "eth0 with GRO on",
        "eth1 down",
        "eth1 without the host as neighbour",
        "NTA not loaded",
    ]
    assert bed.departures(with_module=True) == []
    assert fake.module is not None and fake.module["attach"] == "eth0,eth1"
    assert "ntabr9" not in fake.links and fake.netns == set()
    # A parameter a test left changed is written back; NTA stays loaded.
    fake.module["max_shared"] = "64"
    assert [d.drift for d in bed.restore(with_module=True)] == [Drift.NTA_PARAMETER]
    assert fake.module["max_shared"] == "2048"
    assert not any(c.startswith("rmmod") for c in fake.commands[-5:])
    # One only insmod sets: NTA loaded anew, as the run loaded it.
    fake.module["attach"] = "eth0"
    assert [d.drift for d in bed.restore(with_module=True)] == [Drift.NTA_OTHER]
    assert fake.module["attach"] == "eth0,eth1"


def test_without_the_module_only_the_network_is_checked(tmp_path: Path) -> None:
    bed = fake_testbed(tmp_path)
    assert kernel_of(bed).module is None
    assert bed.restore(with_module=False) == []
    with pytest.raises(InfraError, match="before the run loaded it"):
        bed.restore(with_module=True)


def test_a_guest_that_cannot_be_put_back_is_the_labs_failure(tmp_path: Path) -> None:
    bed = fake_testbed(tmp_path)
    fake = kernel_of(bed)
    fake.links["ntabr9"] = FakeLink(up=True)
    fake.undeletable.add("ntabr9")
    with pytest.raises(InfraError, match=r"could not be put back .*: ntabr9 left over"):
        bed.restore(with_module=False)


def test_a_tunnel_modules_fallback_devices_are_the_kernels_own() -> None:
    """Loading ipip or ip_gre (a test making a tunnel does) creates tunl0, gre0, gretap0 and
    erspan0, which ``ip link del`` leaves in place: part of the guest, not left over. A
    tunnel with an endpoint, as a test makes one, is left over until deleted.

    tests/data/fallback-tunnels.json: the four as a debian-6.1 guest's ``ip -j -d`` printed
    them; the test's own tunnel is gre0 given the endpoints ``ip link add`` gives it."""
    fallback = json.loads((Path(__file__).parent / "data" / "fallback-tunnels.json").read_text())
    gre0 = next(e for e in fallback if e["ifname"] == "gre0")
    mine = {**gre0, "ifname": "ntagre0",
            "linkinfo": {"info_kind": "gre", "info_data": {"remote": "10.77.0.1",
                                                            "local": "10.77.0.2"}}}  # fmt: skip
    text = "\n@@ntalab-facts@@\n".join([json.dumps([*fallback, mine]), "[]", "", "", ""])
    facts = GuestFacts.parse(text)
    assert facts.kernel_own == {"tunl0", "gre0", "gretap0", "erspan0"}
    doc = Documented((), frozenset(), frozenset())
    assert departures(facts, doc) == [Departure(Drift.LEFTOVER_LINK, "ntagre0")]
