"""The sniffers the benchmark compares: one class each, found by name in ``SNIFFERS``.

A sniffer says how the guest-side meter starts it and knows it is ready
(``launch``: the Python readers say so through the lab's protocol,
``lab.guestside.protocol``, the native ones by a line on stderr), and what
it says of its own run (``figures``): frames seen, frames it says it
missed, its own counts (under a load of several readers the meter runs
copies of it, and each copy says so of its own). Every sniffer takes
received frames only (NTA publishes nothing else; AF_PACKET is set to
ignore outgoing ones, tcpdump runs with ``-Q in``). The Python readers do the same
work per frame (a CRC32 over its bytes, read in place), as do the native
ones (write it to /dev/null), so each pair differs only by the path the
bytes take.

- ``none``: no sniffer, NTA not loaded: the baseline every cost is measured from;
- ``none-loaded``: no sniffer, NTA loaded but serving no device: what the
  module costs a device it does not serve;
- ``afpacket``: a TPACKET_V3 mmap ring (what libpcap uses) read in Python;
- ``tcpdump``: ``tcpdump -Q in -w /dev/null`` itself (the host's: the guest
  runs the host's userspace);
- ``pysniff``: NTA's Python reader, bulk path, reading its chunks in place;
- ``ntadump``: NTA's native reader, ``-w /dev/null --json``.

NTA is loaded with its default parameters for every sniffer but ``none``; it
serves a device only once a reader attaches it, so under ``afpacket`` and
``tcpdump`` it is loaded and idle, as under ``none-loaded``.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, replace
from typing import Protocol

from lab import LabError, UsageError
from lab.guestside.protocol import Afpacket as AfpacketRequest
from lab.guestside.protocol import Meter
from lab.guestside.reports import AfpacketReport, MeterReport, NtadumpReport, SnifferOutput
from pysniff.report import SniffReport

# NTA's chunk: a page. Each record of a reader's ring is one.
NTA_CHUNK = 4096
# A sniffer under a load with no frame count runs until it is stopped.
UNTIL_STOPPED = 10**9


@dataclass(frozen=True)
class Tools:
    """The programs the native sniffers run (the host's: the guest runs its userspace)."""

    ntadump: str
    tcpdump: str


@dataclass(frozen=True)
class Launch:
    """How the meter starts a sniffer, how it knows the sniffer is ready, and how long the
    sniffer may still need once the NIC is done before a stop loses none of its frames."""

    args: tuple[str, ...]  # the command; with ``module``, the module's arguments
    module: str | None = None  # a Python module, forked from the guest's warm interpreter
    ready_line: str | None = None  # ready at this line on its stderr (None: the protocol)
    drain_s: float = 0.0  # its batching delay, if SIGINT would drop what it batched

    def meter(self, window: Meter) -> Meter:
        """The meter's request: ``window`` (how it measures), this sniffer in it."""
        return replace(
            window, wait_line=self.ready_line, module=self.module, cmd=self.args,
            drain_s=self.drain_s,
        )  # fmt: skip


@dataclass(frozen=True)
class Figures:
    """What a sniffer says of its own run, beside what the meter measured."""

    seen: int  # frames it captured (GRO on: merged frames, as it saw them)
    missed: int | None = None  # frames it says the kernel had and did not give it
    buf_bytes: int | None = None  # NTA: a chunk per record; AF_PACKET: block bytes filled
    own_syscalls: int | None = None  # NTA readers' own counts, to cross-check the meter's
    own_wakeups: int | None = None


class Sniffer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def needs_module(self) -> bool:
        """NTA loaded during its trials."""
        ...

    def launch(
        self, iface: str, count: int | None, tools: Tools, expr: str | None = None
    ) -> Launch | None:
        """How the meter starts it on ``iface``, stopping after ``count`` frames (None: when
        stopped), keeping only frames the filter expression ``expr`` passes (tcpdump's
        language); None: no process, the window alone."""
        ...

    def figures(self, report: MeterReport, iface: str) -> list[Figures]:
        """What it says of its run: a Figures per copy the meter ran, in their order."""
        ...


@dataclass(frozen=True)
class Idle:
    """No sniffer: what receiving costs alone, with NTA loaded or not."""

    name: str
    needs_module: bool

    def launch(
        self, iface: str, count: int | None, tools: Tools, expr: str | None = None
    ) -> Launch | None:
        return None

    def figures(self, report: MeterReport, iface: str) -> list[Figures]:
        return [Figures(seen=report.rx_packets or 0)]  # no process: what the NIC received


class Program(abc.ABC):
    """A sniffer that runs: each copy's figures, from what it printed."""

    needs_module = True

    def figures(self, report: MeterReport, iface: str) -> list[Figures]:
        return [self.parse(out, iface) for out in report.copies]

    @abc.abstractmethod
    def parse(self, out: SnifferOutput, iface: str) -> Figures:
        """What one copy says of its run."""


class Afpacket(Program):
    name = "afpacket"

    def launch(
        self, iface: str, count: int | None, tools: Tools, expr: str | None = None
    ) -> Launch:
        request = AfpacketRequest(iface, count or UNTIL_STOPPED, duration=3600, filter=expr or "")
        # SIGINT ends it at once, leaving unread the blocks the kernel handed it: it reads
        # each within a poll (100 ms) of its retiring (10 ms), longer in Python under TCG.
        return Launch(tuple(request.to_argv()), module=AfpacketRequest.MODULE, drain_s=0.5)

    def parse(self, out: SnifferOutput, iface: str) -> Figures:
        afp = AfpacketReport.from_json(out.stdout)
        return Figures(afp.frames, afp.kernel_drops, buf_bytes=afp.bytes_in_blocks)


@dataclass(frozen=True)
class TcpdumpStats:
    """The counts tcpdump prints on stderr at exit (libpcap's pcap_stats)."""

    captured: int
    received_by_filter: int | None
    dropped_by_kernel: int | None


_TCPDUMP_COUNT = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)$")


