"""The lab's hold on one booted guest: its NICs and their host ends, NTA, the programs it
runs, and the documented state every scenario starts from.

The pytest plugin sets up one ``Testbed`` per guest and hands each scenario a
``lab.labenv.LabEnv`` over it: the door, whose every change undoes itself.
The testbed keeps the unrestricted forms (a shell, load and unload, links
down) for what is not a scenario: the session's set-up, the restore before
each test, the benchmark, a reproducer's replay.

**The documented state** a scenario starts from (``Documented``): every lab
NIC up, promiscuous, with carrier, its address and the host as permanent
neighbour, in no bridge, GRO and RPS off; no network interface or namespace
besides those the guest had once its NICs were set up; and for a scenario of
the module, NTA loaded from the run's build with the run's parameters, each
at its value. ``facts()`` reads all of it in one guest command,
``departures()`` says what differs, and ``restore()`` puts it back, each
departure named, so that a test that broke the guest is recorded, not
inherited by the next one.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from lab import InfraError, paths, traffic
from lab.console import CmdResult
from lab.events import EventLog
from lab.guest import Guest
from lab.guestnet import GuestNet, GuestNic
from lab.guestside.protocol import Request
from lab.images import Kernel
from lab.journal import Journal
from lab.kernlog import Splat
from lab.nics import HOST_MAC, HostEnd
from lab.nta import PARAMS, Loaded, NtaModule
from lab.records import RxCounts
from lab.spawn import GuestProc, Spawner
from lab.steps import Links, Load, Step


def guest_python() -> list[str]:
    """The command that runs one of the lab's Python modules in the guest (``+ [module]``).

    The guest sees the host's filesystem, so the host's interpreter and the
    lab's packages work there unchanged. One simple command (``env``, no
    ``cd &&``), so that run in the background its pid is the program's. The
    programs run this way (the spawner, and what it forks: pysniff and
    lab.guestside.*) use the standard library only, so they skip
    site-packages (-S) and find the lab's packages by PYTHONPATH.
    """
    return ["env", f"PYTHONPATH={paths.IMPORT_ROOT}", sys.executable, "-S", "-m"]


# -- the documented state ----------------------------------------------------------------


@dataclass(frozen=True)
class LinkFacts:
    """One network interface of the guest, as ``ip -j -d link`` and ``ip -j addr`` say."""

    up: bool
    carrier: bool
    promisc: bool
    master: str | None
    addresses: frozenset[str]  # IPv4, "a.b.c.d/len"


# Tunnel kinds whose module creates a fallback device as it loads (tunl0, gre0,
# gretap0, erspan0, sit0, ip6tnl0...): the kernel's own, with no endpoint, and
# ``ip link del`` leaves it in place. A test that makes a tunnel loads the module.
FALLBACK_TUNNELS = {
    "ipip", "gre", "gretap", "erspan", "sit", "ip6tnl", "ip6gre", "ip6gretap", "ip6erspan",
    "vti", "vti6",
}  # fmt: skip


def _kernel_own(entry: dict[str, Any]) -> bool:
    info = entry.get("linkinfo", {})
    remote = info.get("info_data", {}).get("remote", "any")
    return info.get("info_kind") in FALLBACK_TUNNELS and remote in ("any", "::")


@dataclass(frozen=True)
class GuestFacts:
    """What the guest's network and NTA look like now (read in one command)."""

    links: dict[str, LinkFacts]
    kernel_own: frozenset[str]  # tunnel modules' fallback devices: part of the guest
    neighbours: frozenset[tuple[str, str, str]]  # (device, address, lladdr), permanent ones
    netns: frozenset[str]
    gro: dict[str, bool]  # per lab NIC
    rps: dict[str, bool]  # per lab NIC: packet steering on (rps_cpus not all zero)
    module: dict[str, str] | None  # NTA's parameters and their values; None: not loaded

    @staticmethod
    def command(ifaces: Sequence[str]) -> str:
        """The one guest command ``parse`` reads, its parts apart by a separator line.

        Each program costs a fork and exec, a few hundred ms under TCG: two ``ip``
        and an ``ethtool`` per NIC; the rest is the shell's own (``read``, globs).
        """
        per_nic = [
            f"echo @nic {i}; ethtool -k {i}; "
            f"read -r r < /sys/class/net/{i}/queues/rx-0/rps_cpus; echo rps_cpus: $r"
            for i in ifaces
        ]
        parts = [
            "ip -j -d addr show",
            "ip -j neigh show nud permanent",
            'for f in /run/netns/*; do [ -e "$f" ] && echo "${f##*/}"; done; true',
            "; ".join(per_nic) or "true",
            "if [ -d /sys/module/nta ]; then echo loaded; for f in "
            f'{PARAMS}/*; do read -r v < "$f"; echo "${{f##*/}}:$v"; done; fi; true',
        ]
        return f"; echo {_SEP}; ".join(parts)

    @classmethod
    def parse(cls, text: str) -> GuestFacts:
        links_json, neigh_json, netns, per_nic, module = text.split(_SEP + "\n")
        links, kernel_own = {}, set()
        for entry in json.loads(links_json.strip() or "[]"):
            flags = set(entry.get("flags", []))
            name = entry["ifname"]
            links[name] = LinkFacts(
                up="UP" in flags,
                carrier="LOWER_UP" in flags,
                promisc="PROMISC" in flags,
                master=entry.get("master"),
                addresses=frozenset(
                    f"{a['local']}/{a['prefixlen']}"
                    for a in entry.get("addr_info", [])
                    if a.get("family") == "inet"
                ),
            )
            if _kernel_own(entry):
                kernel_own.add(name)
        neighbours = frozenset(
            (n["dev"], n["dst"], n.get("lladdr", ""))
            for n in json.loads(neigh_json.strip() or "[]")
        )
        gro, rps, nic = {}, {}, ""
        for line in per_nic.splitlines():
            key, _, value = line.partition(" " if line.startswith("@nic ") else ":")
            value = value.strip()
            if key == "@nic":
                nic = value
                gro[nic] = rps[nic] = True  # unread counts as on: it is put back
            elif key == "generic-receive-offload":
                gro[nic] = value != "off"  # "off [fixed]" where the driver cannot
            elif key == "rps_cpus":
                rps[nic] = not value or int(value.replace(",", ""), 16) != 0
        lines = module.splitlines()
        params = None
        if lines[:1] == ["loaded"]:
            params = dict(line.partition(":")[::2] for line in lines[1:])
        return cls(
            links=links,
            kernel_own=frozenset(kernel_own),
            neighbours=neighbours,
            netns=frozenset(line.strip() for line in netns.splitlines() if line.strip()),
            gro=gro,
            rps=rps,
            module=params,
        )


