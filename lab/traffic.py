"""Frames for the guests: built with scapy, signed, injected, saved as pcap.

Each frame carries a ``pysniff.signature`` payload (run id, sequence number,
CRC32), so whatever receives it, AF_PACKET in the guest or NTA's reader, can
check it frame by frame. Frame sizes are Ethernet sizes without FCS.
"""

from __future__ import annotations

import contextlib
import functools
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_EOL,
    IPOption_LSRR,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
    IPOption_SSRR,
    IPOption_Timestamp,
    fragment,
)
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    RouterAlert,
    fragment6,
)
from scapy.layers.l2 import ARP, GRE, LLC, SNAP, Dot1AD, Dot1Q, Dot3, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import RawPcapReader, RawPcapWriter

from lab import LabError
from lab.nics import HOST_MAC, HostEnd, NicPlan
from pysniff import signature

MIN_FRAME = 60
MAX_FRAME = 1514
OTHER_MAC = "52:54:00:4e:ff:99"  # a unicast MAC no guest has: needs promiscuous mode
KINDS = ("udp4", "udp6", "tcp4", "tcp6", "arp", "vlan", "bcast", "mcast", "othermac")


@dataclass(frozen=True)
class Addresses:
    """Who talks to whom on one NIC's wire."""

    guest_mac: str
    guest_ip: str = "10.77.0.2"
    host_ip: str = "10.77.0.1"
    guest_ip6: str = "fd77::2"
    host_ip6: str = "fd77::1"

    @classmethod
    def of(cls, nic: NicPlan) -> Addresses:
        return cls(nic.mac, nic.guest_ip, nic.host_ip)

    @property
    def broadcast(self) -> str:
        return self.guest_ip.rsplit(".", 1)[0] + ".255"


_UDP = UDP(sport=40000, dport=9)  # discard port: the stack drops them quietly
_TCP = TCP(sport=40000, dport=9, flags="A")


def _ip4(a: Addresses) -> Packet:
    return IP(src=a.host_ip, dst=a.guest_ip)


def _ip6(a: Addresses) -> Packet:
    return IPv6(src=a.host_ip6, dst=a.guest_ip6)


_HEADERS: dict[str, Callable[[Addresses], Packet]] = {
    "udp4": lambda a: Ether(src=HOST_MAC, dst=a.guest_mac) / _ip4(a) / _UDP,
    "udp6": lambda a: Ether(src=HOST_MAC, dst=a.guest_mac) / _ip6(a) / _UDP,
    "tcp4": lambda a: Ether(src=HOST_MAC, dst=a.guest_mac) / _ip4(a) / _TCP,
    "tcp6": lambda a: Ether(src=HOST_MAC, dst=a.guest_mac) / _ip6(a) / _TCP,
    "arp": lambda a: (
        Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=HOST_MAC, psrc=a.host_ip, pdst=a.host_ip)
    ),
    "vlan": lambda a: Ether(src=HOST_MAC, dst=a.guest_mac) / Dot1Q(vlan=77) / _ip4(a) / _UDP,
    "bcast": lambda a: (
        Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff") / IP(src=a.host_ip, dst=a.broadcast) / _UDP
    ),
    "mcast": lambda a: (
        Ether(src=HOST_MAC, dst="01:00:5e:4d:00:01") / IP(src=a.host_ip, dst="239.77.0.1") / _UDP
    ),
    "othermac": lambda a: Ether(src=HOST_MAC, dst=OTHER_MAC) / _ip4(a) / _UDP,
}


# Scapy takes milliseconds to assemble a stack of layers, and a lab run
# builds tens of thousands of frames on the host the guests run on: each
# kind's headers are built once per address set (``/`` copies them).
@functools.cache
def _headers(kind: str, a: Addresses) -> Packet:
    try:
        return _HEADERS[kind](a)
    except KeyError:
        raise LabError(f"unknown frame kind {kind!r}; known: {', '.join(KINDS)}") from None


