"""``ntalab bench``: NTA's zero-copy readers against AF_PACKET's, side by side, one guest.

Under one load, each sniffer runs in turn, round after round (A B A B), so
slow drift of a noisy host hits all of them alike. In each round, in order:

- ``none``: no sniffer, NTA not loaded: the cost of receiving alone, and the
  baseline the softirq column is measured from;
- ``none-loaded``: no sniffer, NTA loaded but serving no device: what the
  module costs a device it does not serve;
- ``afpacket``: a TPACKET_V3 mmap ring (what libpcap uses) read in Python;
- ``tcpdump``: ``tcpdump -Q in -w /dev/null`` itself, where the host has it;
- ``pysniff``: NTA's Python reader, bulk path, reading its chunks in place;
- ``ntadump``: NTA's native reader, ``-w /dev/null``.

NTA is loaded with its default parameters (a pool per reader, the default
wakeup policy) for every sniffer but ``none``; it serves a device only once
a reader attaches it, so under ``afpacket`` and ``tcpdump`` it is loaded and
idle, as under ``none-loaded``. An NTA reader attaches its device itself,
and the device's receive ring still holds buffers from before: so once the
sniffer is ready the host bounces the link (the driver refills its ring,
from the reader's pool), and only then starts the measured window and the
load. Every trial bounces, whatever the sniffer, so all go through the same
steps.

Loads: UDP frames injected at a fixed rate (2000/s by default) and as fast as
the NIC takes them (e1000's back-pressure), and a web-server load closer to
the seed's httperf run: a small HTTP server in the guest, answering the
host's requests (several clients, a connection per request) through QEMU's
user-mode network, which forwards a loopback port: no root, no tap, no
address outside the guest.

Every sniffer takes received frames only (NTA publishes nothing else;
AF_PACKET is set to ignore outgoing ones, tcpdump runs with ``-Q in``). The
Python readers do the same work per frame (a CRC32 over its bytes, read in
place), as do the native ones (write it to /dev/null), so each pair differs
only by the path the bytes take. Per trial the guest (lab.guestside.meter)
measures, from the start of the window to the sniffer's exit:

- the sniffer's CPU time: the scheduler's exact runtime (schedstat), not
  utime + stime, which are sampled at each tick and so skew against a reader
  that wakes on a timer;
- its system calls, counted by a tracing hist trigger on
  raw_syscalls:sys_enter filtered by its pid: the same counter for every
  sniffer, C or Python, where a reader's count of its own calls is the very
  thing checked (both NTA readers' own counts are kept beside, to cross-check);
- its wakeups: its voluntary context switches, a sleep each, so for a reader
  blocking in poll() one per wakeup (NTA's own count kept beside);
- the guest's softirq time, where the kernel's receive path runs.

The table gives, per load and sniffer, medians over the rounds (and the
spread, min..max, of the CPU columns): sniffer CPU per delivered frame, and
sniffer + softirq per frame less the ``none`` row's softirq per frame from
the same load (the cost the sniffer adds to receiving); system calls and
wakeups per 1000 frames; buffer bytes per captured frame (NTA: a chunk per
record; AF_PACKET: the bytes the kernel filled in the ring's blocks); the
sniffer CPU ratio to tcpdump and to the Python AF_PACKET reader; then the
project's targets, each with the measured figure, met or missed by how much
(reported, not asserted). Under TCG absolute times are emulated time: read
the ratios. Debian's kernels account softirq time by sampling at each tick
(no IRQ_TIME_ACCOUNTING), so that column needs long trials: the flat-out
load sends more frames than the fixed one, so that its trials last seconds
too, and the spread says how settled it is.
"""

from __future__ import annotations

import functools
import http.client
import json
import platform
import re
import shutil
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lab import LabError, UsageError, accel, images, kbuild, nics, traffic
from lab.guest import Guest, GuestSpec
from lab.guestnet import GuestNic
from lab.guestside.protocol import Afpacket, Httpd, Meter
from lab.guestside.reports import AfpacketReport, MeterReport
from lab.testbed import Testbed
from pysniff.report import SniffReport

SNIFFERS = ("none", "none-loaded", "afpacket", "tcpdump", "pysniff", "ntadump")
NO_PROCESS = ("none", "none-loaded")  # the window alone: no sniffer process
NTA_READERS = ("pysniff", "ntadump")
# NTA's chunk: a page. Each record of a reader's ring is one, and without GRO
# (off on the lab's NICs) a frame is one record.
NTA_CHUNK = 4096
# After a web load's last request: longer than any sniffer's batching delay
# (libpcap's block timeout in tcpdump is 1 s), so that each has taken every
# frame before it is stopped; counted against none.
WEB_SETTLE_S = 1.5


