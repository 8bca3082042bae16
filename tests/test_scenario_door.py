"""The scenario door: scenarios reach the lab through it alone, and its changes undo themselves.

Statically, every scenario under tests/lab imports the lab through
``lab.scenario`` only, touches nothing private (``env._bed``), sends no
frame past the door (``traffic.inject``, ``traffic.converse``) and takes no
fixture of the plugin's own. At run time ``LabEnv.cmd`` refuses a command
that changes the guest, and every change the door makes is undone when the
test ends (on a fake guest, ``tests/fakebed.py``). Each rule is shown to
catch what it forbids.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lab import LabError
from lab.effects import effect
from lab.labenv import LabEnv
from lab.steps import Links, Load
from lab.testbed import Testbed
from tests.fakebed import FakeKernel, fake_testbed, kernel_of

SCENARIOS = Path(__file__).parent / "lab"
DOOR = "lab.scenario"
BYPASSES = {"inject", "converse"}  # traffic's senders: the door's send and converse keep
PLUGIN_FIXTURES = {"lab_testbed", "nta_loaded"}


def door_breaches(source: str, name: str) -> list[str]:
    """What in a scenario file goes around the door."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in ("lab", "pysniff") and node.module != DOOR:
                out.append(f"{name}:{node.lineno}: imports {node.module} (only {DOOR})")
        elif isinstance(node, ast.Import):
            out += [
                f"{name}:{node.lineno}: imports {a.name} (only {DOOR})"
                for a in node.names
                if a.name.split(".")[0] in ("lab", "pysniff")
            ]
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                out.append(f"{name}:{node.lineno}: reaches {node.attr}, behind the door")
            if node.attr in BYPASSES and getattr(node.value, "id", "") == "traffic":
                out.append(f"{name}:{node.lineno}: traffic.{node.attr} (env.send/converse keep)")
        elif isinstance(node, ast.FunctionDef):
            taken = {a.arg for a in node.args.args} & PLUGIN_FIXTURES
            out += [f"{name}:{node.lineno}: takes {f} (a scenario takes a door)" for f in taken]
    return out


def test_every_scenario_goes_through_the_door() -> None:
    files = sorted(SCENARIOS.glob("*.py"))
    assert len(files) >= 12
    found = [b for f in files for b in door_breaches(f.read_text(), f.name)]
    assert found == []


@pytest.mark.parametrize(
    ("planted", "found"),
    [
        ("from lab.labenv import LabEnv", "imports lab.labenv"),
        ("import lab.traffic", "imports lab.traffic"),
        ("from pysniff.report import SniffReport", "imports pysniff.report"),
        ("def f(env):\n    env._bed.cmd('rmmod nta')", "reaches _bed"),
        ("def f(nic, b):\n    traffic.inject(nic, b)", "traffic.inject"),
        ("def test_x(lab_testbed):\n    pass", "takes lab_testbed"),
    ],
)
def test_the_door_check_finds_a_breach(planted: str, found: str) -> None:
    assert any(found in b for b in door_breaches(planted, "t.py")), planted


@pytest.mark.parametrize(
    "command",
    [
        "cat /sys/kernel/debug/nta/stats",
        "dmesg | grep 'nta: unloaded' | tail -1",
        "cat /sys/class/net/eth0/ifindex 2>/dev/null",
        "ip -j -d link show",
        "tc -s qdisc show dev ntav0a",
        "ethtool -k eth0",
        "kill -0 42",
        "modinfo -F vermagic /b/nta.ko",
        "ip netns exec nta-other /b/ntadump -i 2 -c 1 -q",
        "setpriv --reuid=65534 --regid=65534 --clear-groups /b/ntadump -i eth0 -c 1 -q",
        "sleep 0.5",
        "grep -c '^nta ' /proc/modules",
        "grep 'a>b' /var/log/x",
    ],
)
def test_a_command_that_only_reads_passes(command: str) -> None:
    assert effect(command) is None


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("echo 1 > /sys/module/nta/parameters/fault_leak_every", "redirection"),
        ("for i in $(seq 9); do echo 3 > /sys/x; done", "redirection"),
        ("insmod /b/nta.ko attach=eth0", "insmod"),
        ("rmmod nta", "rmmod"),
        ("ip link set eth0 down", "ip link set"),
        ("ip link add ntabr0 type bridge", "ip link add"),
        ("ip -6 addr replace fd77::2/64 dev eth0 nodad", "ip addr replace"),
        ("ip neigh del 10.77.0.1 dev eth0", "ip neigh del"),
        ("ip netns add nta-other", "ip netns add"),
        ("sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0", "sysctl"),
        ("ethtool -K eth0 gro on", "ethtool"),
        ("ethtool -G eth0 rx 512", "ethtool"),
        ("tc qdisc add dev v0 root handle 1: tbf rate 1mbit burst 1600 latency 4s", "tc qdisc"),
        ("mountpoint -q /t || mount -t tracefs nodev /t", "mount"),
        ("kill -TERM 42", "kill"),
        ("sh -c ': < /dev/nta'", "sh -c"),
        ("dmesg -C", "dmesg"),
    ],
)
def test_a_command_that_changes_the_guest_is_refused_by_cmd(command: str, why: str) -> None:
    reason = effect(command)
    assert reason is not None and why in reason, (command, reason)
    env = LabEnv(fake_testbed_no_io(), "t")
    with pytest.raises(LabError, match=r"env\.act"):
        env.cmd(command)