def build_frame(kind: str, run_id: int, seq: int, size: int, addrs: Addresses) -> bytes:
    """One signed frame of exactly ``size`` bytes (or the smallest this kind allows)."""
    if not MIN_FRAME <= size <= MAX_FRAME:
        raise LabError(f"frame size {size} outside {MIN_FRAME}..{MAX_FRAME}")
    head = _headers(kind, addrs)
    room = max(size - len(head), signature.HEADER_LEN)
    return bytes(head / Raw(signature.payload(run_id, seq, room)))


def frames(
    run_id: int,
    count: int,
    addrs: Addresses,
    kinds: Sequence[str] = ("udp4",),
    sizes: Sequence[int] | None = None,
    seed: int = 0,
) -> list[bytes]:
    """``count`` frames, kinds in turn; sizes random in 60..1514 unless given (cycled)."""
    rng = random.Random(seed)
    out = []
    for seq in range(count):
        size = sizes[seq % len(sizes)] if sizes else rng.randint(MIN_FRAME, MAX_FRAME)
        out.append(build_frame(kinds[seq % len(kinds)], run_id, seq, size, addrs))
    return out


def filler(
    addrs: Addresses,
    count: int,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    dports: Sequence[int] = (9,),
) -> list[bytes]:
    """``count`` UDP frames, unsigned: load for the benchmark, not a delivery check, so as
    short as UDP allows (42 bytes). Sizes cycle through ``sizes``, else random in
    60..1514; destination ports cycle through ``dports`` (by default the guest's discard
    port, where the stack drops them quietly)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        head = _headers("udp4", addrs)
        head[UDP].dport = dports[i % len(dports)]
        size = sizes[i % len(sizes)] if sizes else rng.randint(MIN_FRAME, MAX_FRAME)
        if not len(head) <= size <= MAX_FRAME:
            raise LabError(f"frame size {size} outside {len(head)}..{MAX_FRAME}")
        out.append(bytes(head / Raw(rng.randbytes(size - len(head)))))
    return out


def bad_frames(addrs: Addresses, seed: int = 0) -> dict[str, list[bytes]]:
    """Frames no sane sender makes, by kind: what the wire can throw at a receiver."""
    rng = random.Random(seed)
    eth = Ether(src=HOST_MAC, dst=addrs.guest_mac)
    ip = IP(src=addrs.host_ip, dst=addrs.guest_ip)
    good = bytes(eth / ip / UDP(sport=1, dport=9) / Raw(b"x" * 64))
    return {
        # QEMU pads these to 60 bytes: they reach the driver as minimum frames.
        "runt": [good[:n] for n in (1, 13, 14, 20, 33, 42, 59)],
        # Above 1514 (1518 with a VLAN tag) a NIC without jumbo frames drops them.
        "oversized": [good + bytes(n - len(good)) for n in (1515, 1518, 1522, 1600, 4000, 9000)],
        "truncated": [
            bytes(eth / IP(src=addrs.host_ip, dst=addrs.guest_ip, ihl=15) / b"abc"),
            bytes(eth / IP(src=addrs.host_ip, dst=addrs.guest_ip, len=1400) / UDP() / b"short"),
            bytes(eth / ip / TCP(dataofs=15) / b"x"),
            bytes(eth / IPv6(src=addrs.host_ip6, dst=addrs.guest_ip6, plen=1000) / UDP() / b"y"),
            bytes(eth / Dot1Q(vlan=5))[:16],
            bytes(eth / ip)[:20],
            bytes(eth / ip / UDP(len=9000) / b"z"),
        ],
        "garbage": [
            bytes(rng.getrandbits(8) for _ in range(rng.randint(MIN_FRAME, MAX_FRAME)))
            for _ in range(200)
        ],
    }


def echo_request(addrs: Addresses, ident: int, seq: int, data: bytes) -> bytes:
    """An ICMP echo request to the guest, for tests that need the stack to answer."""
    ip = IP(src=addrs.host_ip, dst=addrs.guest_ip)
    return bytes(Ether(src=HOST_MAC, dst=addrs.guest_mac) / ip / ICMP(id=ident, seq=seq) / data)


def icmp_reply_from(ip: str) -> Callable[[bytes], bool]:
    """Matches the echo replies ``ip`` sends, for converse()."""

    def want(frame: bytes) -> bool:
        p = Ether(frame)
        return ICMP in p and p[ICMP].type == 0 and p[IP].src == ip

    return want


def udp_request(addrs: Addresses, port: int, sport: int, data: bytes) -> bytes:
    """A UDP datagram to a service in the guest."""
    ip = IP(src=addrs.host_ip, dst=addrs.guest_ip)
    return bytes(
        Ether(src=HOST_MAC, dst=addrs.guest_mac) / ip / UDP(sport=sport, dport=port) / data
    )


@dataclass(frozen=True)
class InjectResult:
    sent: int
    elapsed: float

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


def inject(end: HostEnd, batch: Iterable[bytes], rate: float | None = None) -> InjectResult:
    """Send frames to a guest NIC, paced at ``rate`` frames/s or as fast as it takes them."""
    start = time.monotonic()
    sent = 0
    with end.batch(rate):  # one step of the test's journal
        for frame in batch:
            if rate:
                delay = start + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            end.send(frame)
            sent += 1
    return InjectResult(sent, time.monotonic() - start)


class Sustained:
    """Frames sent by ``sustained``'s thread so far."""

    def __init__(self) -> None:
        self.sent = 0


