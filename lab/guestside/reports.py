"""The reports the lab's guest-side programs write, as the host reads them back.

Standard library only: these classes are imported in the guest (to write) and
on the host (to read), so a field cannot change on one side only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from pysniff.signature import TallySummary


def dumps(report: object) -> str:
    return json.dumps(asdict(report))  # type: ignore[call-overload]


class FlatReport:
    """A report whose JSON object holds its fields as they are (no nested reports)."""

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls(**json.loads(text))


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
class AfpacketReport(FlatReport):
    """lab.guestside.afpacket: the TPACKET_V3 reader's tally."""

    frames: int
    bytes: int
    crc_sum: int
    kernel_drops: int
    elapsed_s: float
    utime_s: float
    stime_s: float
    sniffer: str = "afpacket"
    blocks: int = 0  # ring blocks filled and handed back
    bytes_in_blocks: int = 0  # the sum of their blk_len: bytes the kernel wrote in them


@dataclass(frozen=True)
class CpuStat:
    """/proc/stat's first line (every CPU together, in USER_HZ ticks) and the CPUs online.

    With NO_HZ (Debian's kernels) ``idle`` and ``iowait`` come from the idle
    periods themselves, measured in ns and only printed in ticks; the other
    columns are sampled at each tick.
    """

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int
    cpus: int  # the "cpuN" lines: the CPUs online
    hz: int  # USER_HZ: ticks per second

    @classmethod
    def parse(cls, text: str, hz: int) -> CpuStat:
        lines = text.splitlines()
        head = lines[0].split() if lines else []
        if len(head) < 9 or head[0] != "cpu":
            raise ValueError(f"not /proc/stat: {text[:80]!r}")
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, head[1:9])
        cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
        return cls(user, nice, system, idle, iowait, irq, softirq, steal, cpus, hz)


@dataclass(frozen=True)
class MeterReport:
    """lab.guestside.meter: one sniffer's costs, and the whole guest's, over a measured window."""

    exit: int | None  # the sniffer's exit status (None: no sniffer)
    sniffer_cpu_s: float  # its CPU time over the window (the scheduler's runtime)
    elapsed_s: float  # the window, between the two reads of /proc/stat
    stat_before: CpuStat
    stat_after: CpuStat
    stdout: str
    stderr: str
    rx_packets: int | None = None  # the NIC's received frames over the window (--iface)
    rx_missed: int | None = None  # ... and those it missed (rx_missed_errors: no buffer)
    ip_packets: int | None = None  # IP packets the stack received (after GRO), every NIC
    voluntary_switches: int = 0
    involuntary_switches: int = 0
    syscalls: int | None = None  # counted by the kernel's tracing, where it can
    extra: dict[str, Any] = field(default_factory=dict)
    sniffer_user_ticks: int = 0  # clock ticks charged to its own code ...
    sniffer_system_ticks: int = 0  # ... and to the kernel on its behalf

    @classmethod
    def from_json(cls, text: str) -> MeterReport:
        data: dict[str, Any] = json.loads(text)
        data["stat_before"] = CpuStat(**data["stat_before"])
        data["stat_after"] = CpuStat(**data["stat_after"])
        return cls(**data)


@dataclass(frozen=True)
class NtadumpIface:
    """One interface of ``ntadump --json``: what it captured, and the module's counts of the
    device while attached (NTA_IOC_DEV_STATS; None where the module would not say)."""

    captured: int
    received: int | None = None
    sent: int | None = None  # with -Q out or inout
    published: int | None = None
    filtered: int | None = None  # refused by its -f filter, in the module
    unserved: int | None = None
    not_shared: int | None = None
    ring_full: int | None = None
    skipped: int | None = None
    fault_dropped: int | None = None
    gone: bool = False

    @property
    def missed(self) -> int | None:
        """Frames the device received that the reader did not get (None: not counted)."""
        parts = (self.unserved, self.not_shared, self.ring_full, self.skipped, self.fault_dropped)
        return None if any(p is None for p in parts) else sum(p or 0 for p in parts)


