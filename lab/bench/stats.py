"""The benchmark's records and arithmetic: trials, rows over the rounds, targets as data.

**The unit.** Every per-frame figure is per frame the NIC received in the
trial's window (its rx_packets): the load's unit of work, the same whoever
reads it. Under the bulk load GRO merges those frames before anything sees
them, so a sniffer sees fewer (``seen``); the rows say both.

**capture_us**, the figure the targets are judged on: what capture costs the
whole guest per frame. Per trial, the guest's busy CPU time over the window
(every CPU, every context: user, system, softirq, hardirq, kworkers) per
frame, less the median over the rounds of the same load's ``none`` trials
(NTA not loaded, no sniffer). Busy time is elapsed x CPUs online - idle -
iowait (- steal) from /proc/stat at the window's ends: with NO_HZ the idle
time is measured from the idle periods themselves, not sampled at ticks, so
it holds what AF_PACKET pays in the receive softirq and what NTA pays in its
reader's system calls alike (where each is charged is no matter). /proc/stat
prints it in 10 ms ticks: a trial's busy time is within 20 ms. Under TCG
the guest's clock is the host's, so other work on the host inflates every
figure: each trial records how much there was (``host_others``).

**sniffer_us**, the process figure (the seed's "top" view): the sniffer's own
CPU time per frame, as the scheduler ran it.

Each figure is per frame per trial first, then the median over the rounds,
with its range (``Spread``). A target is met when the whole range of its
figure (ratios: of both figures' ranges) is under its limit, missed when the
whole range is over, and unresolved when the rounds straddle it: the spread
is smaller than the difference claimed, or nothing is claimed.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from lab import LabError
from lab.guestside.reports import CpuStat

BASELINE = "none"  # the trials every load's capture_us is measured from
LOADED = "none-loaded"
# The load whose frames a filter thins (1 in KEEP_ONE_IN kept) and the load it thins.
FILTERED, UNFILTERED, KEEP_ONE_IN = "filtered", "fixed", 10
# The load READERS copies of each sniffer capture at once, on one device, and the load
# one copy captures: the same frames.
TWO_READERS, ONE_READER, READERS = "two-readers", "fixed", 2


def busy_seconds(before: CpuStat, after: CpuStat, elapsed_s: float) -> float:
    """CPU seconds the guest was not idle between two reads of /proc/stat ``elapsed_s``
    apart: every CPU, every context."""
    if (before.cpus, before.hz) != (after.cpus, after.hz):
        raise LabError(f"CPUs online changed during the window: {before.cpus} -> {after.cpus}")
    idle = (after.idle - before.idle) + (after.iowait - before.iowait)
    idle += after.steal - before.steal  # time the hypervisor ran something else
    return elapsed_s * after.cpus - idle / after.hz


@dataclass(frozen=True)
class Trial:
    """One sniffer under one load, one round: what the guest measured over the window."""

    load: str
    sniffer: str
    round: int
    process: bool  # a sniffer process ran (not none, none-loaded)
    sent: int  # what the load did, in its unit
    sent_unit: str  # frames, requests, bytes
    sent_s: float
    rx: int  # frames the NIC received in the window: the per-frame unit
    stack: int | None  # IP packets the stack received in it: after GRO, merged frames
    seen: int  # frames the sniffer captured (no sniffer: rx; copies: the fewest one saw)
    # frames the sniffer says the kernel had and did not give it (copies: the most one missed)
    missed: int | None
    window_s: float
    busy_s: float  # the whole guest's busy CPU time over the window
    softirq_s: float  # /proc/stat's softirq column: tick-sampled, for reference
    sniffer_cpu_s: float
    module_loaded: bool
    syscalls: int | None = None  # the sniffer's, traced over the window (None: not counted)
    wakeups: int | None = None  # its voluntary context switches over the window
    involuntary: int | None = None
    buf_bytes: int | None = None  # NTA: a chunk per record; afpacket: block bytes filled
    own_syscalls: int | None = None  # NTA readers: their own count
    own_wakeups: int | None = None  # NTA readers: the module's count of their wakeups
    user_ticks: int = 0  # the sniffer's clock ticks in its own code
    system_ticks: int = 0  # ... and in the kernel on its behalf
    retries: tuple[str, ...] = ()  # infrastructure: why its set-up was tried again
    host_others: float = 0.0  # host CPUs' worth of other processes' work in the window
    # Each copy's seen and missed, in the order the meter started them (a load of several
    # readers of one device runs copies of the sniffer; any other, one). The CPU figures,
    # system calls and wakeups above are every copy's, summed.
    seen_each: tuple[int, ...] = ()
    missed_each: tuple[int | None, ...] = ()


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

    @property
    def width(self) -> float:
        return self.hi - self.lo


@dataclass(frozen=True)
class Row:
    """One sniffer under one load, over the rounds (per frame: per frame the NIC received)."""

    load: str
    sniffer: str
    rounds: int
    rx: float  # frames the NIC received per trial, median
    rx_per_s: float  # ... per second of window, median
    stack: float | None  # IP packets the stack received per trial (after GRO), median
    seen: float  # frames the sniffer captured per trial, median (copies: the fewest one saw)
    missed: float | None  # ... and said it missed (copies: the most one missed)
    capture_us: Spread  # the whole guest's busy CPU per frame, less the none trials'
    sniffer_us: Spread | None  # the sniffer's own CPU per frame (None: no sniffer)
    busy_us: Spread  # the whole guest's busy CPU per frame, as measured
    softirq_us: Spread
    syscalls_per_k: Spread | None  # per 1000 frames (None: not counted)
    wakeups_per_k: Spread | None
    buf_bytes_per_frame: float | None  # per frame seen
    kernel_share: float | None  # of the sniffer's ticks, over all rounds: in the kernel
    own_syscalls_per_k: float | None
    own_wakeups_per_k: float | None
    capture_vs_tcpdump: float | None = None  # capture_us median over tcpdump's
    capture_vs_afpacket: float | None = None  # ... over the Python AF_PACKET reader's
    process_vs_tcpdump: float | None = None  # sniffer_us median over tcpdump's
    process_vs_afpacket: float | None = None
    retries: tuple[str, ...] = ()
    host_others: float = 0.0  # other work on the host during the windows (CPUs), median


def _us(seconds: float, frames: int) -> float:
    return seconds / max(frames, 1) * 1e6


def _per_k(trials: Sequence[Trial], count: Callable[[Trial], int | None]) -> list[float | None]:
    return [None if (n := count(t)) is None else n / max(t.rx, 1) * 1e3 for t in trials]


def _spread(values: Sequence[float | None]) -> Spread | None:
    got = [v for v in values if v is not None]
    return Spread.of(got) if got else None


def _median(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where b is not above zero (a reference that costs nothing measurable)."""
    return round(a / b, 3) if a is not None and b is not None and b > 0 else None


