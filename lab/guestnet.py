"""Guest networking: the lab's NICs as the guest sees them, set up and driven from its shell.

Each NIC gets its driver loaded, its interface found by MAC and driver,
IPv6 off (the guest then sends nothing unasked), GRO off (one frame on the
wire is one skb, the unit every receiver here counts), VLAN stripping off
where the driver allows (the NIC hands the frame over as sent; the core
still moves the tag out of the data and receivers put it back), promiscuous
mode, an address in its own subnet and the host as a permanent neighbour.

e1000 and e1000-cb0 share the e1000 driver, whose copybreak is module-wide
but read for every frame and writable: ``use`` sets the driver parameters
of the NIC a test is about to use (the NICs sharing the driver are idle
meanwhile).

A NIC on QEMU's user-mode network (the benchmark's web and bulk loads) is
not one of the lab's: it has no host end, and QEMU's slirp answers ARP for
its gateway. ``adopt`` finds and sets it up as the lab's own NICs are, and
links, bounces and counters treat both kinds alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lab import LabError
from lab.console import Console
from lab.journal import Journal
from lab.kconfig import Features
from lab.nics import HOST_MAC, NicPlan, NicVariant, find_iface_cmd
from lab.records import RxCounts
from lab.steps import Command, Links
from lab.wait import wait_until

# e1000 reports carrier from its watchdog, up to 2 s after the link is set up.
CARRIER_S = 30.0


@dataclass(frozen=True)
class GuestNic:
    """One lab NIC: its variant, its interface in the guest, its addresses.

    Its host end (where frames are sent from) is the testbed's: a scenario
    sends through ``LabEnv.send``, which keeps what it sent.
    """

    variant: NicVariant
    iface: str
    mac: str
    guest_ip: str
    host_ip: str
    index: int

    @property
    def name(self) -> str:
        """The variant's name (e1000, rtl8139, e1000-cb0): how reports name the NIC."""
        return self.variant.name

    @property
    def rate(self) -> float | None:
        """Frames/s that exact-count tests inject at (None: the NIC's own back-pressure)."""
        return self.variant.lossless_rate

    @property
    def flow_control(self) -> bool:
        return self.variant.flow_control

    @property
    def address(self) -> str:
        """Its address in the guest, with the prefix (its own /24)."""
        return f"{self.guest_ip}/24"

    @classmethod
    def of(cls, plan: NicPlan, iface: str) -> GuestNic:
        return cls(plan.variant, iface, plan.mac, plan.guest_ip, plan.host_ip, plan.index)


@dataclass(frozen=True)
class UserNic:
    """A NIC on QEMU's user-mode network, set up by ``GuestNet.adopt``."""

    iface: str
    mac: str
    guest_ip: str
    name: str = "user"


# What links, bounces and counters work on: either kind of NIC.
Link = GuestNic | UserNic