@contextlib.contextmanager
def sustained(end: HostEnd, batch: Sequence[bytes], rate: float | None) -> Iterator[Sustained]:
    """``batch`` sent again and again from a thread of its own until the block ends (traffic
    under which a test does something else); the thread is joined before the block returns."""
    done = Sustained()
    stop = threading.Event()

    def fire() -> None:
        while not stop.is_set():
            done.sent += inject(end, batch, rate).sent

    sender = threading.Thread(target=fire)
    sender.start()
    try:
        yield done
    finally:
        stop.set()
        sender.join()


def converse(
    end: HostEnd,
    batch: Iterable[bytes],
    count: int,
    want: Callable[[bytes], bool],
    rate: float | None = None,
    timeout: float = 30.0,
    quiet: float | None = None,
) -> list[bytes]:
    """Send ``batch`` and collect up to ``count`` frames the guest sends back that ``want``.

    Replies are read while sending: a unix datagram socket queues only a few
    frames, and QEMU drops what does not fit. With ``quiet``, collecting also
    ends once everything is sent and no wanted frame came for that long.
    """
    got: list[bytes] = []
    sent = threading.Event()
    end.drain()  # what the guest sent before this exchange is not an answer to it

    def collect() -> None:
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while len(got) < count and (left := deadline - time.monotonic()) > 0:
            if quiet is not None and sent.is_set() and time.monotonic() - last >= quiet:
                break
            frame = end.recv(min(left, 0.5))
            if frame is not None and want(frame):
                got.append(frame)
                last = time.monotonic()

    reader = threading.Thread(target=collect)
    reader.start()
    try:
        inject(end, batch, rate)
    finally:
        sent.set()
        reader.join()
    return got


def write_pcap(path: Path, batch: Iterable[bytes]) -> None:
    with RawPcapWriter(str(path), linktype=1, sync=False) as w:
        for frame in batch:
            w.write(frame)


def read_pcap(path: Path) -> list[bytes]:
    with RawPcapReader(str(path)) as r:
        return [bytes(data) for data, _meta in r]


# -- a wide mix: what the wire can carry, not what the lab signs ------------------
#
# The exact-capture scenario compares NTA's reader with tcpdump on traffic
# built for it, deliberately wider than the signed frames: stacked and
# priority tags, IP options and IPv6 extension headers the stack processes
# (and may rewrite), fragments that reassemble, TCP SYNs, ICMP, ARP, LLC,
# odd EtherTypes, wrong checksums, the smallest and largest frames. Each
# frame keeps its kind, to say which kinds differ when a capture does.


@dataclass(frozen=True)
class Mixed:
    kind: str
    frame: bytes


LISTEN_PORT = 5001  # the guest listens here (lab.guestside.tcplisten)
# scapy's fragmenters carry no annotations; these say what they return.
_fragment4: Callable[..., list[Packet]] = fragment
_fragment6: Callable[..., list[Packet]] = fragment6
CLOSED_PORT = 5002  # and not here