@dataclass(frozen=True)
class Load:
    """Injected frames (``frames`` at ``rate``), or with ``web``, HTTP requests from the host."""

    name: str
    frames: int  # for a web load: requests
    rate: float | None  # None: as fast as the NIC takes them (e1000 back-pressure)
    web: bool = False


def parse_sniffers(text: str) -> list[str]:
    """A comma list of sniffer names, in the benchmark's order; UsageError for an unknown one."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SNIFFERS]
    if unknown or not names:
        what = f"unknown sniffer {unknown[0]!r}" if unknown else "no sniffer given"
        raise UsageError(f"--sniffers: {what}; known: {', '.join(SNIFFERS)}")
    # Always in SNIFFERS' order: none first, so NTA is unloaded and loaded once a round.
    return [s for s in SNIFFERS if s in names]


# -- the web load ---------------------------------------------------------------------------

# The web load's NIC: an e1000 on QEMU's user-mode network, which forwards a
# loopback port of the host to the guest's HTTP server. restrict=on: the guest
# reaches nothing outside; only the forwarded connections come in.
WEB_MAC = "52:54:00:4e:fe:00"
WEB_NET = "10.77.254"
WEB_PORT = 8080
WEB_CLIENTS = 8


def web_nic_opts(host_port: int) -> tuple[str, ...]:
    netdev = (
        f"user,id=web,net={WEB_NET}.0/24,host={WEB_NET}.1,restrict=on,"
        f"hostfwd=tcp:127.0.0.1:{host_port}-{WEB_NET}.2:{WEB_PORT}"
    )
    return ("-netdev", netdev, "-device", f"e1000,netdev=web,mac={WEB_MAC}")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fetch_pages(port: int, requests: int, clients: int = WEB_CLIENTS) -> traffic.InjectResult:
    """``requests`` GETs over ``clients`` connections at a time, one connection each."""
    left = iter(range(requests))
    lock = threading.Lock()
    done = 0
    errors: Counter[str] = Counter()

    def client() -> None:
        nonlocal done
        while True:
            with lock:
                if next(left, None) is None:
                    return
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/")
                body = conn.getresponse().read()
            except OSError as err:  # counted as not done: the table shows fewer requests
                with lock:
                    errors[type(err).__name__] += 1
                continue
            finally:
                conn.close()
            if len(body) == 8192:
                with lock:
                    done += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f" (failed: {', '.join(f'{n} {kind}' for kind, n in errors.items())})", end="")
    return traffic.InjectResult(done, time.monotonic() - start)


# -- one trial ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One sniffer under one load, one round: what the guest measured over the window."""

    load: str
    sniffer: str
    round: int
    injected: int
    inject_rate: float
    rx: int  # frames the NIC received in the window
    delivered: int  # frames the sniffer says it captured (none: rx)
    sniffer_cpu_s: float
    softirq_s: float
    busy_s: float  # guest CPU time not idle, all CPUs
    window_s: float = 0.0
    syscalls: int | None = None  # the sniffer's, traced over the window (None: not counted)
    wakeups: int | None = None  # its voluntary context switches over the window
    involuntary: int | None = None
    buf_bytes: int | None = None  # NTA: chunks x records; afpacket: block bytes filled
    own_syscalls: int | None = None  # NTA readers: their own count, since ready
    own_wakeups: int | None = None  # NTA readers: the module's count of their wakeups
    reader_missed: int | None = None  # NTA readers: frames the device got and they did not
    module_loaded: bool = False
    user_ticks: int = 0  # the sniffer's clock ticks in its own code
    system_ticks: int = 0  # ... and in the kernel on its behalf (system calls)


def sniffer_request(
    name: str, iface: str, count: int, started: Path, ntadump: str = "ntadump"
) -> Meter:
    """The meter's request for one sniffer: its command, and how it says it is ready (the
    Python ones through the lab's protocol, the native ones by a line on stderr)."""
    py = (sys.executable, "-S")  # both Python sniffers use the standard library only
    if name in NO_PROCESS:
        return Meter(hold=started)
    if name == "afpacket":
        argv = Afpacket(iface, count, duration=600).to_argv()
        return Meter(hold=started, cmd=(*py, "-m", Afpacket.MODULE, *argv))
    if name == "tcpdump":
        tcpdump = shutil.which("tcpdump") or "tcpdump"
        cmd: tuple[str, ...] = (tcpdump, "-i", iface, "-n", "-Q", "in", "-w", "/dev/null")
        cmd += ("-c", str(count), "-B", "2048")  # 2 MiB, as the AF_PACKET reader's ring
        return Meter(hold=started, wait_line="listening on", cmd=cmd)
    if name == "pysniff":
        # The module's default wakeup policy: what a reader gets without asking.
        cmd = (*py, "-m", "pysniff", "-i", iface, "-c", str(count), "--json", "--bulk")
        return Meter(hold=started, cmd=cmd)
    if name == "ntadump":
        cmd = (ntadump, "-i", iface, "-c", str(count), "-w", "/dev/null")
        return Meter(hold=started, wait_line="ntadump: listening on", cmd=cmd)
    raise UsageError(f"unknown sniffer {name!r}; known: {', '.join(SNIFFERS)}")