_SEP = "@@ntalab-facts@@"


@dataclass(frozen=True)
class RunModule:
    """NTA as the run loaded it: its build, its load parameters, every parameter's value
    then, and which of them a test may write."""

    loaded: Loaded
    values: dict[str, str]
    writable: frozenset[str]


@dataclass(frozen=True)
class Documented:
    """The state every scenario starts from (see the module's docstring)."""

    nics: tuple[GuestNic, ...]
    links: frozenset[str]  # every interface the guest had once its NICs were set up
    netns: frozenset[str]
    module: RunModule | None = None  # None: the module's state is not part of it


class Drift(StrEnum):
    """How the guest differs from its documented state."""

    LINK_DOWN = "down"
    NO_CARRIER = "without carrier"
    NOT_PROMISC = "not promiscuous"
    IN_BRIDGE = "in a bridge"
    NO_ADDRESS = "without its address"
    NO_NEIGHBOUR = "without the host as neighbour"
    GRO_ON = "with GRO on"
    RPS_ON = "with RPS on"
    LEFTOVER_LINK = "left over"
    LEFTOVER_NETNS = "network namespace left over"
    NTA_UNLOADED = "not loaded"
    NTA_PARAMETER = "parameter changed"
    NTA_OTHER = "loaded otherwise than the run loaded it"