def parse_tcpdump(stderr: str) -> TcpdumpStats:
    """tcpdump's own counts: the only figures still read from a program's text (it is not
    ours); a LabError if it printed none."""
    counts = {}
    for line in stderr.splitlines():
        if m := _TCPDUMP_COUNT.match(line.strip()):
            counts[m.group(2)] = int(m.group(1))
    if "captured" not in counts:
        raise LabError(f"tcpdump printed no capture count: {stderr[-500:]!r}")
    return TcpdumpStats(
        counts["captured"], counts.get("received by filter"), counts.get("dropped by kernel")
    )


class Tcpdump(Program):
    name = "tcpdump"

    def launch(
        self, iface: str, count: int | None, tools: Tools, expr: str | None = None
    ) -> Launch:
        args = [tools.tcpdump, "-i", iface, "-n", "-Q", "in", "-w", "/dev/null"]
        args += ["-B", "2048"]  # 2 MiB, as the AF_PACKET reader's ring
        if count is not None:
            args += ["-c", str(count)]
        if expr:
            args.append(expr)
        # libpcap hands over a TPACKET_V3 block when it is full or after its 1 s timeout;
        # SIGINT ends tcpdump without the block still open.
        return Launch(tuple(args), ready_line="listening on", drain_s=1.5)

    def parse(self, out: SnifferOutput, iface: str) -> Figures:
        stats = parse_tcpdump(out.stderr)
        return Figures(stats.captured, stats.dropped_by_kernel)


class Pysniff(Program):
    name = "pysniff"

    def launch(
        self, iface: str, count: int | None, tools: Tools, expr: str | None = None
    ) -> Launch:
        # The module's default wakeup policy: what a reader gets without asking.
        # Ready through the protocol: its --ready-file defaults to $NTALAB_READY. -Q in:
        # what tcpdump's row captures (the readers' default is both directions).
        # No drain: stopped, it takes what the module published at its next wakeup.
        args = ["-i", iface, "-Q", "in", "--json", "--bulk"]
        if count is not None:
            args += ["-c", str(count)]
        if expr:
            args += ["-f", expr]
        return Launch(tuple(args), module="pysniff.cli")

    def parse(self, out: SnifferOutput, iface: str) -> Figures:
        sn = SniffReport.from_json(out.stdout)
        return Figures(
            sn.frames,
            sn.missed(iface),
            buf_bytes=NTA_CHUNK * sn.reader.records,
            own_syscalls=sn.syscalls,
            own_wakeups=sn.reader.wakeups,
        )


class Ntadump(Program):
    name = "ntadump"

    def launch(
        self, iface: str, count: int | None, tools: Tools, expr: str | None = None
    ) -> Launch:
        args = [tools.ntadump, "-i", iface, "-Q", "in", "-w", "/dev/null", "--json"]
        if count is not None:
            args += ["-c", str(count)]
        if expr:
            args += ["-f", expr]
        # No drain: SIGINT wakes it, and it takes every frame published before it exits.
        return Launch(tuple(args), ready_line="ntadump: listening on")

    def parse(self, out: SnifferOutput, iface: str) -> Figures:
        nd = NtadumpReport.from_json(out.stdout)
        dev = nd.interfaces.get(iface)
        return Figures(
            nd.frames,
            dev.missed if dev is not None else None,
            buf_bytes=NTA_CHUNK * nd.records if nd.records is not None else None,
            own_syscalls=nd.syscalls,
            own_wakeups=nd.wakeups,
        )


SNIFFERS: dict[str, Sniffer] = {
    s.name: s
    for s in (
        Idle("none", needs_module=False),
        Idle("none-loaded", needs_module=True),
        Afpacket(),
        Tcpdump(),
        Pysniff(),
        Ntadump(),
    )
}
IDLE = ("none", "none-loaded")  # no sniffer process: the window alone


def parse(text: str) -> list[Sniffer]:
    """A comma list of sniffer names, in the registry's order (none first, so NTA is
    unloaded and loaded once a round); a UsageError names an unknown one."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SNIFFERS]
    if unknown or not names:
        what = f"unknown sniffer {unknown[0]!r}" if unknown else "no sniffer given"
        raise UsageError(f"--sniffers: {what}; known: {', '.join(SNIFFERS)}")
    return [s for name, s in SNIFFERS.items() if name in names]
