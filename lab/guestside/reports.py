"""The reports the lab's guest-side programs write, as the host reads them back.

Standard library only: these classes are imported in the guest (to write) and
on the host (to read), so a field cannot change on one side only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pysniff.signature import TallySummary


def dumps(report: object) -> str:
    return json.dumps(asdict(report))  # type: ignore[call-overload]


@dataclass(frozen=True)
class CaptureReport:
    """lab.guestside.capture: what an AF_PACKET socket received of one run."""

    tally: TallySummary
    crcs: dict[int, int]  # sequence number -> CRC32 of the whole frame as on the wire
    socket_drops: int
    complete: bool

    @classmethod
    def from_json(cls, text: str) -> CaptureReport:
        data: dict[str, Any] = json.loads(text)
        crcs = {int(seq): crc for seq, crc in data["crcs"].items()}
        return cls(
            TallySummary.from_dict(data["tally"]), crcs, data["socket_drops"], data["complete"]
        )


@dataclass(frozen=True)
class AfpacketReport:
    """lab.guestside.afpacket: the TPACKET_V3 reader's tally."""

    frames: int
    bytes: int
    crc_sum: int
    kernel_drops: int
    elapsed_s: float
    utime_s: float
    stime_s: float
    sniffer: str = "afpacket"

    @classmethod
    def from_json(cls, text: str) -> AfpacketReport:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class MeterReport:
    """lab.guestside.meter: one sniffer's CPU and context switches over a measured window."""

    exit: int | None
    sniffer_cpu_s: float
    elapsed_s: float
    cpu_s: dict[str, float]  # /proc/stat column -> seconds, all CPUs
    stdout: str
    stderr: str
    voluntary_switches: int = 0
    involuntary_switches: int = 0
    syscalls: int | None = None  # counted by the kernel's tracing, where it can
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> MeterReport:
        return cls(**json.loads(text))