def _kernel_share(trials: Sequence[Trial]) -> float | None:
    """The share of the sniffer's ticks spent in the kernel, summed over the rounds (ticks
    are sampled: the sum over every round is steadier than a median of small counts)."""
    system = sum(t.system_ticks for t in trials)
    total = system + sum(t.user_ticks for t in trials)
    return round(system / total, 3) if total else None


def summarize(trials: Sequence[Trial]) -> list[Row]:
    """Per (load, sniffer), in the order they ran: medians and ranges over the rounds."""
    rows: list[Row] = []
    for load in dict.fromkeys(t.load for t in trials):
        group = [t for t in trials if t.load == load]
        base = [_us(t.busy_s, t.rx) for t in group if t.sniffer == BASELINE]
        base_us = statistics.median(base) if base else 0.0
        per: dict[str, Row] = {}
        for sniffer in dict.fromkeys(t.sniffer for t in group):
            ts = [t for t in group if t.sniffer == sniffer]
            per[sniffer] = Row(
                load=load,
                sniffer=sniffer,
                rounds=len(ts),
                rx=statistics.median(t.rx for t in ts),
                rx_per_s=statistics.median(t.rx / t.window_s if t.window_s else 0 for t in ts),
                stack=_median(t.stack for t in ts),
                seen=statistics.median(t.seen for t in ts),
                missed=_median(t.missed for t in ts),
                capture_us=Spread.of(_us(t.busy_s, t.rx) - base_us for t in ts),
                sniffer_us=Spread.of(_us(t.sniffer_cpu_s, t.rx) for t in ts)
                if all(t.process for t in ts)
                else None,
                busy_us=Spread.of(_us(t.busy_s, t.rx) for t in ts),
                softirq_us=Spread.of(_us(t.softirq_s, t.rx) for t in ts),
                syscalls_per_k=_spread(_per_k(ts, lambda t: t.syscalls)),
                wakeups_per_k=_spread(_per_k(ts, lambda t: t.wakeups)),
                buf_bytes_per_frame=_median(
                    None if t.buf_bytes is None else t.buf_bytes / max(t.seen, 1) for t in ts
                ),
                kernel_share=_kernel_share(ts),
                own_syscalls_per_k=_median(_per_k(ts, lambda t: t.own_syscalls)),
                own_wakeups_per_k=_median(_per_k(ts, lambda t: t.own_wakeups)),
                retries=tuple(r for t in ts for r in t.retries),
                host_others=statistics.median(t.host_others for t in ts),
            )
        for row in per.values():
            rows.append(_with_ratios(row, per.get("tcpdump"), per.get("afpacket")))
    return rows