def _wide_kinds(a: Addresses, rng: random.Random, ipv6: bool) -> list[tuple[str, list[Packet]]]:
    """One round of every kind, each a list of frames (fragments are several)."""
    eth = Ether(src=HOST_MAC, dst=a.guest_mac)
    ip = IP(src=a.host_ip, dst=a.guest_ip, id=rng.randrange(1 << 16))
    udp = UDP(sport=rng.randrange(1024, 65536), dport=9)

    def payload(lo: int = 18, hi: int = 400) -> Raw:
        return Raw(rng.randbytes(rng.randint(lo, hi)))

    sport = rng.randrange(20000, 60000)
    syn_opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (rng.randrange(1 << 32), 0)),
                ("NOP", None), ("WScale", 7)]  # fmt: skip
    kinds: list[tuple[str, list[Packet]]] = [
        ("qinq", [Ether(src=HOST_MAC, dst=a.guest_mac) / Dot1AD(vlan=100, prio=2)
                  / Dot1Q(vlan=5) / ip / udp / payload()]),
        ("vlan-pcp-dei", [eth / Dot1Q(prio=5, id=1, vlan=77) / ip / udp / payload()]),
        ("vlan0", [eth / Dot1Q(vlan=0, prio=6) / ip / udp / payload()]),
        ("vlan0-inner", [eth / Dot1Q(vlan=0, prio=3) / Dot1Q(vlan=9) / ip / udp / payload()]),
        ("ip-rr", [eth / IP(src=a.host_ip, dst=a.guest_ip,
                            options=[IPOption_RR(pointer=4, routers=["0.0.0.0"] * 3)])
                   / udp / payload()]),
        ("ip-ts", [eth / IP(src=a.host_ip, dst=a.guest_ip,
                            options=[IPOption_Timestamp(flg=0, pointer=5, timestamp=0,
                                                        internet_address="0.0.0.0")])
                   / udp / payload()]),
        ("ip-lsrr", [eth / IP(src=a.host_ip, dst=a.guest_ip,
                              options=[IPOption_LSRR(pointer=4, routers=[a.guest_ip, a.host_ip])])
                     / udp / payload()]),
        ("ip-ssrr", [eth / IP(src=a.host_ip, dst=a.guest_ip,
                              options=[IPOption_SSRR(pointer=4, routers=[a.guest_ip, a.host_ip])])
                     / udp / payload()]),
        ("ip-ra", [eth / IP(src=a.host_ip, dst=a.guest_ip, options=[IPOption_Router_Alert()])
                   / udp / payload()]),
        ("ip-pad", [eth / IP(src=a.host_ip, dst=a.guest_ip,
                             options=[IPOption_NOP(), IPOption_NOP(), IPOption_NOP(),
                                      IPOption_EOL()])
                    / udp / payload()]),
        ("ip-frag", _fragment4(eth / ip / udp / payload(2000, 3500), fragsize=1000)),
        ("tcp-syn-listen", [eth / ip / TCP(sport=sport, dport=LISTEN_PORT, flags="S",
                                           seq=rng.randrange(1 << 32), options=syn_opts)]),
        ("tcp-syn-closed", [eth / ip / TCP(sport=sport + 1, dport=CLOSED_PORT, flags="S",
                                           seq=rng.randrange(1 << 32), options=syn_opts)]),
        ("icmp-echo", [eth / ip / ICMP(id=0x4E54, seq=rng.randrange(1 << 16)) / payload()]),
        ("icmp-error", [eth / ip / ICMP(type=3, code=3)
                        / IP(src=a.guest_ip, dst=a.host_ip) / UDP(sport=9, dport=sport)]),
        ("arp", [Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, hwsrc=HOST_MAC, psrc=a.host_ip, pdst=a.guest_ip)]),
        ("llc-snap", [Dot3(src=HOST_MAC, dst=a.guest_mac) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
                      / SNAP(OUI=0, code=0x88B5) / payload(30, 300)]),
        ("ethertype-odd", [Ether(src=HOST_MAC, dst=a.guest_mac, type=rng.choice((0x88B5, 0x9000)))
                           / payload(46, 500)]),
        ("bad-ip-csum", [eth / IP(src=a.host_ip, dst=a.guest_ip, chksum=0x1234) / udp / payload()]),
        ("bad-udp-csum", [eth / ip / UDP(sport=4000, dport=9, chksum=0x1234) / payload()]),
        ("bad-tcp-csum", [eth / ip / TCP(sport=sport + 2, dport=CLOSED_PORT, flags="A",
                                         chksum=0xBEEF) / payload()]),
        ("min60", [eth / ip / udp / Raw(bytes(60 - 42))]),
        ("max1514", [eth / ip / udp / Raw(rng.randbytes(1514 - 42))]),
        ("bcast", [Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff")
                   / IP(src=a.host_ip, dst=a.broadcast) / udp / payload()]),
        ("mcast", [Ether(src=HOST_MAC, dst="01:00:5e:4d:00:01")
                   / IP(src=a.host_ip, dst="239.77.0.1") / udp / payload()]),
    ]  # fmt: skip
    if ipv6:
        ip6 = IPv6(src=a.host_ip6, dst=a.guest_ip6)
        kinds += [
            ("ipv6-hbh", [eth / ip6
                          / IPv6ExtHdrHopByHop(options=[RouterAlert(), PadN(optdata=b"\0\0")])
                          / udp / payload()]),
            ("ipv6-rt", [eth / ip6 / IPv6ExtHdrRouting(addresses=[a.guest_ip6], segleft=0)
                         / udp / payload()]),
            ("ipv6-dst", [eth / ip6 / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 4)])
                          / udp / payload()]),
            ("ipv6-frag", _fragment6(eth / ip6 / IPv6ExtHdrFragment(id=rng.randrange(1 << 32))
                                         / udp / payload(2000, 3000), 1280)),
            ("ipv6-echo", [eth / ip6 / ICMPv6EchoRequest(id=0x4E54, seq=rng.randrange(1 << 16))
                           / payload()]),
        ]  # fmt: skip
    return kinds


