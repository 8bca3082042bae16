"""A test's journal, recorded at the choke points, and the bundle that replays it, without a VM.

The guest is tests/data/fakeguest (a local bash) with two NICs whose QEMU
end is a ``Wire`` here: it keeps every frame that arrives, in order, and
sends it back (what ``traffic.converse`` waits for). The kernel-facing
commands the module and the links need (insmod, rmmod, ip, dmesg, the
carrier files, the module's parameters) are stand-ins in that shell, which
log what they were asked, so nothing touches the host's kernel.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab import UsageError, kconfig, nics, repro, traffic
from lab.accel import Accel
from lab.guest import Guest, GuestSpec
from lab.guestnet import GuestNet, GuestNic
from lab.guestside.protocol import TcpListen
from lab.images import Kernel
from lab.journal import JOURNAL_FILE, Journal
from lab.labenv import LabEnv, Pace
from lab.nta import NtaModule
from lab.steps import Command, Frames, JournalFile, Links, Load, Param, Spawn, Step, Unload
from lab.testbed import Testbed
from pysniff.abi import ABI_VERSION
from tests.conftest import FAKE_GUEST


class Wire:
    """QEMU's end of each NIC's socket: what arrived, NIC by NIC, in order; echoed back."""

    def __init__(self, plans: list[nics.NicPlan]) -> None:
        self.plans = plans
        self.socks = []
        for plan in plans:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind(str(plan.guest_sock))
            self.socks.append(s)
        self.got: dict[str, list[bytes]] = {p.variant.name: [] for p in plans}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select(self.socks, [], [], 0.05)
            for s in readable:
                plan = self.plans[self.socks.index(s)]
                frame = s.recv(65536)
                self.got[plan.variant.name].append(frame)
                s.sendto(frame, str(plan.host_sock))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.socks:
            s.close()


# What the lab does to a guest's kernel, done to files in the fake guest: each stand-in logs
# its call, the module's parameters are files, every carrier is up.
STANDINS = """\
insmod() {{ echo "insmod $*" >> {log}; }}
rmmod() {{ echo "rmmod $*" >> {log}; }}
mountpoint() {{ return 0; }}
ip() {{ echo "ip $*" >> {log}; }}
dmesg() {{ echo "[    1.000000] nta: version test abi {abi} loaded"; }}
cat() {{ case "$1" in /sys/class/net/*/carrier) for _ in "$@"; do echo 1; done ;;
  /dev/kmsg) ;; *) command cat "$@" ;; esac; }}
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Kernel:
    """A kernel with everything the lab needs, drivers too (it is never booted)."""
    config = tmp_path / "config"
    needs = [n.options[0] for n in kconfig.REQUIRED] + list(kconfig.DRIVERS.values())
    config.write_text("".join(f"{o}=y\n" for o in needs))
    return Kernel("fake", "0.0-fake", tmp_path / "vmlinuz", None, config)


Make = Callable[[str], tuple[Testbed, Wire]]


@pytest.fixture
def make_env(kernel: Kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Make]:
    """Fake guests with an e1000 and an rtl8139 each, on their wires: (testbed, wire)."""
    params = tmp_path / "params"
    params.mkdir()
    (params / "max_shared").write_text("128\n")
    monkeypatch.setattr("lab.nta.PARAMS", str(params))
    opened: list[tuple[Guest, Testbed, Wire]] = []
    state = tmp_path / "boots"
    state.mkdir()

    def make(name: str) -> tuple[Testbed, Wire]:
        variants = (nics.VARIANTS["e1000"], nics.VARIANTS["rtl8139"])
        spec = GuestSpec(kernel, variants, Accel("tcg", "test"), name=name)
        guest = Guest(spec, tmp_path / name, launcher=[str(FAKE_GUEST / "vng"), str(state), "ok"])
        guest.__enter__()
        wire = Wire(guest.nics)
        log = tmp_path / name / "effects.log"
        guest.sh.run(STANDINS.format(log=log, abi=ABI_VERSION))
        net = GuestNet(guest.sh, guest.features)
        gnics = [GuestNic.of(p, f"fake{p.index}") for p in guest.nics]
        bed = Testbed(guest, gnics, net, kernel, "e1000,rtl8139", guest.outdir)
        opened.append((guest, bed, wire))
        return bed, wire

    yield make
    for guest, env, wire in opened:
        env.close()
        wire.close()
        guest.close()


def effects(bed: Testbed) -> list[str]:
    """What the stand-ins were asked to change (the testbed's reads of its state left out)."""
    path = bed.outdir / "effects.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if not line.startswith("ip -j ")]


def scenario(env: LabEnv, bed: Testbed, module: Path) -> dict[str, list[bytes]]:
    """Frames by every path, the module loaded and a parameter set mid-test, commands and a
    program; what it sent, by NIC. (The module is the testbed's: this one is no run's.)"""
    e1000, rtl = env.nics
    a0, a1 = env.addrs(e1000), env.addrs(rtl)
    first = traffic.frames(1, 20, a0, ("udp4", "tcp4"))
    env.send(e1000, first, Pace.FLAT_OUT)
    bed.nta.load(module, "attach=fake0,fake1", bounce=bed.nics)
    bed.nta.set_param("max_shared", 64)
    threaded = traffic.frames(2, 12, a1)
    begun, go = threading.Event(), threading.Event()

    def held() -> Iterator[bytes]:  # the sender is still at it while the test goes on
        yield threaded[0]
        begun.set()
        go.wait(10)
        yield from threaded[1:]

    sender = threading.Thread(target=bed.send, args=(rtl, held(), 1000.0))
    sender.start()
    begun.wait(10)
    env.cmd("echo under-fire > /dev/null")
    go.set()
    sender.join()
    env.bkg("listen", TcpListen("127.0.0.1", 0), ready=True)
    pings = [traffic.echo_request(a0, 7, i, b"ping") for i in range(5)]
    replies = env.converse(e1000, pings, len(pings), lambda _f: True, Pace.FLAT_OUT, timeout=10)
    assert len(replies) == len(pings)  # the wire echoes: the conversation ran its course
    assert bed.nta.rmmod().rc == 0
    return {"e1000": first + pings, "rtl8139": threaded}


def without_t(steps: list[Step]) -> list[Step]:
    return [replace(s, t=0.0) for s in steps]


LISTEN = ("--address", "127.0.0.1", "--port", "0")


def expected(module: str) -> list[Step]:
    both = ("e1000", "rtl8139")
    return [
        Frames("e1000", "000-e1000.pcap", 20, None),
        Load(module, "attach=fake0,fake1"),
        Links(both, up=False),
        Links(both, up=True),
        Param("max_shared", 64),
        Frames("rtl8139", "005-rtl8139.pcap", 12, 1000.0, background=True),
        Command("echo under-fire > /dev/null"),
        Spawn("listen", "lab.guestside.tcplisten", LISTEN, True),
        Frames("e1000", "008-e1000.pcap", 5, None),
        Unload(),
    ]


def test_every_path_lands_in_the_journal_in_order(make_env: Make, tmp_path: Path) -> None:
    bed, wire = make_env("g0")
    module = tmp_path / "nta.ko"
    module.write_bytes(b"\x7fELF module")
    with LabEnv(bed, "scenario[e1000]") as env:
        sent = scenario(env, bed, module)
    journal = env.journal
    assert journal is not None
    assert without_t(journal.steps) == expected(str(module))
    assert wire.got == sent  # and the journal's pcaps hold exactly what went
    for step in journal.steps:
        if isinstance(step, Frames):
            frames = traffic.read_pcap(journal.directory / step.pcap)
            assert len(frames) == step.count
    pcaps = [traffic.read_pcap(journal.directory / s.pcap) for s in journal.steps
             if isinstance(s, Frames)]  # fmt: skip
    assert pcaps == [sent["e1000"][:20], sent["rtl8139"], sent["e1000"][20:]]
    saved = JournalFile.from_dict(json.loads((journal.directory / JOURNAL_FILE).read_text()))
    assert saved.steps == journal.steps and saved.outdir == str(bed.outdir)
    neigh = "ip neigh replace 10.77.{0}.1 lladdr 52:54:00:4e:ff:01 dev fake{0} nud permanent"
    assert effects(bed) == [
        f"insmod {module} attach=fake0,fake1",
        "ip link set fake0 down",
        "ip link set fake1 down",
        "ip link set fake0 up",
        neigh.format(0),
        "ip link set fake1 up",
        neigh.format(1),
        "rmmod nta",
    ]


def test_a_bundle_replays_the_same_frames_in_the_same_order_with_the_same_parameters(
    make_env: Make, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bed, _ = make_env("g0")
    module = tmp_path / "nta.ko"
    module.write_bytes(b"\x7fELF module")
    with LabEnv(bed, "scenario[e1000]") as env:
        sent = scenario(env, bed, module)
    assert env.journal is not None
    root = repro.write(bed, "scenario[e1000]", env.journal, "it failed", tmp_path / "repro")
    assert (root / "nta.ko").read_bytes() == module.read_bytes()
    bundle = repro.load(root)
    assert without_t(bundle.steps) == expected("nta.ko")

    again, replayed = make_env("g1")  # a fresh guest, results elsewhere
    capsys.readouterr()
    repro._drive(again, bundle, root)
    assert replayed.got == sent
    assert effects(again) == [line.replace(str(module), str(root / "nta.ko"))
                              for line in effects(bed)]  # fmt: skip
    replay_dir = again.outdir / "journal" / "replay-g0-scenario-e1000"
    done = JournalFile.from_dict(json.loads((replay_dir / JOURNAL_FILE).read_text()))
    unnamed = [replace(s, pcap="") if isinstance(s, Frames) else s for s in done.steps]
    assert without_t(unnamed) == [
        Frames("e1000", "", 20, None),
        Load(str(root / "nta.ko"), "attach=fake0,fake1"),
        Links(("e1000", "rtl8139"), up=False),
        Links(("e1000", "rtl8139"), up=True),
        Param("max_shared", 64),
        Frames("rtl8139", "", 12, 1000.0, background=True),
        Command("echo under-fire > /dev/null"),
        Spawn("listen", "lab.guestside.tcplisten", LISTEN, True),
        Frames("e1000", "", 5, None),
        Unload(),
    ]
    log = [re.sub(r"\[ *\d+ \+ *[\d.]+s\]", "[]", line) for line in capsys.readouterr().out
           .splitlines()]  # fmt: skip
    assert log[0] == "  [] fake0 (e1000): 20 frames, as fast as taken, from 000-e1000.pcap: 20 sent"
    assert log[5] == ("  [] fake1 (rtl8139): 12 frames, 1000/s, from 005-rtl8139.pcap (background)")


def test_the_journal_check_fails_when_a_choke_point_stops_recording(
    make_env: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each choke point planted silent in turn: the check above sees what is missing."""
    module = tmp_path / "nta.ko"
    module.write_bytes(b"\x7fELF module")
    plants: dict[str, tuple[object, str]] = {
        "frames": (nics.HostEnd, "_record"),
        "module": (NtaModule, "_record"),
        "commands": (LabEnv, "_record"),
    }
    for n, (name, (owner, method)) in enumerate(plants.items()):
        with monkeypatch.context() as m:
            m.setattr(owner, method, lambda *_a, **_k: None)
            bed, _ = make_env(f"planted-{n}")
            with LabEnv(bed, f"planted-{name}") as env:
                scenario(env, bed, module)
            assert env.journal is not None
            with pytest.raises(AssertionError):
                assert without_t(env.journal.steps) == expected(str(module)), name


def test_a_test_begins_with_the_module_the_session_loaded(make_env: Make, tmp_path: Path) -> None:
    bed, _ = make_env("g0")
    bed.nta.load(tmp_path / "nta.ko", "attach=fake0")
    with LabEnv(bed, "first") as env:
        pass
    journal = env.journal
    assert journal is not None
    both = ("e1000", "rtl8139")
    assert without_t(journal.steps) == [
        Load(str(tmp_path / "nta.ko"), "attach=fake0"),
        Links(both, up=False),
        Links(both, up=True),
    ]


def test_one_burst_sent_in_a_loop_is_one_pcap(tmp_path: Path) -> None:
    journal = Journal("t", tmp_path, tmp_path / "j")
    for _ in range(3):
        with journal.frames("e1000", 250.0) as batch:
            batch.add(b"x" * 60)
            batch.add(b"y" * 60)
    with journal.frames("e1000", None):
        pass  # a call that sent nothing leaves no step
    done = journal.close()
    assert [s.pcap for s in done.steps if isinstance(s, Frames)] == ["000-e1000.pcap"] * 3
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["000-e1000.pcap", JOURNAL_FILE]


def test_an_old_bundle_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old = {
        "test": "x", "kernel": "debian-6.1", "release": "6.1", "nic_set": "e1000",
        "accel": "tcg", "append": [], "module": "nta.ko", "module_params": "",
        "injected": [{"nic": "e1000", "pcap": "000-a.pcap"}], "reason": "", "commands": [],
    }  # fmt: skip
    (tmp_path / repro.BUNDLE_FILE).write_text(json.dumps(old))
    with pytest.raises(UsageError, match=r"older lab .*run the test again"):
        repro.load(tmp_path)
    bad = {"format": repro.FORMAT, "steps": [{"kind": "reboot"}]}
    (tmp_path / repro.BUNDLE_FILE).write_text(json.dumps(bad))
    with pytest.raises(UsageError, match="unknown journal step 'reboot'"):
        repro.load(tmp_path)