@dataclass(frozen=True)
class SnifferFigures:
    """What a sniffer says of its own run (beside what the meter measured)."""

    delivered: int
    buf_bytes: int | None = None
    own_syscalls: int | None = None
    own_wakeups: int | None = None
    reader_missed: int | None = None


_NTADUMP_TOTAL = re.compile(r"^(\d+) frames captured, (\d+) system calls(?:, (\d+) wakeups)?$")
_NTADUMP_IFACE = re.compile(r"^(\S+): (\d+) received, (\d+) captured, (\d+) not delivered")


def sniffer_figures(name: str, report: MeterReport, rx: int, iface: str) -> SnifferFigures:
    """How many frames the sniffer saw, and its own counts, from its output."""
    if name in NO_PROCESS:
        return SnifferFigures(rx)
    if name == "tcpdump":
        for line in report.stderr.splitlines():
            if line.endswith("packets captured"):
                return SnifferFigures(int(line.split()[0]))
        raise LabError(f"tcpdump printed no capture count: {report.stderr!r}")
    if name == "afpacket":
        afp = AfpacketReport.from_json(report.stdout)
        return SnifferFigures(afp.frames, buf_bytes=afp.bytes_in_blocks)
    if name == "pysniff":
        sn = SniffReport.from_json(report.stdout)
        return SnifferFigures(
            sn.frames,
            buf_bytes=NTA_CHUNK * sn.reader.records,
            own_syscalls=sn.syscalls,
            own_wakeups=sn.reader.wakeups,
            reader_missed=sn.missed(iface),
        )
    if name == "ntadump":
        total, missed = None, None
        for line in report.stderr.splitlines():
            if m := _NTADUMP_TOTAL.match(line.strip()):
                total = m
            elif (m := _NTADUMP_IFACE.match(line.strip())) and m.group(1) == iface:
                missed = int(m.group(4))
        if total is None:
            raise LabError(f"ntadump printed no summary: {report.stderr!r}")
        frames = int(total.group(1))
        return SnifferFigures(
            frames,
            # Its records are not reported: without GRO, one per frame.
            buf_bytes=NTA_CHUNK * frames,
            own_syscalls=int(total.group(2)),
            own_wakeups=int(total.group(3)) if total.group(3) else None,
            reader_missed=missed,
        )
    raise UsageError(f"unknown sniffer {name!r}")


@dataclass(frozen=True)
class Where:
    """Where the trial runs: the interface the load arrives on, and how to refill its ring."""

    iface: str
    refill: Callable[[], None]


def run_trial(
    env: Testbed,
    where: Where,
    sniffer: str,
    load: Load,
    rnd: int,
    drive: Callable[[], int],
    ntadump: str = "ntadump",
) -> Trial:
    """One sniffer under one load. ``drive`` makes the load; it returns the frames the
    NIC must have received before the sniffer is stopped (0: whatever came)."""
    tag = f"bench-{load.name}-{sniffer}-{rnd}"
    started, out = env.outdir / f"{tag}.started", env.outdir / f"{tag}.json"
    # A web load has no frame count to stop at: the sniffer runs until stopped.
    count = 10**9 if load.web else load.frames
    request = sniffer_request(sniffer, where.iface, count, started, ntadump)
    meter = env.start(tag, request, ready=True, out=out)
    meter.wait_ready()
    # The sniffer is ready (an NTA reader has attached): the ring refills, from
    # its pool for an NTA reader. Outside the window: no sniffer pays for it.
    where.refill()
    meter.signal("USR1")
    meter.wait_file(started, 60)
    rx0 = rx_packets(env, where.iface)
    start = time.monotonic()
    sent = drive()
    elapsed = time.monotonic() - start
    stats = f"/sys/class/net/{where.iface}/statistics/rx_packets"
    settle = WEB_SETTLE_S if load.web else 0
    # Wait (bounded) for the NIC to have it all and the sniffer to finish on its own
    # (the last, partial batch of a batching reader comes after its timeout).
    wait_exit = "false" if sniffer in NO_PROCESS else f"kill -0 {meter.pid} 2>/dev/null"
    env.cmd(
        f"n=0; while [ $(cat {stats}) -lt {rx0 + sent} ] && [ $n -lt 200 ]; "
        f"do sleep 0.05; n=$((n+1)); done; sleep {settle}; n=0; "
        f"while {wait_exit} && [ $n -lt 200 ]; "
        f"do sleep 0.05; n=$((n+1)); done; kill -TERM {meter.pid} 2>/dev/null; true",
        timeout=120,
    )
    report = meter.result(MeterReport.from_json, 120)
    if report.exit not in (0, None):
        raise LabError(f"{sniffer} exited {report.exit}: {report.stderr[-2000:]}")
    rx = rx_packets(env, where.iface) - rx0
    cpu = report.cpu_s
    injected = rx if load.web else sent
    own = sniffer_figures(sniffer, report, rx, where.iface)
    process = sniffer not in NO_PROCESS
    return Trial(
        load=load.name,
        sniffer=sniffer,
        round=rnd,
        injected=injected,
        inject_rate=round(injected / elapsed) if elapsed > 0 else 0,
        rx=rx,
        delivered=own.delivered,
        sniffer_cpu_s=report.sniffer_cpu_s,
        softirq_s=float(cpu["softirq"]),
        busy_s=round(sum(v for k, v in cpu.items() if k not in ("idle", "iowait")), 3),
        window_s=round(report.elapsed_s, 3),
        syscalls=report.syscalls,
        wakeups=report.voluntary_switches if process else None,
        involuntary=report.involuntary_switches if process else None,
        buf_bytes=own.buf_bytes,
        own_syscalls=own.own_syscalls,
        own_wakeups=own.own_wakeups,
        reader_missed=own.reader_missed,
        module_loaded=sniffer != "none",
        user_ticks=report.sniffer_user_ticks,
        system_ticks=report.sniffer_system_ticks,
    )