@dataclass(frozen=True)
class NtadumpReport:
    """``ntadump --json``: the summary it prints on stdout at exit (kmod/ntadump/ntadump.c).

    ``wakeups``, ``records`` and ``committed`` are the module's counts for
    this reader (NTA_IOC_READER_STATS), ``refused`` the module's bad-commit
    counters by reason (NTA_IOC_STATS): None where the module would not say.
    """

    frames: int
    bytes: int  # of the frames captured, as long as on the wire
    rejected: int  # frames it could not write (said on stderr, committed all the same)
    syscalls: int  # its own count, from the capture's start
    wakeups: int | None
    records: int | None
    committed: int | None
    refused: dict[str, int] | None
    interfaces: dict[str, NtadumpIface]

    @classmethod
    def from_json(cls, text: str) -> NtadumpReport:
        data: dict[str, Any] = json.loads(text)
        data["interfaces"] = {k: NtadumpIface(**v) for k, v in data["interfaces"].items()}
        return cls(**data)


@dataclass(frozen=True)
class SocketMemory:
    """One socket's receive memory, as the kernel accounts it (SO_MEMINFO)."""

    rmem_alloc: int  # bytes charged to the socket: the sum of its skbs' truesize
    rcvbuf: int
    drops: int


@dataclass(frozen=True)
class SinkReport:
    """lab.guestside.udpsink: unread UDP sockets, each as the kernel accounts it."""

    sockets: list[SocketMemory]

    @classmethod
    def from_json(cls, text: str) -> SinkReport:
        return cls([SocketMemory(**s) for s in json.loads(text)["sockets"]])


@dataclass(frozen=True)
class ScanReport(FlatReport):
    """lab.guestside.poolscan: what one reader's pool mappings, whole, show it."""

    frames: int
    pool_bytes: int  # every pool it maps, together
    marker_hits: int  # another reader's device's marker, found in its pools
    kernel_words_shinfo: int  # words like kernel addresses in chunks' skb_shared_info
    kernel_words_elsewhere: int
    other_dev_stats_refused: bool  # the counters of a device it did not attach


@dataclass(frozen=True)
class ScribbleReport(FlatReport):
    """lab.guestside.scribbler: the garbage a reader wrote over its ring mapping."""

    rounds: int
    bytes_scribbled: int
    kicks: int
    writes: int
    writes_refused: int


@dataclass(frozen=True)
class WakeProbeReport(FlatReport):
    """lab.guestside.wakeprobe: NTA_COMMIT_NEED_WAKEUP, set and cleared."""

    held_when_set: int  # chunks the reader held when the flag came (-1: it never did)
    cleared_by_commit: bool
    syscalls_to_clear: int
    frames_after: int
    not_shared_after: int  # of those frames, how many found the reader at its limit
    times_set: int


@dataclass(frozen=True)
class LifecycleReport(FlatReport):
    """lab.guestside.lifecycle: one reader through attaching, detaching, its device going."""

    cycles: int  # attach/detach cycles that succeeded
    attach_error: str  # the first refusal, if any
    frames: int  # read while attached after the cycles
    received: int  # NTA_IOC_DEV_STATS of the live attachment then
    published: int
    records_after_detach: int  # records published after it detached (none may be)
    received_after_detach: int  # counted for the device after it detached
    exec_map_refused: bool
    exec_mprotect_refused: bool
    hung_up: bool  # poll() said POLLHUP once its only device was gone


@dataclass(frozen=True)
class BadFilterReport(FlatReport):
    """lab.guestside.badfilter: what the module answered each malformed NTA_IOC_SET_FILTER
    and NTA_IOC_SET_DIRECTION (an errno name, or "ok"), and what then became of the frames
    the device received under the good program set before them (ret #0: none kept)."""

    answers: dict[str, str]
    received: int
    filtered: int
    published: int
    records: int  # records the reader was given
