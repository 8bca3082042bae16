"""Frames for both readers' host tests: every shape the module publishes, and a strict pcap
reader to check what a reader wrote."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from pysniff import abi
from pysniff.fake import HEADROOM, PAGE, Arrival, FakeDevice, FakeNta, ethernet

PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")


@dataclass(frozen=True)
class Record:
    tstamp_ns: int
    length: int  # the frame on the wire
    data: bytes


def read_pcap(path: Path) -> list[Record]:
    """A nanosecond pcap, strictly: every record's bytes within the file, nothing after."""
    raw = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = PCAP_HEADER.unpack_from(raw)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B23C4D, 2, 4, 262144, 1)
    out: list[Record] = []
    at = PCAP_HEADER.size
    while at < len(raw):
        sec, nsec, caplen, length = PCAP_RECORD.unpack_from(raw, at)
        at += PCAP_RECORD.size
        assert at + caplen <= len(raw), f"record {len(out)}: {caplen} bytes, the file ends first"
        assert caplen <= length, f"record {len(out)}: caplen {caplen} > len {length}"
        out.append(Record(sec * 1_000_000_000 + nsec, length, raw[at : at + caplen]))
        at += caplen
    return out


def signed(i: int, size: int) -> bytes:
    """A frame whose bytes say where they belong: a shifted piece cannot match."""
    body = bytes((i * 7 + k) & 0xFF for k in range(size - 14))
    return ethernet(body, ethertype=0x88B5)


def shapes() -> list[Arrival]:
    """One of each: in one chunk, a stripped tag, copied (COPY) pieces, in-place pieces,
    a chain of both."""
    seg = 1448
    tcp = signed(5, 66 + 3 * seg)
    return [
        Arrival(signed(0, 60)),
        Arrival(signed(1, 1514)),
        Arrival(ethernet(signed(2, 100)[14:], vlan_tci=0x2064), strip_vlan=True),
        Arrival(signed(3, 10254), merged=True),  # three chunks, COPY
        # GRO-merged, in place: the head's chunk, then each segment's, at offsets into them.
        Arrival(tcp, chain=((HEADROOM, 66), (HEADROOM + 66, seg), (130, seg), (4096 - seg, seg))),
        Arrival(
            ethernet(signed(6, 400)[14:], vlan_tci=7, tpid=0x88A8),
            strip_vlan=True,
            chain=((HEADROOM, 54), (0, 346)),
        ),
        Arrival(signed(7, 64)),
        # GRO-merged, some pieces copied (those outside the pool), the others in place.
        Arrival(
            signed(8, 100 + 2 * seg), chain=((0, 100, True), (HEADROOM, seg), (300, seg, True))
        ),
    ]


def patch(dev: FakeDevice, seq: int, **fields: int) -> None:
    """Rewrites fields of the published record ``seq`` (a module bug, planted)."""
    at = PAGE + (seq % dev.nta.ring_entries) * abi.RECORD.size
    record = abi.RECORD.unpack(memoryview(dev.ring), at)
    dev.ring[at : at + abi.RECORD.size] = abi.RECORD.pack({**record, **fields})


def published(f: Arrival) -> bytes:
    """The frame's bytes as the module publishes them: a tag the stack took out, out."""
    if f.strip_vlan and f.wire[12:14] in (b"\x81\x00", b"\x88\xa8"):
        return f.wire[:12] + f.wire[16:]
    return f.wire


def records_of(f: Arrival) -> int:
    """How many records the fake publishes the frame in."""
    if f.merged:
        return -(-len(published(f)) // PAGE)
    return len(f.chain) or 1


def deliver(nta: FakeNta, ifindex: int, f: Arrival) -> int | None:
    return nta.deliver(ifindex, f.wire, strip_vlan=f.strip_vlan, merged=f.merged, chain=f.chain)