def wide_mix(a: Addresses, count: int, seed: int, ipv6: bool = True) -> list[Mixed]:
    """At least ``count`` frames, every kind in turn (a round gives each kind once).

    Frames shorter than Ethernet's 60 bytes are padded with zeros, as a sender
    does (and as QEMU would on the way in): what is sent is what the NIC takes.
    """
    rng = random.Random(seed)
    out: list[Mixed] = []
    while len(out) < count:
        for kind, packets in _wide_kinds(a, rng, ipv6):
            out += [Mixed(kind, bytes(p).ljust(MIN_FRAME, b"\0")) for p in packets]
    return out


def answered_by(a: Addresses) -> dict[str, Callable[[Ether], bool]]:
    """The kinds the guest's stack answers, each with how its answer looks."""
    return {
        "arp": lambda p: ARP in p and p[ARP].op == 2 and p[ARP].psrc == a.guest_ip,
        "icmp-echo": lambda p: ICMP in p and p[ICMP].type == 0 and p[IP].src == a.guest_ip,
        "tcp-syn-listen": lambda p: (
            TCP in p and p[TCP].sport == LISTEN_PORT and p[TCP].flags == "SA"
        ),
        "tcp-syn-closed": lambda p: (
            TCP in p and p[TCP].sport == CLOSED_PORT and "R" in str(p[TCP].flags)
        ),
    }


