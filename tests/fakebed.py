"""A guest's network and NTA in memory, answering the shell commands the lab sends.

``FakeKernel`` stands in for the guest's console (``run``) for host tests of
the testbed, the scenario door and the plugin's restore: it keeps the
state those commands change (links, addresses, neighbours, namespaces,
GRO, RPS, the module and its parameters) and answers the reads, among
them ``GuestFacts.command``'s, in the formats the real tools print (JSON
as ``ip -j`` prints it; see tests/data/guest-facts.txt, captured from
the real tools). A command it does not know is an error that names it, so
a command the lab starts sending is noticed here, not mimicked silently.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from lab.accel import Accel
from lab.console import CmdResult, CommandFailed, Console
from lab.guest import Guest
from lab.guestnet import GuestNet, GuestNic
from lab.images import Kernel
from lab.kconfig import Features
from lab.nics import HOST_MAC, plan, variant
from lab.nta import DEBUGFS, PARAMS
from lab.testbed import Testbed
from pysniff.abi import ABI_VERSION, STATS_COUNTERS, STATS_LATER_COUNTERS

# NTA's parameters as its sysfs shows them after a plain load, and which a test may write.
NTA_PARAMS = {
    "node_order": "6", "pool_kb": "16384", "common_pool_kb": "4096", "max_shared": "2048",
    "ring_entries": "4096", "wakeup_frames": "256", "wakeup_usecs": "200000", "attach": "",
    "fault_leak_every": "0", "fault_drop_record_every": "0", "fault_no_protect": "N",
    "fault_trust_writers": "N", "fault_block_fallback": "N", "fault_uaf_on_close": "N",
}  # fmt: skip
READ_ONLY = {"node_order", "common_pool_kb", "ring_entries", "attach"}


@dataclass
class FakeLink:
    up: bool = False
    promisc: bool = False
    master: str | None = None
    addresses: set[str] = field(default_factory=set)
    gro: bool = True
    rps: str = "0"


@dataclass
class FakeKernel:
    """The guest's state as the lab's commands change it; ``run`` is the console."""

    links: dict[str, FakeLink] = field(default_factory=lambda: {"lo": FakeLink(up=True)})
    neighbours: set[tuple[str, str, str]] = field(default_factory=set)
    netns: set[str] = field(default_factory=set)
    module: dict[str, str] | None = None
    commands: list[str] = field(default_factory=list)  # every command run, in order
    undeletable: set[str] = field(default_factory=set)  # links whose deletion fails

    # -- the console --------------------------------------------------------------------

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> CmdResult:
        self.commands.append(command)
        if "@@ntalab-facts@@" in command:
            result = CmdResult(command, 0, self.facts_text(), "", 0.0)
        else:
            result = self._script(command)
        if check and result.rc != 0:
            raise CommandFailed(result)
        return result

    def _script(self, command: str) -> CmdResult:
        out: list[str] = []
        rc = 0
        for part in re.split(r"\s*(?:&&|;)\s*", command.strip()):
            if not part:
                continue
            try:
                out.append(self._one(shlex.split(part)))
            except _Failed as e:
                return CmdResult(command, 1, "\n".join(out), str(e), 0.0)
        return CmdResult(command, rc, "".join(f"{line}\n" for line in out if line), "", 0.0)

    def _one(self, w: list[str]) -> str:
        if w[:1] == ["echo"] and ">" in w:
            i = w.index(">")
            self._write(w[i + 1], " ".join(w[1:i]))
            return ""
        match w:
            case ["ip", "link", "set", iface, *opts]:
                self._set_link(self._link(iface), opts)
            case ["ip", "link", "add", name, *_]:
                self.links[name] = FakeLink()
            case ["ip", "link", "del", name]:
                self._link(name)
                if name in self.undeletable:
                    raise _Failed("RTNETLINK answers: Operation not supported")
                del self.links[name]
            case ["ip", "addr", "replace" | "add", address, "dev", iface]:
                self._link(iface).addresses.add(address)
            case ["ip", "neigh", "replace", ip, "lladdr", mac, "dev", iface, "nud", "permanent"]:
                self.neighbours.add((iface, ip, mac))
            case ["ip", "netns", "add", name]:
                self.netns.add(name)
            case ["ip", "netns", "del", name]:
                self.netns.discard(name)
            case ["ethtool", "-K", iface, "gro", onoff]:
                self._link(iface).gro = onoff == "on"
            case ["cat", *paths]:
                return "\n".join(self._read(p) for p in paths)
            case ["stat", "-c", "%n %a", _]:
                return "\n".join(
                    f"{PARAMS}/{n} {444 if n in READ_ONLY else 644}" for n in self._nta()
                )
            case ["insmod", _, *params]:
                self._insmod(params)
            case ["rmmod", "nta"]:
                self._nta()
                self.module = None
            case ["mountpoint", *_] | ["true"]:
                pass
            case ["dmesg", "|", "grep", "nta: version", "|", "tail", "-1"]:
                return f"[    1.0] nta: version 1 abi {ABI_VERSION} loaded"
            case _:
                raise AssertionError(f"the fake guest does not know this command: {w}")
        return ""

    # -- state ----------------------------------------------------------------------------

    def _link(self, iface: str) -> FakeLink:
        if iface not in self.links:
            raise _Failed(f'Cannot find device "{iface}"')
        return self.links[iface]

    def _set_link(self, link: FakeLink, opts: list[str]) -> None:
        for i, word in enumerate(opts):
            if word in ("up", "down"):
                link.up = word == "up"
                if not link.up:  # a link going down flushes its neighbours, permanent too
                    name = next(n for n, lk in self.links.items() if lk is link)
                    self.neighbours = {x for x in self.neighbours if x[0] != name}
            elif word == "promisc":
                link.promisc = opts[i + 1] == "on"
            elif word == "master":
                link.master = opts[i + 1]
            elif word == "nomaster":
                link.master = None

    def _nta(self) -> dict[str, str]:
        if self.module is None:
            raise _Failed("nta is not loaded")
        return self.module

    def _insmod(self, params: list[str]) -> None:
        if self.module is not None:
            raise _Failed("insmod: ERROR: could not insert module: File exists")
        values = dict(NTA_PARAMS)
        for p in params:
            name, _, value = p.partition("=")
            values[name] = value
        self.module = values

    def _read(self, path: str) -> str:
        if path.startswith(PARAMS + "/"):
            return self._nta()[path.rsplit("/", 1)[1]]
        if path == f"{DEBUGFS}/stats":
            self._nta()
            return "\n".join(f"{n} 0" for n in (*STATS_COUNTERS, *STATS_LATER_COUNTERS))
        m = re.fullmatch(r"/sys/class/net/([^/]+)/(carrier|operstate|queues/rx-0/rps_cpus)", path)
        if m is None:
            raise AssertionError(f"the fake guest does not know this file: {path}")
        link = self._link(m.group(1))
        return {
            "carrier": "1" if link.up else "0",
            "operstate": "up" if link.up else "down",
            "queues/rx-0/rps_cpus": link.rps,
        }[m.group(2)]

    def _write(self, path: str, value: str) -> None:
        if path.startswith(PARAMS + "/"):
            name = path.rsplit("/", 1)[1]
            if name in READ_ONLY or name not in self._nta():
                raise _Failed(f"{path}: Permission denied")
            boolean = NTA_PARAMS[name] in ("Y", "N")
            self._nta()[name] = {"1": "Y", "0": "N"}[value] if boolean else value
            return
        m = re.fullmatch(r"/sys/class/net/([^/]+)/queues/rx-0/rps_cpus", path)
        if m is None:
            raise AssertionError(f"the fake guest does not know this file: {path}")
        self._link(m.group(1)).rps = value

    def facts_text(self) -> str:
        """What ``GuestFacts.command`` prints in a guest in this state."""
        links = [
            {
                "ifname": name,
                "flags": [
                    *(["PROMISC"] if lk.promisc else []),
                    *(["UP", "LOWER_UP"] if lk.up else []),
                ],
                **({"master": lk.master} if lk.master else {}),
                "addr_info": [
                    {"family": "inet", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1])}
                    for a in sorted(lk.addresses)
                ],
            }
            for name, lk in self.links.items()
        ]
        neigh = [{"dst": ip, "dev": dev, "lladdr": mac, "state": ["PERMANENT"]}
                 for dev, ip, mac in sorted(self.neighbours)]  # fmt: skip
        per_nic = [
            f"@nic {n}\nFeatures for {n}:\ngeneric-receive-offload: {'on' if lk.gro else 'off'}"
            f"\nrps_cpus: {lk.rps}"
            for n, lk in self.links.items()
            if n.startswith("eth")
        ]
        module = (
            ["loaded", *(f"{k}:{v}" for k, v in self.module.items())]
            if (self.module is not None)
            else []
        )
        parts = [json.dumps(links), json.dumps(neigh), "\n".join(sorted(self.netns)),
                 "\n".join(per_nic), "\n".join(module)]  # fmt: skip
        return "".join(f"{p}\n@@ntalab-facts@@\n" for p in parts[:-1]) + parts[-1] + "\n"

    # -- as a test breaks it, behind the door -------------------------------------------

    def break_behind_the_door(self, iface: str) -> None:
        """What a test the door could not hold might leave: NTA unloaded, a parameter
        changed, a NIC down (its neighbour gone with it), a bridge and a namespace."""
        self.module = None
        self._set_link(self.links[iface], ["down"])
        self.links["ntabr9"] = FakeLink(up=True)
        self.netns.add("nta-left")


class _Failed(Exception):
    """A command the guest refused (its stderr)."""


def fake_testbed(outdir: Path, nic_names: tuple[str, ...] = ("e1000", "rtl8139")) -> Testbed:
    """A Testbed over a FakeKernel whose NICs are set up as the lab sets them up."""
    kernel = FakeKernel()
    plans = plan([variant(n) for n in nic_names], outdir)
    nics = [GuestNic.of(p, f"eth{p.index}") for p in plans]
    for nic in nics:
        kernel.links[nic.iface] = FakeLink(up=True, promisc=True, gro=False)
        kernel.links[nic.iface].addresses.add(nic.address)
        kernel.neighbours.add((nic.iface, nic.host_ip, HOST_MAC))
    outdir.mkdir(parents=True, exist_ok=True)
    console_log = outdir / "console.log"
    console_log.write_text("")
    features = Features(False, False, True, False, False, False)
    guest: Any = SimpleNamespace(
        sh=kernel, features=features, host_ends=[], outdir=outdir, new_splats=list,
        console_log=SimpleNamespace(path=console_log), save_dmesg=lambda: console_log,
        spec=SimpleNamespace(accel=Accel("tcg", "fake"), append=()),
    )  # fmt: skip
    net = GuestNet(cast(Console, kernel), features)
    fake = Kernel("fake", "0.0-fake", outdir / "vmlinuz", None, None)
    return Testbed(cast(Guest, guest), nics, net, fake, ",".join(nic_names), outdir)


def kernel_of(bed: Testbed) -> FakeKernel:
    sh = bed.guest.sh
    assert isinstance(sh, FakeKernel)
    return sh