def _with_ratios(row: Row, tcpdump: Row | None, afpacket: Row | None) -> Row:
    if row.sniffer_us is None:
        return row

    def process(ref: Row | None) -> float | None:
        ours = row.sniffer_us.median if row.sniffer_us else None
        return ratio(ours, ref.sniffer_us.median if ref and ref.sniffer_us else None)

    def capture(ref: Row | None) -> float | None:
        return ratio(row.capture_us.median, ref.capture_us.median if ref else None)

    return replace(
        row,
        capture_vs_tcpdump=capture(tcpdump),
        capture_vs_afpacket=capture(afpacket),
        process_vs_tcpdump=process(tcpdump),
        process_vs_afpacket=process(afpacket),
    )


# -- the targets, as data ----------------------------------------------------------------------


class Figure(Enum):
    """A figure of a row a target is judged on (the value: the row's field)."""

    CAPTURE = "capture_us"
    PROCESS = "sniffer_us"
    SYSCALLS = "syscalls_per_k"
    WAKEUPS = "wakeups_per_k"


@dataclass(frozen=True)
class Goal:
    """One of the project's targets: ``sniffer``'s ``figure`` (over ``versus``'s, a ratio)
    at most ``limit``; with no limit, within the rounds' spread of the baseline."""

    what: str
    figure: Figure
    sniffer: str
    limit: float | None
    versus: str | None = None
    loads: tuple[str, ...] | None = None  # None: every load measured

    @property
    def unit(self) -> str:
        if self.versus is not None:
            return "x"
        return "us" if self.figure in (Figure.CAPTURE, Figure.PROCESS) else "/1k"


NTA_VS_TCPDUMP = ("fixed", "max", "web", "bulk", FILTERED, TWO_READERS)
GOALS = (
    Goal("ntadump capture/frame vs tcpdump's", Figure.CAPTURE, "ntadump", 0.5, "tcpdump",
         NTA_VS_TCPDUMP),
    Goal("ntadump process/frame vs tcpdump's", Figure.PROCESS, "ntadump", 0.5, "tcpdump",
         NTA_VS_TCPDUMP),
    Goal("pysniff capture/frame vs afpacket's", Figure.CAPTURE, "pysniff", 0.7, "afpacket"),
    Goal("pysniff process/frame vs afpacket's", Figure.PROCESS, "pysniff", 0.7, "afpacket"),
    Goal("NTA loaded, serving nothing, vs none", Figure.CAPTURE, LOADED, None),
    Goal("ntadump syscalls per 1000 frames", Figure.SYSCALLS, "ntadump", 10, loads=("fixed",)),
    Goal("ntadump wakeups per 1000 frames", Figure.WAKEUPS, "ntadump", 10, loads=("fixed",)),
    Goal("pysniff syscalls per 1000 frames", Figure.SYSCALLS, "pysniff", 10, loads=("fixed",)),
    Goal("pysniff wakeups per 1000 frames", Figure.WAKEUPS, "pysniff", 10, loads=("fixed",)),
)  # fmt: skip


class Verdict(Enum):
    MET = "met"
    MISSED = "missed"
    UNRESOLVED = "unresolved"  # the rounds' range straddles the limit
    NOT_MEASURED = "not measured"
    NOT_JUDGED = "not judged"  # measured, but the rounds say nothing of the limit


@dataclass(frozen=True)
class Target:
    """A goal judged at one load: the median, the range the rounds allow, the verdict."""

    what: str
    load: str
    limit: float | None  # for "within the spread": the spread, once known
    unit: str
    measured: float | None
    lo: float | None
    hi: float | None
    verdict: Verdict
    note: str = ""
    two_sided: bool = False  # met when |measured| <= limit