@dataclass(frozen=True)
class Departure:
    """One way the guest differs from its documented state, and what it concerns."""

    drift: Drift
    subject: str  # an interface, a namespace, "NTA", or an NTA parameter
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.subject} {self.drift.value}" + (f" ({self.detail})" if self.detail else "")


def departures(facts: GuestFacts, doc: Documented) -> list[Departure]:
    """Everything in which ``facts`` differ from ``doc``, leftovers first."""
    leftover = set(facts.links) - doc.links - facts.kernel_own
    out = [Departure(Drift.LEFTOVER_LINK, n) for n in sorted(leftover)]
    out += [Departure(Drift.LEFTOVER_NETNS, n) for n in sorted(facts.netns - doc.netns)]
    for nic in doc.nics:
        link = facts.links.get(nic.iface)
        if link is None:
            raise InfraError(f"the guest's {nic.iface} ({nic.name}) is gone")
        checks = [
            (not link.up, Drift.LINK_DOWN, ""),
            (link.up and not link.carrier, Drift.NO_CARRIER, ""),
            (not link.promisc, Drift.NOT_PROMISC, ""),
            (link.master is not None, Drift.IN_BRIDGE, link.master or ""),
            (nic.address not in link.addresses, Drift.NO_ADDRESS, nic.address),
            ((nic.iface, nic.host_ip, HOST_MAC) not in facts.neighbours, Drift.NO_NEIGHBOUR, ""),
            (facts.gro.get(nic.iface, True), Drift.GRO_ON, ""),
            (facts.rps.get(nic.iface, True), Drift.RPS_ON, ""),
        ]
        out += [Departure(drift, nic.iface, detail) for broken, drift, detail in checks if broken]
    run = doc.module
    if run is None:
        return out
    if facts.module is None:
        return [*out, Departure(Drift.NTA_UNLOADED, "NTA")]
    if set(facts.module) != set(run.values):
        return [*out, Departure(Drift.NTA_OTHER, "NTA", "not the run's parameters")]
    for name, value in sorted(facts.module.items()):
        if value != run.values[name]:
            drift = Drift.NTA_PARAMETER if name in run.writable else Drift.NTA_OTHER
            out.append(Departure(drift, name, f"{value}, the run's {run.values[name]}"))
    return out


# -- the testbed ---------------------------------------------------------------------------