def rx_packets(env: Testbed, iface: str) -> int:
    return int(env.cmd(f"cat /sys/class/net/{iface}/statistics/rx_packets").stdout)


def progress_head(elapsed_s: float, load: str, rnd: int, rounds: int, sniffer: str) -> str:
    """The line begun before a trial: ``[m:ss] load L round R/N: sniffer S ...``."""
    m, s = divmod(int(elapsed_s), 60)
    return f"[{m}:{s:02d}] load {load} round {rnd + 1}/{rounds}: sniffer {sniffer} ..."


def progress_tail(t: Trial) -> str:
    """The trial's key figures, ending the line ``progress_head`` began."""
    frames = max(t.delivered, 1)
    parts = [
        f"{t.delivered}/{t.injected} frames",
        f"softirq {t.softirq_s / max(t.rx, 1) * 1e6:.1f} us/frame",
    ]
    if t.sniffer not in NO_PROCESS:
        parts.insert(1, f"sniffer {t.sniffer_cpu_s / frames * 1e6:.1f} us/frame")
        if t.syscalls is not None:
            parts.append(f"{t.syscalls / frames * 1000:.1f} syscalls/1k")
        if t.wakeups is not None:
            parts.append(f"{t.wakeups / frames * 1000:.1f} wakeups/1k")
    return " " + ", ".join(parts)


# -- the arithmetic -------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """The median of a figure over the rounds, and its range."""

    median: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        vs = list(values)
        return cls(statistics.median(vs), min(vs), max(vs))


@dataclass(frozen=True)
class Row:
    """One sniffer under one load, over the rounds."""

    load: str
    sniffer: str
    rounds: int
    rate: float  # frames/s injected (web: received), median
    injected: float
    delivered: float
    drops: float  # injected - delivered, median, at least 0
    sniffer_us: Spread  # the sniffer's CPU per delivered frame
    softirq_us: Spread  # the guest's softirq per received frame, as measured
    total_us: Spread  # sniffer + softirq per frame, less the none row's softirq per frame
    syscalls_per_k: Spread | None  # per 1000 delivered frames (None: not counted)
    wakeups_per_k: Spread | None
    buf_bytes_per_frame: float | None
    vs_tcpdump: float | None  # sniffer_us median over tcpdump's
    vs_afpacket: float | None  # ... over the Python AF_PACKET reader's
    own_syscalls_per_k: float | None = None  # NTA readers' own counts, to cross-check
    own_wakeups_per_k: float | None = None
    kernel_share: float | None = None  # of the sniffer's ticks, over all rounds: in the kernel


def _per_frame(value: float, frames: int, scale: float) -> float:
    return value / max(frames, 1) * scale


def _each(
    trials: Sequence[Trial], count: Callable[[Trial], int | None], scale: float
) -> list[float | None]:
    """``count`` of each trial per delivered frame, times ``scale`` (None where not counted)."""
    return [None if (n := count(t)) is None else _per_frame(n, t.delivered, scale) for t in trials]


def _spread_or_none(values: list[float | None]) -> Spread | None:
    got = [v for v in values if v is not None]
    return Spread.of(got) if got else None