def fake_testbed_no_io() -> Testbed:
    """A testbed no command reaches: cmd refuses before it would."""
    return object.__new__(Testbed)


# -- every change undone -----------------------------------------------------------------


@pytest.fixture
def bed(tmp_path: Path) -> Testbed:
    bed = fake_testbed(tmp_path)
    bed.load_run_module(tmp_path / "nta.ko", "attach=eth0,eth1")
    return bed


def test_every_change_of_a_test_is_undone_at_its_end(bed: Testbed) -> None:
    fake = kernel_of(bed)
    before = fake.facts_text()
    with LabEnv(bed, "t") as env:
        eth0, eth1 = env.nics
        env.module.set_param("max_shared", 64)
        env.module.set_param("max_shared", 32)  # put back once, to what the test found
        env.module.set_param("fault_no_protect", 1)
        env.set_gro(eth0, True)
        env.set_rps_cpus(eth1, "3")
        env.links_down([eth1])
        br = env.add_link("ntabr0", "type bridge")
        env.enslave(eth0, br)
        env.add_netns("nta-other")
        env.act("ip link add ntav0 type veth", undo="ip link del ntav0")
        env.write("/sys/class/net/eth0/queues/rx-0/rps_cpus", "1")
        assert fake.module is not None and fake.module["max_shared"] == "32"
        assert fake.links["eth0"].master == "ntabr0" and not fake.links["eth1"].up
    assert fake.facts_text() == before
    assert bed.departures(with_module=True) == []
    assert sum(c.endswith("/max_shared") and c.startswith("echo") for c in fake.commands) == 3


def test_unloading_in_a_test_schedules_the_reload(bed: Testbed) -> None:
    fake = kernel_of(bed)
    with LabEnv(bed, "t") as env:
        env.module.unload()
        assert fake.module is None
        env.module.load("attach=eth0")
        assert fake.module is not None and fake.module["attach"] == "eth0"
    assert fake.module is not None and fake.module["attach"] == "eth0,eth1"
    with LabEnv(bed, "t2") as env:
        assert env.module.rmmod().rc == 0
        failed = env.module.try_load("attach=eth0,nosuchdev")
        assert failed.rc == 0  # the fake takes any device: loaded, so unloaded at the end
        env.module.reload_with("")
    assert fake.module is not None and fake.module["attach"] == "eth0,eth1"
    assert bed.departures(with_module=True) == []


def test_without_the_undo_the_next_test_finds_the_guest_changed(bed: Testbed) -> None:
    """The check above can fail: a change made behind the door stays for the next test."""
    fake = kernel_of(bed)
    with LabEnv(bed, "t"):
        bed.nta.set_param("max_shared", 64)  # the testbed's form: nothing undoes it
        bed.net.set_gro(bed.nics[0], True)
    assert [str(d) for d in bed.departures(with_module=True)] == [
        "eth0 with GRO on",
        "max_shared parameter changed (64, the run's 2048)",
    ]
    assert isinstance(fake, FakeKernel)


def test_what_the_door_changes_is_in_the_test_journal(bed: Testbed) -> None:
    """Each change a test makes through the door is a step of its journal, in order, its
    undo too (the reproducer bundle replays them); the journal opens and closes with the
    door."""
    with LabEnv(bed, "test_x[e1000]") as env:
        journal = env.journal
        assert journal is not None and bed.journal is journal
        env.module.set_param("max_shared", 64)
        env.set_gro(env.nics[0], True)
        env.cmd("cat /sys/module/nta/parameters/max_shared")
    assert bed.journal is None
    steps = [s for s in journal.steps if not isinstance(s, Load | Links)]  # the start
    assert [type(s).__name__ for s in steps] == [
        "Param", "Command", "Command", "Command", "Param",
    ]  # fmt: skip
    assert [getattr(s, "cmd", "") for s in steps][1:4] == [
        "ethtool -K eth0 gro on",
        "cat /sys/module/nta/parameters/max_shared",
        "ethtool -K eth0 gro off",
    ]


# -- what a guest-wide scenario needs ----------------------------------------------------


def test_a_scenario_gets_the_nics_it_names(tmp_path: Path) -> None:
    env = LabEnv(fake_testbed(tmp_path, ("e1000", "e1000-cb0", "rtl8139")), "t")
    assert [n.name for n in env.needs_nics("e1000-cb0")] == ["e1000-cb0"]
    assert [n.name for n in env.needs_nics(driver="e1000", count=2)] == ["e1000", "e1000-cb0"]
    assert [n.name for n in env.needs_nics(count=2)] == ["e1000", "e1000-cb0"]


@pytest.mark.parametrize(
    ("names", "driver", "count", "says"),
    [
        (("e1000-cb0",), None, 0, "needs e1000-cb0; the guest has e1000, rtl8139"),
        ((), "e1000", 2, "needs 2 e1000; the guest has e1000, rtl8139"),
        ((), None, 3, "needs 3 NICs; the guest has e1000, rtl8139"),
    ],
)
def test_a_guest_without_the_nics_a_scenario_needs_says_so(
    tmp_path: Path, names: tuple[str, ...], driver: str | None, count: int, says: str
) -> None:
    """``ntalab run --nics e1000`` boots a guest that a two-NIC scenario cannot use: the
    error says what it needs and how to run it, where a lookup used to fail inside the test
    (StopIteration, IndexError)."""
    env = LabEnv(fake_testbed(tmp_path), "t")
    with pytest.raises(LabError, match=f"{says}: run it with --nics all"):
        env.needs_nics(*names, driver=driver, count=count)
