"""The lab's frame signature: lets any receiver check each injected frame.

Every frame the lab injects carries, somewhere in its payload, a signature
header followed by a body::

    magic "NTAL" | run_id u32 | seq u64 | body_len u32 | crc32 u32 | body

all big endian. ``crc32`` covers the 20 header bytes before it and the body,
so a corrupt sequence number is caught like a corrupt byte of payload. The
signature is found by searching for the magic, which keeps it independent
of the headers in front of it (VLAN tag stripped or not, IPv4 or IPv6, ARP
padding). Standard library only: this module runs inside guests too.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"NTAL"
HEADER = struct.Struct("!4sIQII")
HEADER_LEN = HEADER.size  # 24


@dataclass(frozen=True)
class Signature:
    run_id: int
    seq: int
    ok: bool  # False: magic found but truncated or CRC mismatch


def body_for(seq: int, length: int) -> bytes:
    """A deterministic body that differs from one sequence number to the next."""
    pattern = bytes((seq * 7 + i * 13) & 0xFF for i in range(256))
    return (pattern * (length // 256 + 1))[:length]


def encode(run_id: int, seq: int, body: bytes) -> bytes:
    head = HEADER.pack(MAGIC, run_id, seq, len(body), 0)[:20]
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + struct.pack("!I", crc) + body


def payload(run_id: int, seq: int, total_len: int) -> bytes:
    """A signed payload of exactly ``total_len`` bytes (at least HEADER_LEN)."""
    if total_len < HEADER_LEN:
        raise ValueError(f"a signed payload needs at least {HEADER_LEN} bytes, not {total_len}")
    return encode(run_id, seq, body_for(seq, total_len - HEADER_LEN))


def find(frame: bytes | bytearray | memoryview) -> Signature | None:
    """The signature in ``frame``, or None if the frame carries none."""
    data = bytes(frame)
    at = data.find(MAGIC)
    if at < 0 or len(data) - at < HEADER_LEN:
        return None
    _, run_id, seq, body_len, crc = HEADER.unpack_from(data, at)
    body = data[at + HEADER_LEN : at + HEADER_LEN + body_len]
    ok = len(body) == body_len and zlib.crc32(body, zlib.crc32(data[at : at + 20])) == crc
    return Signature(run_id, seq, ok)


def ranges(numbers: Iterable[int]) -> list[list[int]]:
    """Sorted integers folded into inclusive [first, last] ranges."""
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def expand(spans: Iterable[Sequence[int]]) -> set[int]:
    """The integers in inclusive [first, last] ranges: what ranges() folded."""
    return {n for first, last in spans for n in range(first, last + 1)}


@dataclass(frozen=True)
class IfaceTally:
    """What one interface received of a run."""

    seen: int = 0
    unique: int = 0
    duplicates: int = 0
    corrupt: int = 0
    missing: list[list[int]] = field(default_factory=list)  # inclusive [first, last] ranges


@dataclass(frozen=True)
class TallySummary:
    run_id: int
    expected: int | None
    interfaces: dict[str, IfaceTally]
    foreign: int
    unsigned: int

    def of(self, iface: str) -> IfaceTally:
        """The interface's entry; an interface that received nothing has an empty one."""
        return self.interfaces.get(iface, IfaceTally())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TallySummary:
        ifaces = {name: IfaceTally(**entry) for name, entry in data["interfaces"].items()}
        return cls(data["run_id"], data["expected"], ifaces, data["foreign"], data["unsigned"])


def perfect(count: int, missing: Sequence[Sequence[int]] = ()) -> IfaceTally:
    """The entry of an interface that got sequences 0..count-1 once, intact.

    All but those in the ``missing`` ranges, if given.
    """
    got = count - len(expand(missing))
    return IfaceTally(got, got, 0, 0, [list(span) for span in missing])


@dataclass
class Tally:
    """What a receiver saw of one run, per interface.

    ``expected`` is how many frames were sent to each interface, with
    sequence numbers 0..expected-1; frames of other runs are counted apart.
    """

    run_id: int
    expected: int | None = None
    seen: dict[str, int] = field(default_factory=dict)
    seqs: dict[str, set[int]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    corrupt: dict[str, int] = field(default_factory=dict)
    foreign: int = 0
    unsigned: int = 0

    def add(self, iface: str, frame: bytes | bytearray | memoryview) -> Signature | None:
        sig = find(frame)
        if sig is None:
            self.unsigned += 1
        elif sig.run_id != self.run_id and sig.ok:
            self.foreign += 1
        elif not sig.ok:
            self.corrupt[iface] = self.corrupt.get(iface, 0) + 1
        else:
            self.seen[iface] = self.seen.get(iface, 0) + 1
            seqs = self.seqs.setdefault(iface, set())
            if sig.seq in seqs:
                self.duplicates[iface] = self.duplicates.get(iface, 0) + 1
            seqs.add(sig.seq)
        return sig

    def missing(self, iface: str) -> list[list[int]]:
        if self.expected is None:
            return []
        return ranges(set(range(self.expected)) - self.seqs.get(iface, set()))

    def summary(self) -> TallySummary:
        ifaces = sorted(set(self.seen) | set(self.corrupt))
        return TallySummary(
            run_id=self.run_id,
            expected=self.expected,
            interfaces={
                name: IfaceTally(
                    seen=self.seen.get(name, 0),
                    unique=len(self.seqs.get(name, ())),
                    duplicates=self.duplicates.get(name, 0),
                    corrupt=self.corrupt.get(name, 0),
                    missing=self.missing(name),
                )
                for name in ifaces
            },
            foreign=self.foreign,
            unsigned=self.unsigned,
        )