def _median_or_none(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b is not None and b > 0 else None


def _kernel_share(trials: Sequence[Trial]) -> float | None:
    """The share of the sniffer's ticks spent in the kernel, summed over the rounds (ticks
    are sampled: the sum over every round is steadier than a median of small counts)."""
    system = sum(t.system_ticks for t in trials)
    total = system + sum(t.user_ticks for t in trials)
    return round(system / total, 3) if total else None


def summarize(trials: Sequence[Trial]) -> list[Row]:
    """Per (load, sniffer): medians over the rounds of per-frame figures, and ratios.

    Each figure is per frame per trial first, then the median over the rounds:
    trials of the web load differ in their frame counts. Softirq per frame is
    per frame the NIC received (the receive path runs for each, whoever reads
    it); the baseline taken off is the median of the ``none`` trials' from the
    same load (0 without them).
    """
    rows: list[Row] = []
    for load in dict.fromkeys(t.load for t in trials):
        group = [t for t in trials if t.load == load]
        base = [_per_frame(t.softirq_s, t.rx, 1e6) for t in group if t.sniffer == "none"]
        base_us = statistics.median(base) if base else 0.0
        per: dict[str, Row] = {}
        for sniffer in [s for s in SNIFFERS if any(t.sniffer == s for t in group)]:
            ts = [t for t in group if t.sniffer == sniffer]
            cpu = [_per_frame(t.sniffer_cpu_s, t.delivered, 1e6) for t in ts]
            soft = [_per_frame(t.softirq_s, t.rx, 1e6) for t in ts]
            per[sniffer] = Row(
                load=load,
                sniffer=sniffer,
                rounds=len(ts),
                rate=statistics.median(t.inject_rate for t in ts),
                injected=statistics.median(t.injected for t in ts),
                delivered=statistics.median(t.delivered for t in ts),
                drops=max(0, statistics.median(t.injected - t.delivered for t in ts)),
                sniffer_us=Spread.of(cpu),
                softirq_us=Spread.of(soft),
                total_us=Spread.of(c + s - base_us for c, s in zip(cpu, soft, strict=True)),
                syscalls_per_k=_spread_or_none(_each(ts, lambda t: t.syscalls, 1e3)),
                wakeups_per_k=_spread_or_none(_each(ts, lambda t: t.wakeups, 1e3)),
                buf_bytes_per_frame=_median_or_none(_each(ts, lambda t: t.buf_bytes, 1)),
                vs_tcpdump=None,
                vs_afpacket=None,
                own_syscalls_per_k=_median_or_none(_each(ts, lambda t: t.own_syscalls, 1e3)),
                own_wakeups_per_k=_median_or_none(_each(ts, lambda t: t.own_wakeups, 1e3)),
                kernel_share=_kernel_share(ts),
            )
        tcpdump, afpacket = per.get("tcpdump"), per.get("afpacket")
        for row in per.values():
            if row.sniffer not in NO_PROCESS:
                ours = row.sniffer_us.median
                row = replace(
                    row,
                    vs_tcpdump=_ratio(ours, tcpdump.sniffer_us.median if tcpdump else None),
                    vs_afpacket=_ratio(ours, afpacket.sniffer_us.median if afpacket else None),
                )
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Target:
    """One of the project's targets, and what this run measured of it."""

    what: str
    load: str
    limit: float
    unit: str  # "x": a ratio; "/1k": per 1000 frames
    measured: float | None  # None: not measured (a sniffer or load missing, a count unavailable)
    met: bool | None
    note: str = ""

    @classmethod
    def judge(
        cls, what: str, load: str, limit: float, unit: str, measured: float | None, note: str = ""
    ) -> Target:
        met = None if measured is None else measured <= limit
        return cls(what, load, limit, unit, measured, met, note)

    def verdict(self) -> str:
        note = f" ({self.note})" if self.note else ""
        if self.measured is None:
            return "not measured" + note
        if self.met:
            return "met" + note
        return f"missed by {_num(self.measured - self.limit)}{self.unit}{note}"


def targets(rows: Sequence[Row]) -> list[Target]:
    """The project's targets, each judged from the rows (reported, not asserted).

    Ratios are of medians; a ratio against a reference that cost nothing (or
    less, after the baseline) is not measured.
    """
    by = {(r.load, r.sniffer): r for r in rows}

    def cpu_ratio(load: str, a: str, b: str) -> float | None:
        ra, rb = by.get((load, a)), by.get((load, b))
        return _ratio(ra.sniffer_us.median, rb.sniffer_us.median) if ra and rb else None

    def total_ratio(load: str, a: str, b: str) -> float | None:
        ra, rb = by.get((load, a)), by.get((load, b))
        return _ratio(ra.total_us.median, rb.total_us.median) if ra and rb else None

    goals: list[Target] = []
    for load in ("fixed", "web"):
        goals.append(Target.judge(
            "ntadump CPU/frame vs tcpdump's", load, 0.5, "x",
            cpu_ratio(load, "ntadump", "tcpdump"),
        ))  # fmt: skip
    for load in ("fixed", "max", "web"):
        goals.append(Target.judge(
            "pysniff CPU/frame vs afpacket's", load, 0.7, "x",
            cpu_ratio(load, "pysniff", "afpacket"),
        ))  # fmt: skip
    for reader in NTA_READERS:
        row = by.get(("fixed", reader))
        traced = row.syscalls_per_k.median if row and row.syscalls_per_k else None
        own = row.own_syscalls_per_k if row else None
        # Where tracing could not count, the reader's own count, said so.
        note = "" if traced is not None or own is None else "the reader's own count"
        goals.append(Target.judge(
            f"{reader} syscalls per 1000 frames", "fixed", 10, "/1k",
            traced if traced is not None else own, note,
        ))  # fmt: skip
        wakeups = row.wakeups_per_k.median if row and row.wakeups_per_k else None
        goals.append(Target.judge(f"{reader} wakeups per 1000 frames", "fixed", 10, "/1k", wakeups))
    goals.append(Target.judge(
        "pysniff+softirq/frame vs afpacket's", "max", 1.0, "x",
        total_ratio("max", "pysniff", "afpacket"),
    ))  # fmt: skip
    goals.append(Target.judge(
        "ntadump+softirq/frame vs tcpdump's", "max", 1.0, "x",
        total_ratio("max", "ntadump", "tcpdump"),
    ))  # fmt: skip
    return goals


# -- the report -----------------------------------------------------------------------------


def _num(x: float) -> str:
    """Three significant figures or so, for columns from 0.01 to 10000."""
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _spread(s: Spread) -> str:
    return f"{_num(s.median)} ({_num(s.lo)}..{_num(s.hi)})"


def _opt(x: float | None, fmt: Callable[[float], str] = _num) -> str:
    return "-" if x is None else fmt(x)


COLUMNS = (
    ("load", 6), ("sniffer", 11), ("rate/s", 7), ("deliv/inj", 13), ("drops", 6),
    ("sniffer us/frame", 22), ("sniffer+softirq us/frame", 24), ("sys/1k", 7), ("wake/1k", 7),
    ("in kernel", 9), ("buf B/frame", 11), ("vs tcpdump", 10), ("vs afpacket", 11),
)  # fmt: skip


def table(rows: Sequence[Row]) -> str:
    """The rows as text: medians over the rounds, (min..max) for the CPU columns."""

    def line(cells: Sequence[str]) -> str:
        return " ".join(
            f"{c:<{w}}" if i < 2 else f"{c:>{w}}"
            for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
        ).rstrip()

    head = line([name for name, _ in COLUMNS])
    out = [head, "-" * len(head)]
    for r in rows:
        process = r.sniffer not in NO_PROCESS
        cells = [
            r.load, r.sniffer, f"{r.rate:.0f}", f"{r.delivered:.0f}/{r.injected:.0f}",
            f"{r.drops:.0f}", _spread(r.sniffer_us) if process else "-", _spread(r.total_us),
            _opt(r.syscalls_per_k.median if r.syscalls_per_k else None),
            _opt(r.wakeups_per_k.median if r.wakeups_per_k else None),
            _opt(r.kernel_share, lambda x: f"{x:.0%}"),
            _opt(r.buf_bytes_per_frame, lambda b: f"{b:.0f}"),
            _opt(r.vs_tcpdump, lambda x: f"{x:.2f}x"),
            _opt(r.vs_afpacket, lambda x: f"{x:.2f}x"),
        ]  # fmt: skip
        out.append(line(cells))
    return "\n".join(out)


def unserved_cost(rows: Sequence[Row]) -> list[str]:
    """Per load: what NTA, loaded, costs a device it does not serve (none-loaded vs none)."""
    by = {(r.load, r.sniffer): r for r in rows}
    lines = []
    for load in dict.fromkeys(r.load for r in rows):
        loaded, bare = by.get((load, "none-loaded")), by.get((load, "none"))
        if loaded and bare:
            lines.append(
                f"  {load}: softirq {_num(bare.softirq_us.median)} us/frame without NTA, "
                f"{_num(loaded.softirq_us.median)} with it loaded "
                f"({_num(loaded.total_us.median)} us/frame added, "
                f"rounds {_num(loaded.total_us.lo)}..{_num(loaded.total_us.hi)})"
            )
    return lines


def report_text(rows: Sequence[Row], goals: Sequence[Target]) -> str:
    out = [table(rows)]
    unserved = unserved_cost(rows)
    if unserved:
        out += ["", "NTA loaded, not serving the device (none-loaded against none):", *unserved]
    out += ["", "targets (reported, not asserted):"]
    width = max((len(g.what) for g in goals), default=0)
    for g in goals:
        measured = "-" if g.measured is None else f"{_num(g.measured)}{g.unit}"
        limit = f"<= {_num(g.limit)}{g.unit}"
        out.append(f"  {g.what:<{width}}  {g.load:<5}  {measured:>8}  {limit:>9}  {g.verdict()}")
    return "\n".join(out)


def plot(rows: Sequence[Row], path: Path, title: str) -> None:
    """Sniffer CPU per frame, and sniffer + softirq per frame, per load and sniffer,
    with the rounds' range as error bars; a log scale where they span decades."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = list(dict.fromkeys(r.load for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    panels: list[tuple[str, Callable[[Row], Spread], tuple[str, ...]]] = [
        ("sniffer CPU, us per frame", lambda r: r.sniffer_us, NO_PROCESS),
        ("sniffer + softirq over none, us per frame", lambda r: r.total_us, ("none",)),
    ]
    for ax, (label, figure, skip) in zip(axes, panels, strict=True):
        sniffers = [s for s in SNIFFERS if s not in skip and any(r.sniffer == s for r in rows)]
        width = 0.8 / max(len(sniffers), 1)
        positive = [figure(r).median for r in rows if r.sniffer in sniffers]
        positive = [v for v in positive if v > 0]
        log = bool(positive) and max(positive) / min(positive) > 30
        for i, s in enumerate(sniffers):
            by_load = {r.load: figure(r) for r in rows if r.sniffer == s}
            xs, ys, lo, hi = [], [], [], []
            for j, ld in enumerate(loads):
                v = by_load.get(ld)
                if v is None or (log and v.median <= 0):
                    continue
                xs.append(j + i * width)
                ys.append(v.median)
                lo.append(max(v.median - v.lo, 0.0))
                hi.append(max(v.hi - v.median, 0.0))
            # A sniffer keeps its colour in both panels.
            color = f"C{SNIFFERS.index(s)}"
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=s, color=color)
        if log:
            ax.set_yscale("log")
        ax.set_xticks([j + width * (len(sniffers) - 1) / 2 for j in range(len(loads))], loads)
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------


class ModuleState:
    """NTA loaded or not, as each sniffer needs it: unloaded for ``none`` only.

    Unloaded, the NICs are bounced (their rings may hold buffers NTA handed
    them); loaded, they need not be: without attach= NTA serves no device
    until a reader attaches it, and each trial bounces its own NIC anyway.
    """

    def __init__(self, env: Testbed, module: Path | None, bounce_all: Callable[[], None]):
        self.env = env
        self.module = module
        self.bounce_all = bounce_all

    def want(self, loaded: bool) -> None:
        if loaded == (self.env.nta.loaded is not None):
            return
        if loaded:
            if self.module is None:
                raise LabError("NTA was not built, but a sniffer needs it loaded")
            self.env.nta.load(self.module, "")
        else:
            self.env.nta.unload()
            self.bounce_all()


def bounce_iface(env: Testbed, iface: str) -> None:
    """Link down and up for a NIC that is not one of the lab's (the web load's), once it
    has carrier again: its ring refills from scratch."""
    carrier = f"/sys/class/net/{iface}/carrier"
    env.cmd(
        f"ip link set {iface} down && ip link set {iface} up && n=0; "
        f'until [ "$(cat {carrier} 2>/dev/null)" = 1 ] || [ $n -ge 300 ]; '
        f'do sleep 0.1; n=$((n+1)); done; [ "$(cat {carrier})" = 1 ]',
        timeout=60,
    )


def run_bench(
    kernel_name: str,
    rounds: int,
    loads: list[Load],
    sniffers: list[str],
    accel_override: str | None,
    out: Path,
) -> int:
    t0 = time.monotonic()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = images.load_manifest()
    kernel = (
        images.provide(manifest[kernel_name])
        if kernel_name in manifest
        else images.resolve(kernel_name, manifest)
    )
    acc = accel.choose(accel_override)
    if "tcpdump" in sniffers and shutil.which("tcpdump") is None:
        print("tcpdump is not installed on the host (the guest runs its userspace): skipped")
        sniffers = [s for s in sniffers if s != "tcpdump"]
    module = None
    if any(s != "none" for s in sniffers):
        built = kbuild.build(kernel)
        if built.module is None:
            raise LabError(f"NTA did not build for {kernel.name}: see {built.log}")
        module = built.module
    ntadump = str(kbuild.build_ntadump().program) if "ntadump" in sniffers else "ntadump"
    web_port = free_loopback_port() if any(ld.web for ld in loads) else None
    extra = web_nic_opts(web_port) if web_port is not None else ()
    spec = GuestSpec(kernel, nics.nic_set("e1000"), acc, name="ntalab-bench", qemu_opts=extra)
    trials: list[Trial] = []
    boot_s = 0.0

    def result(rows: list[Row], goals: list[Target], complete: bool) -> dict[str, Any]:
        return {
            "kernel": kernel.release,
            "accel": acc.name,
            "accel_reason": acc.reason,
            "host": _host_cpu(),
            "boot_s": round(boot_s, 1),
            "total_s": round(time.monotonic() - t0, 1),
            "complete": complete,
            "rounds": rounds,
            "sniffers": sniffers,
            "loads": [asdict(ld) for ld in loads],
            "rows": [asdict(r) for r in rows],
            "targets": [asdict(g) | {"verdict": g.verdict()} for g in goals],
            "trials": [asdict(t) for t in trials],
        }

    with Guest(spec, out / "guest") as guest:
        boot_s = guest.boot_seconds
        env = Testbed.up(guest, kernel, "e1000")
        gn = env.nics[0]
        web_iface = setup_web_nic(env) if web_port is not None else None

        def bounce_all() -> None:
            env.net.bounce([gn])
            if web_iface is not None:
                bounce_iface(env, web_iface)

        state = ModuleState(env, module, bounce_all)
        try:
            for load in loads:
                if load.web:
                    assert web_iface is not None and web_port is not None
                    where = Where(web_iface, functools.partial(bounce_iface, env, web_iface))
                    drive = web_driver(env, load, web_port)
                else:
                    where = Where(gn.iface, functools.partial(env.net.bounce, [gn]))
                    drive = frame_driver(env, gn, load)
                for rnd in range(rounds):
                    for sniffer in sniffers:
                        state.want(sniffer != "none")
                        head = progress_head(time.monotonic() - t0, load.name, rnd, rounds, sniffer)
                        print(head, end="", flush=True)
                        trial = run_trial(env, where, sniffer, load, rnd, drive, ntadump)
                        print(progress_tail(trial), flush=True)
                        trials.append(trial)
        except BaseException:
            # Hours of trials are not lost to the last one: what was measured is kept.
            print(f"\nbench stopped; {len(trials)} trials kept in {out}/bench-partial.json")
            partial = result(summarize(trials), [], complete=False)
            (out / "bench-partial.json").write_text(json.dumps(partial, indent=2) + "\n")
            raise
    rows = summarize(trials)
    goals = targets(rows)
    where_run = f"{acc.name} ({acc.reason}); host cpu {platform.processor() or platform.machine()}"
    final = result(rows, goals, complete=True)
    (out / "bench.json").write_text(json.dumps(final, indent=2) + "\n")
    plot(rows, out / "bench.png", f"NTA vs AF_PACKET, {kernel.release}, {acc.name}, {_host_cpu()}")
    print(f"\n{report_text(rows, goals)}\n\naccelerator: {where_run}")
    print(f"guest boot {boot_s:.0f}s, bench {final['total_s']:.0f}s; results: {out}")
    return 0


def frame_driver(env: Testbed, gn: GuestNic, load: Load) -> Callable[[], int]:
    # Load, not a delivery check: a thousand distinct frames, sent over again.
    addrs = traffic.Addresses(gn.mac, gn.guest_ip, gn.host_ip)
    distinct = traffic.frames(1, min(load.frames, 1000), addrs, ("udp4",), seed=1)
    batch = (distinct * (load.frames // len(distinct) + 1))[: load.frames]

    def drive() -> int:
        return env.send(gn, batch, load.rate).sent

    return drive


def setup_web_nic(env: Testbed) -> str:
    """The user-mode NIC: found by MAC and driver, set up as the lab's own NICs are."""
    found = env.cmd(nics.find_iface_cmd(WEB_MAC, "e1000")).stdout.split()
    if len(found) != 1:
        raise LabError(f"the web load's NIC ({WEB_MAC}) has no e1000 interface in the guest")
    iface = found[0]
    env.net.configure(iface, f"{WEB_NET}.2/24", promisc=False)
    return iface


def web_driver(env: Testbed, load: Load, port: int) -> Callable[[], int]:
    """Starts the guest's HTTP server once; each call fetches ``load.frames`` pages."""
    proc = env.start("httpd", Httpd(f"{WEB_NET}.2", WEB_PORT), ready=True)
    proc.wait_ready()
    # One request first: slirp and the guest's ARP entry for it are set up
    # before anything is measured.
    if fetch_pages(port, 1).sent != 1:
        raise LabError(f"the guest's HTTP server does not answer on 127.0.0.1:{port}")

    def drive() -> int:
        done = fetch_pages(port, load.frames)
        if done.sent < load.frames:
            print(f" ({load.frames - done.sent} of {load.frames} requests failed)", end="")
        return 0  # the frames it takes are whatever the NIC received

    return drive


def _host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()