class GuestNet:
    """The guest's side of the lab NICs, through its console."""

    def __init__(self, sh: Console, features: Features) -> None:
        self.sh = sh
        self.features = features
        # (driver, parameter) -> the value set in the guest now, and at boot.
        self._params: dict[tuple[str, str], str] = {}
        self._defaults: dict[tuple[str, str], str] = {}
        self.journal: Journal | None = None  # a test's (LabEnv.test_scope): links down and up

    def setup(self, plans: Sequence[NicPlan], promisc: bool = True) -> list[GuestNic]:
        """Every NIC up and configured; in plan order."""
        loaded: set[str] = set()
        out = []
        for plan in plans:
            v = plan.variant
            if v.driver not in loaded:
                self.sh.run(f"modprobe {v.driver}")
                loaded.add(v.driver)
            found = self.sh.run(find_iface_cmd(plan.mac, v.driver)).stdout.split()
            if len(found) != 1:
                listing = self.sh.run(
                    "for d in /sys/class/net/*; do echo $d $(cat $d/address) "
                    "$(readlink -f $d/device/driver); done",
                    check=False,
                ).stdout
                raise LabError(
                    f"NIC {v.name} (mac {plan.mac}) has no interface bound to {v.driver} "
                    f"in the guest; interfaces:\n{listing}"
                )
            nic = GuestNic.of(plan, found[0])
            self.configure(nic.iface, nic.address, promisc)
            self.sh.run(self._neighbour_cmd(nic))
            out.append(nic)
        self._read_driver_defaults({n.variant for n in out})
        # Each driver starts with the settings of its first NIC: a guest of one
        # variant (``ntalab boot --nics e1000-cb0``) is set up for it.
        for driver in dict.fromkeys(n.variant.driver for n in out):
            self.use(next(n for n in out if n.variant.driver == driver))
        return out

    def adopt(self, mac: str, driver: str, guest_ip: str, name: str = "user") -> UserNic:
        """A user-mode network NIC, found by MAC and driver, set up as the lab's NICs are
        (not promiscuous: it only ever receives its own traffic)."""
        found = self.sh.run(find_iface_cmd(mac, driver)).stdout.split()
        if len(found) != 1:
            raise LabError(f"NIC {name} (mac {mac}) has no {driver} interface in the guest")
        self.configure(found[0], f"{guest_ip}/24", promisc=False)
        return UserNic(found[0], mac, guest_ip, name)

    def configure(self, iface: str, address: str, promisc: bool) -> None:
        """IPv6 off where the kernel has it, GRO and VLAN stripping off, address, link up."""
        if self.features.ipv6:
            self.sh.run(f"sysctl -qw net.ipv6.conf.{iface}.disable_ipv6=1")
        self.sh.run(f"ethtool -K {iface} gro off")
        self.sh.run(f"ethtool -K {iface} rxvlan off 2>/dev/null || true")
        self.sh.run(f"ip link set {iface} up" + (" promisc on" if promisc else ""))
        self.sh.run(f"ip addr add {address} dev {iface}")

    def _read_driver_defaults(self, variants: set[NicVariant]) -> None:
        for v in variants:
            for param, _ in v.driver_settings:
                key = (v.driver, param)
                if key not in self._params:
                    path = f"/sys/module/{v.driver}/parameters/{param}"
                    self._params[key] = self.sh.run(f"cat {path}").stdout.strip()
        self._defaults = dict(self._params)

    def use(self, nic: GuestNic) -> GuestNic:
        """Sets the driver parameters ``nic``'s variant needs; the driver's defaults for the rest.

        Only for parameters the driver reads per frame (e1000's copybreak):
        the NICs that share the driver must be idle meanwhile.
        """
        v = nic.variant
        wanted = {key: value for key, value in self._defaults.items() if key[0] == v.driver}
        wanted |= {(v.driver, param): value for param, value in v.driver_settings}
        for (driver, param), value in wanted.items():
            if self._params[(driver, param)] != value:
                self.sh.run(f"echo {value} > /sys/module/{driver}/parameters/{param}")
                self._params[(driver, param)] = value
        return nic

    def set_gro(self, nic: Link, on: bool) -> None:
        cmd = f"ethtool -K {nic.iface} gro {'on' if on else 'off'}"
        if self.journal is not None:
            self.journal.add(Command(cmd))
        self.sh.run(cmd)

    def rps_cpus(self, nic: GuestNic) -> str:
        """The CPUs (a hex mask) that receive packet steering spreads its queue over."""
        return self.sh.run(f"cat {self._rps(nic)}").stdout.strip()

    def set_rps_cpus(self, nic: GuestNic, mask: str) -> None:
        self.sh.run(f"echo {mask} > {self._rps(nic)}")

    @staticmethod
    def _rps(nic: GuestNic) -> str:
        return f"/sys/class/net/{nic.iface}/queues/rx-0/rps_cpus"

    def reset(self, nics: Sequence[GuestNic]) -> None:
        """As ``setup`` left them: in no bridge, GRO and RPS off, promiscuous, their
        address, up with the host as neighbour, with carrier."""
        for n in nics:
            self.sh.run(
                f"ip link set {n.iface} nomaster && ethtool -K {n.iface} gro off && "
                f"echo 0 > {self._rps(n)} && ip link set {n.iface} promisc on && "
                f"ip addr replace {n.address} dev {n.iface}"
            )
        self.links_up(nics)

    @staticmethod
    def _neighbour_cmd(nic: GuestNic) -> str:
        return f"ip neigh replace {nic.host_ip} lladdr {HOST_MAC} dev {nic.iface} nud permanent"

    def links_down(self, nics: Sequence[Link]) -> None:
        if self.journal is not None:
            self.journal.add(Links(tuple(n.name for n in nics), up=False))
        self.sh.run("; ".join(f"ip link set {n.iface} down" for n in nics))

    def links_up(self, nics: Sequence[Link]) -> None:
        """Up again, with the host's neighbour entry for a lab NIC (a link going down
        flushes its neighbours, permanent ones too), once each has carrier: frames sent
        before that wait in QEMU (e1000) or are missed (rtl8139)."""
        if self.journal is not None:
            self.journal.add(Links(tuple(n.name for n in nics), up=True))
        self.sh.run(" && ".join(self._up_cmd(n) for n in nics))
        carriers = " ".join(f"/sys/class/net/{n.iface}/carrier" for n in nics)
        wait_until(
            lambda: set(self.sh.run(f"cat {carriers}").stdout.split()) == {"1"},
            CARRIER_S,
            f"carrier on {', '.join(n.iface for n in nics)}",
            interval=0.1,
        )

    def _up_cmd(self, nic: Link) -> str:
        up = f"ip link set {nic.iface} up"
        return f"{up} && {self._neighbour_cmd(nic)}" if isinstance(nic, GuestNic) else up

    def bounce(self, nics: Sequence[Link]) -> None:
        """Links down and up: the drivers refill their receive rings from scratch."""
        self.links_down(nics)
        self.links_up(nics)

    def rx_counts(self, nic: Link) -> RxCounts:
        stats = f"/sys/class/net/{nic.iface}/statistics"
        out = self.sh.run(f"cat {stats}/rx_packets {stats}/rx_missed_errors").stdout
        packets, missed = map(int, out.split())
        return RxCounts(packets, missed)