class Testbed:
    """One booted guest, its lab NICs set up, for a session (see the module's docstring)."""

    __test__ = False  # a test module importing it is not to collect it

    def __init__(
        self,
        guest: Guest,
        nics: Sequence[GuestNic],
        net: GuestNet,
        kernel: Kernel,
        nic_set: str,
        outdir: Path,
        events: EventLog | None = None,
    ) -> None:
        self.guest = guest
        self.nics = tuple(nics)
        self.net = net
        self.nta = NtaModule(guest.sh, net)
        self.kernel = kernel
        self.nic_set = nic_set
        self.outdir = outdir
        self.events = events
        self._ends: dict[int, HostEnd] = dict(enumerate(guest.host_ends))
        self._spawner: Spawner | None = None
        self.journal: Journal | None = None  # the current test's (``open_journal``)
        facts = self.facts()
        self.documented = Documented(self.nics, frozenset(facts.links), facts.netns)
        self.run_module: RunModule | None = None
        self.last_test = ""  # the test that ran last, whom a departure is put down to

    @classmethod
    def up(
        cls, guest: Guest, kernel: Kernel, nic_set: str, events: EventLog | None = None
    ) -> Testbed:
        """The testbed of a booted guest, its NICs set up."""
        net = GuestNet(guest.sh, guest.features)
        nics = net.setup(guest.nics, promisc=True)
        return cls(guest, nics, net, kernel, nic_set, guest.outdir, events)

    def close(self) -> None:
        """Ends the guest programs the lab started (a guest that powers off ends them too;
        a fake guest on the host would not)."""
        if self._spawner is not None:
            self._spawner.stop()
            self._spawner = None

    # -- the journal --------------------------------------------------------------------

    def open_journal(self, test: str) -> Journal:
        """A journal for ``test``, which the choke points record into until
        ``close_journal``: every frame sent (the host ends), the module's loads, unloads and
        parameters, the links' changes. It begins with the state the test starts from."""
        safe = test.replace("/", "_").replace("[", "-").rstrip("]")
        journal = Journal(test, self.outdir, self.outdir / "journal" / safe, self._start())
        self._attach(journal)
        return journal

    def close_journal(self) -> None:
        journal = self.journal
        self._attach(None)
        if journal is not None:
            journal.close()

    @contextlib.contextmanager
    def journaled(self, name: str) -> Iterator[Journal]:
        """A journal open for the block (a replay's: not a scenario's door)."""
        journal = self.open_journal(name)
        try:
            yield journal
        finally:
            self.close_journal()

    def record(self, step: Step) -> None:
        """A step the choke points below cannot see (a command, a program), into the open
        journal."""
        if self.journal is not None:
            self.journal.add(step)

    def _start(self) -> list[Step]:
        """What a test begins with, as steps: the module the session loaded (then the links
        bounced, as every load here does)."""
        if self.nta.loaded is None:
            return []
        names = tuple(n.name for n in self.nics)
        loaded = self.nta.loaded
        bounce = [Links(names, up=False), Links(names, up=True)] if names else []
        return [Load(str(loaded.module), loaded.params), *bounce]

    def _attach(self, journal: Journal | None) -> None:
        self.journal = journal
        self.nta.journal = journal
        self.net.journal = journal
        for end in self._ends.values():
            end.journal = journal

    # -- the guest ----------------------------------------------------------------------

    def cmd(self, command: str, timeout: float = 60.0, check: bool = True) -> CmdResult:
        """A shell command in the guest, unrestricted (not journaled: the door records
        what a test runs)."""
        return self.guest.sh.run(command, timeout=timeout, check=check)

    def new_splats(self) -> list[Splat]:
        return self.guest.new_splats()

    def spawn(
        self, name: str, module: str, args: Sequence[str], ready: bool = False,
        out: Path | None = None,
    ) -> GuestProc:  # fmt: skip
        """One of the lab's stdlib-only programs (pysniff, lab.guestside.*) in the guest.

        Forked from a warm interpreter (lab.guestside.spawner): it runs within
        milliseconds, where a fresh Python takes seconds under TCG. Its stdout
        goes to ``out`` (default ``<outdir>/<name>.out``), its stderr to
        ``<outdir>/<name>.log``; with ``ready`` it is given a ready file
        (``GuestProc.wait_ready``).
        """
        if self._spawner is None:
            self._spawner = Spawner(self.guest.sh, guest_python(), self.outdir / "spawner")
        out = out or self.outdir / f"{name}.out"
        log = self.outdir / f"{name}.log"
        return self._spawner.spawn(name, module, args, out, log, ready)

    def start(
        self, name: str, request: Request, ready: bool = False, out: Path | None = None
    ) -> GuestProc:
        """A guest program from its typed request (``lab.guestside.protocol``)."""
        return self.spawn(name, request.MODULE, request.to_argv(), ready, out)

    # -- traffic --------------------------------------------------------------------------

    def send(
        self, nic: GuestNic, frames: Sequence[bytes], rate: float | None
    ) -> traffic.InjectResult:
        """Frames into ``nic`` from its host end, at ``rate`` frames/s (None: as fast as
        it takes them)."""
        return traffic.inject(self._ends[nic.index], frames, rate)

    def sustained(
        self, nic: GuestNic, frames: Sequence[bytes], rate: float | None
    ) -> contextlib.AbstractContextManager[traffic.Sustained]:
        """``frames`` sent into ``nic`` over and over from a thread until the block ends."""
        return traffic.sustained(self._ends[nic.index], frames, rate)

    def converse(
        self,
        nic: GuestNic,
        frames: Sequence[bytes],
        count: int,
        want: Callable[[bytes], bool],
        rate: float | None,
        timeout: float,
        quiet: float | None,
    ) -> list[bytes]:
        return traffic.converse(self._ends[nic.index], frames, count, want, rate, timeout, quiet)

    def rx(self, nic: GuestNic) -> RxCounts:
        return self.net.rx_counts(nic)

    # -- the documented state ------------------------------------------------------------

    def facts(self) -> GuestFacts:
        command = GuestFacts.command([n.iface for n in self.nics])
        return GuestFacts.parse(self.cmd(command).stdout)

    def load_run_module(self, module: Path, params: str) -> RunModule:
        """NTA loaded for the run (every NIC bounced: rings refill from its chunks); from
        now on part of the documented state, as loaded."""
        self.nta.load(module, params, bounce=self.nics)
        assert self.nta.loaded is not None
        modes = self.cmd(f"stat -c '%n %a' {PARAMS}/*").stdout.split("\n")
        writable = frozenset(
            Path(path).name for path, mode in (line.split() for line in modes if line)
            if int(mode[0]) & 2
        )  # fmt: skip
        facts = self.facts()
        assert facts.module is not None
        self.run_module = RunModule(self.nta.loaded, facts.module, writable)
        return self.run_module

    def departures(self, with_module: bool) -> list[Departure]:
        """What differs from the documented state (with the module's, if ``with_module``)."""
        doc = self.documented
        if with_module:
            if self.run_module is None:
                raise InfraError("NTA's state is asked for before the run loaded it")
            doc = Documented(doc.nics, doc.links, doc.netns, self.run_module)
        return departures(self.facts(), doc)

    def restore(self, with_module: bool) -> list[Departure]:
        """Puts back whatever differs from the documented state (with the module's, if
        ``with_module``); what differed. An InfraError if it still differs after."""
        found = self.departures(with_module)
        if not found:
            return []
        subjects = {d.subject for d in found}
        for d in found:
            if d.drift is Drift.LEFTOVER_LINK:
                self.cmd(f"ip link del {d.subject}", check=False)  # a veth's peer went with it
            elif d.drift is Drift.LEFTOVER_NETNS:
                self.cmd(f"ip netns del {d.subject}")
        broken = [n for n in self.nics if n.iface in subjects]
        if broken:
            self.net.reset(broken)
        drifts = {d.drift for d in found}
        run = self.run_module
        if run is not None and drifts & {Drift.NTA_UNLOADED, Drift.NTA_OTHER}:
            # Not NTA, or NTA loaded otherwise (a parameter only insmod sets): loaded anew.
            if Drift.NTA_OTHER in drifts:
                self.cmd("rmmod nta")
            self.nta.load(run.loaded.module, run.loaded.params, bounce=self.nics)
        elif run is not None:
            for d in found:
                if d.drift is Drift.NTA_PARAMETER:
                    self.nta.set_param(d.subject, _param_value(run.values[d.subject]))
        left = self.departures(with_module)
        if left:
            raise InfraError(
                "the guest could not be put back in its documented state: "
                + "; ".join(map(str, left))
            )
        return found


def _param_value(text: str) -> int:
    """A parameter's value as read (Y/N for a bool) as ``NtaModule.set_param`` writes it."""
    return int(text == "Y") if text in ("Y", "N") else int(text)


def describe(found: Sequence[Departure], after: str) -> str:
    """The record of a restore: what was put back, and after which test."""
    return f"restored after {after or 'the set-up'}: " + "; ".join(map(str, found))