def judge(goals: Sequence[Goal], rows: Sequence[Row]) -> list[Target]:
    """Each goal at each load of the run it is set for (a run of some loads only says
    nothing of the others)."""
    by = {(r.load, r.sniffer): r for r in rows}
    loads = list(dict.fromkeys(r.load for r in rows))
    out = []
    for goal in goals:
        for load in goal.loads or loads:
            if load in loads:
                out.append(_judge(goal, load, by))
    return out


def _figure(row: Row | None, figure: Figure) -> Spread | None:
    if row is None:
        return None
    value: Spread | None = getattr(row, figure.value)
    return value


def _judge(goal: Goal, load: str, by: dict[tuple[str, str], Row]) -> Target:
    def target(measured: float | None, lo: float | None = None, hi: float | None = None,
               limit: float | None = goal.limit, note: str = "") -> Target:  # fmt: skip
        if measured is None or limit is None:
            verdict = Verdict.NOT_MEASURED
        elif lo is None or hi is None:  # no bound on the range
            verdict = Verdict.UNRESOLVED
        elif hi <= limit:
            verdict = Verdict.MET
        elif lo > limit:
            verdict = Verdict.MISSED
        else:
            verdict = Verdict.UNRESOLVED
        return Target(goal.what, load, limit, goal.unit, measured, lo, hi, verdict, note)

    ours = _figure(by.get((load, goal.sniffer)), goal.figure)
    if ours is None:
        return target(None, note=f"no {goal.sniffer} {goal.figure.value} at this load")
    if goal.limit is None:  # within the spread of the baseline, either way
        base = by.get((load, BASELINE))
        if base is None:
            return target(None, note="no none trials at this load")
        if min(base.rounds, by[(load, goal.sniffer)].rounds) < 2:  # no spread to judge on
            return Target(goal.what, load, None, goal.unit, ours.median, ours.lo, ours.hi,
                          Verdict.NOT_JUDGED, "one round", two_sided=True)  # fmt: skip
        spread = round(max(ours.width, base.capture_us.width), 3)
        met = abs(ours.median) <= spread
        return Target(
            goal.what, load, spread, goal.unit, ours.median, ours.lo, ours.hi,
            Verdict.MET if met else Verdict.MISSED, "limit: the rounds' spread", two_sided=True,
        )  # fmt: skip
    if goal.versus is None:
        return target(ours.median, ours.lo, ours.hi)
    ref = _figure(by.get((load, goal.versus)), goal.figure)
    if ref is None:
        return target(None, note=f"no {goal.versus} {goal.figure.value} at this load")
    if ref.median <= 0:
        return target(None, note=f"{goal.versus}'s {goal.figure.value} is not above zero here")
    measured = ratio(ours.median, ref.median)
    if ref.lo <= 0:  # the reference's range reaches zero: no bound on the ratio
        return target(measured, note=f"{goal.versus}'s range reaches 0")
    return target(measured, round(ours.lo / ref.hi, 3), round(ours.hi / ref.lo, 3))


# -- the whole run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    """Everything ``bench.json`` holds: the run, its rows and targets, every trial."""

    kernel: str
    accel: str
    accel_reason: str
    host: str
    idle_accounting: str  # how the guest's kernel measures idle time (nohz: exactly)
    clocksource: str  # the guest's (TCG's default, the HPET, is an emulated device)
    boot_s: float
    total_s: float
    complete: bool
    rounds: int
    sniffers: list[str]
    loads: dict[str, str]  # name -> what it is
    sweep: dict[str, int]  # the frame-size sweep: load name -> frame size
    unit: str
    rows: list[Row]
    targets: list[Target]
    trials: list[Trial] = field(default_factory=list)

    def to_json(self) -> str:
        def plain(o: object) -> object:
            if isinstance(o, Enum):
                return o.value
            raise TypeError(f"{type(o).__name__} is not JSON")

        return json.dumps(asdict(self), indent=1, default=plain) + "\n"


UNIT = (
    "per frame the NIC received (rx_packets) in the trial's window; 'stack' is the IP "
    "packets the stack received (after GRO: merged frames, fewer under bulk), 'seen' what "
    "the sniffer captured"
)