def gro_flow(a: Addresses, segments: int, seed: int, flows: int = 1) -> list[bytes]:
    """TCP segments that GRO merges (ACK only, no options, IP IDs in sequence): ``flows``
    flows (distinct source ports) of ``segments`` each, interleaved in runs of a few, as
    several senders' segments meet on one link."""
    rng = random.Random(seed)
    eth = Ether(src=HOST_MAC, dst=a.guest_mac)
    each: list[list[bytes]] = []
    for f in range(flows):
        seq, ident, out = rng.randrange(1 << 32), rng.randrange(1 << 16), []
        for i in range(segments):
            data = rng.randbytes(1448)
            # IP IDs that count up, as a sender's do: GRO flushes a flow whose IDs jump.
            ip = IP(src=a.host_ip, dst=a.guest_ip, id=(ident + i) % (1 << 16), flags="DF")
            out.append(bytes(eth / ip / TCP(sport=40001 + f, dport=CLOSED_PORT, flags="A",
                                            seq=seq, ack=1, window=4096) / data))  # fmt: skip
            seq = (seq + len(data)) % (1 << 32)
        each.append(out)
    merged: list[bytes] = []
    while any(each):
        for out in each:
            run = 1 + rng.randrange(8)
            merged += out[:run]
            del out[:run]
    return merged


# -- frames the stack rewrites without looking at skb_cloned() ---------------------
#
# Decapsulating a tunnel the host terminates copies the outer header's ECN
# congestion mark into the inner header in place (RFC 6040: outer CE over
# an ECN-capable inner packet makes the inner one CE), and a qdisc that
# marks CE does so in place on a frame a bridge forwards. Neither checks
# whether the data is shared, so a capture taken in place would show what
# the stack made of the frame. These frames make them do it.

ECN_ECT0 = 0x02
ECN_CE = 0x03
TUNNELS = ("ipip", "gre", "vxlan", "geneve")
VXLAN_PORT, VXLAN_VNI = 4789, 42
GENEVE_VNI = 43
TUNNEL_INNER_MAC = "52:54:00:4e:ee:01"


def tunnel_inner_net(nic_index: int, kind: str) -> str:
    """The inner /24 of one tunnel of one NIC: 10.2<kind>.<nic>.0; .1 is the guest's end."""
    return f"10.{200 + TUNNELS.index(kind)}.{nic_index}"


def tunneled(a: Addresses, kind: str, nic_index: int, count: int, seed: int) -> list[bytes]:
    """``count`` frames of one tunnel (``TUNNELS``) from the host to the guest: outer
    CE, inner ECT(0) UDP datagrams of random sizes to the guest's inner address."""
    rng = random.Random(seed)
    net = tunnel_inner_net(nic_index, kind)
    out = []
    for i in range(count):
        inner = IP(src=f"{net}.2", dst=f"{net}.1", tos=ECN_ECT0, id=rng.randrange(1 << 16))
        inner = inner / UDP(sport=rng.randrange(1024, 65536), dport=9)
        inner = inner / Raw(rng.randbytes(18 + rng.randrange(1300)))
        outer = Ether(src=HOST_MAC, dst=a.guest_mac) / IP(
            src=a.host_ip, dst=a.guest_ip, tos=ECN_CE, id=(seed + i) % (1 << 16)
        )
        if kind == "ipip":
            frame = outer / inner
        elif kind == "gre":
            frame = outer / GRE(proto=0x0800) / inner
        else:
            l2 = Ether(src=TUNNEL_INNER_MAC, dst="ff:ff:ff:ff:ff:ff") / inner
            udp = UDP(sport=rng.randrange(49152, 65536), chksum=0)
            if kind == "vxlan":
                frame = outer / udp / VXLAN(vni=VXLAN_VNI, flags=0x08) / l2
                frame[UDP].dport = VXLAN_PORT
            else:
                frame = outer / udp / GENEVE(vni=GENEVE_VNI, proto=0x6558) / l2
                frame[UDP].dport = 6081
        out.append(bytes(frame))
    return out


def ecn_capable(a: Addresses, dst_mac: str, count: int, seed: int) -> list[bytes]:
    """ECT(0) UDP datagrams from the host to ``dst_mac`` (a MAC behind a guest bridge)."""
    rng = random.Random(seed)
    eth = Ether(src=HOST_MAC, dst=dst_mac)
    return [
        bytes(
            eth
            / IP(src=a.host_ip, dst="10.199.0.2", tos=ECN_ECT0, id=rng.randrange(1 << 16))
            / UDP(sport=rng.randrange(1024, 65536), dport=9)
            / Raw(rng.randbytes(18 + rng.randrange(1400)))
        )
        for _ in range(count)
    ]
