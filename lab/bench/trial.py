"""One trial: one sniffer under one load, one round, on the lab's own guest.

The bench is not a scenario: it runs on the guest's ``lab.testbed.Testbed``.
A trial's meter (and so its sniffer) is stopped when the trial ends,
whatever happens (``GuestProc`` as a context manager). Its steps:

1. NTA loaded or not, as the sniffer needs (unloading bounces the links: the
   rings may hold NTA's buffers);
2. the meter starts the sniffer (as many copies as the load has readers)
   and says when it is ready (every copy: an NTA reader has attached its
   device), through the lab's readiness protocol (``lab.guestside.protocol``);
3. the link bounces (``GuestNet.bounce``): the driver refills its ring, from
   the reader's pool for an NTA reader; every trial bounces, so all go
   through the same steps, and none pays for it: it is outside the window;
4. SIGUSR1: the meter opens the window; then the load;
5. the load over (for a load sniffers cannot count, web and bulk, after
   ``loads.SETTLE_S`` more), SIGTERM tells the meter, which ends the window
   when the NIC is done: it took the load's frames (received or missed) and
   its counters stood still. A sniffer still running then (it missed
   frames, or runs until stopped) gets its batching delay to exit
   (``Launch.drain_s``), then SIGINT: it reports what it took and what it
   missed, and the window ends with it. Never at a reader's idle timeout.

Steps 1 to 4 are set-up: a failure there (a program not ready, a link
without carrier) is the infrastructure's, not a finding. The trial is tried
once more, and the retry is recorded (in bench.json and the table); a
second failure is an error that names what was not ready and why, both
times. Nothing after the window opened is retried.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lab import LabError
from lab.bench import host
from lab.bench.loads import SETTLE_S, Drive, Load, Nic
from lab.bench.sniffers import Figures, Sniffer, Tools
from lab.bench.stats import Trial, busy_seconds
from lab.events import EventLog
from lab.guestnet import Link
from lab.guestside.protocol import Meter
from lab.guestside.reports import MeterReport
from lab.records import EventKind
from lab.spawn import GuestProc
from lab.testbed import Testbed

STARTED_S = 60.0  # SIGUSR1 to the window open: the meter only reads a few files
RESULT_S = 120.0  # after the window, for the meter's report


class SetupError(LabError):
    """A trial's set-up failed: ``what`` was not ready, ``why``."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what} was not ready: {why}")
        self.what = what
        self.why = why


@contextlib.contextmanager
def setting_up(what: str) -> Iterator[None]:
    """A LabError in the block is a set-up failure of ``what``."""
    try:
        yield
    except SetupError:
        raise
    except LabError as e:
        raise SetupError(what, str(e)) from e


class ModuleState:
    """NTA loaded or not, as each sniffer needs it.

    Unloaded, the links bounce (their rings may hold buffers NTA handed them);
    loaded, they need not: without attach= NTA serves no device until a reader
    attaches it, and each trial bounces its own NIC anyway.
    """

    def __init__(self, env: Testbed, module: Path | None, links: Sequence[Link]) -> None:
        self.env = env
        self.module = module
        self.links = links

    def want(self, loaded: bool) -> None:
        if loaded == (self.env.nta.loaded is not None):
            return
        if not loaded:
            self.env.nta.unload(bounce=self.links)
        elif self.module is None:
            raise LabError("NTA was not built, but a sniffer needs it loaded")
        else:
            self.env.nta.load(self.module, "")


@dataclass(frozen=True)
class Bench:
    """What every trial of a run needs."""

    env: Testbed
    nics: dict[Nic, Link]
    module: ModuleState
    tools: Tools
    rounds: int
    events: EventLog


def retried_once(attempt: Callable[[], Trial], retrying: Callable[[str], None]) -> Trial:
    """``attempt``, and once more if its set-up failed (``retrying`` says why first); the
    trial records the first failure. A second set-up failure names both."""
    try:
        return attempt()
    except SetupError as first:
        retrying(str(first))
        try:
            trial = attempt()
        except SetupError as second:
            raise LabError(f"{second}; the first time: {first.why}") from second
        return replace(trial, retries=(str(first),))


def run_trial(bench: Bench, load: Load, drive: Drive, sniffer: Sniffer, rnd: int) -> Trial:
    name = f"{load.name} {sniffer.name} round {rnd + 1}/{bench.rounds}"
    bench.events(EventKind.TEST, test=name)
    trial = retried_once(
        lambda: attempt(bench, load, drive, sniffer, rnd),
        lambda why: bench.events(EventKind.RETRY, test=name, detail=why),
    )
    bench.events(EventKind.DONE, test=name, outcome="pass", detail=progress_detail(trial))
    return trial


def attempt(bench: Bench, load: Load, drive: Drive, sniffer: Sniffer, rnd: int) -> Trial:
    env, nic = bench.env, bench.nics[load.nic]
    tag = f"bench-{load.name}-{sniffer.name}-{rnd}"
    started, out = env.outdir / f"{tag}.started", env.outdir / f"{tag}.json"
    for path in (started, out):
        path.unlink(missing_ok=True)  # a retry's waits must not see the first attempt's files
    request = meter_request(load, sniffer, nic.iface, bench.tools, started)
    with contextlib.ExitStack() as stack:
        with setting_up("NTA " + ("loaded" if sniffer.needs_module else "unloaded")):
            bench.module.want(sniffer.needs_module)
        with setting_up(f"{sniffer.name}, under the meter"):
            meter = stack.enter_context(env.start(tag, request, ready=True, out=out))
            meter.wait_ready()
        with setting_up(f"{nic.iface}'s link"):
            env.net.bounce([nic])
        with setting_up("the measured window"):
            meter.signal("USR1")
            meter.wait_file(started, STARTED_S)
        host0, t0 = host.Snapshot.take(), time.monotonic()
        sent = drive()
        report = end_window(meter, load)
        contention = host.others(host0, host.Snapshot.take(), time.monotonic() - t0)
    trial = trial_of(tag, load, sniffer, rnd, report, sent.count, sent.unit, sent.seconds, nic)
    return replace(trial, host_others=contention)


def meter_request(load: Load, sniffer: Sniffer, iface: str, tools: Tools, started: Path) -> Meter:
    """The meter's request: the window on ``iface`` (held until SIGUSR1, then ``started``)
    and the sniffer in it, in as many copies as the load has readers (none: the window)."""
    launch = sniffer.launch(iface, load.kept, tools, load.filter)
    window = Meter(hold=started, iface=iface, expect_rx=load.frames or 0)
    return launch.meter(replace(window, copies=load.readers)) if launch is not None else window


def end_window(meter: GuestProc, load: Load) -> MeterReport:
    """The load is over: the meter ends the window once the NIC is done (and the sniffer
    with it); its report. Every trial gets the same SIGTERM (a shell's kill in the
    window), unless its sniffer took the load's frames and exited first."""
    if load.frames is None:
        # Settled, so that a batching sniffer has taken the last frames; the
        # same wait for every sniffer under this load, none included.
        settle()
    if meter.poll() is None:
        meter.signal("TERM")
    return meter.result(MeterReport.from_json, RESULT_S)


def settle() -> None:
    """SETTLE_S of nothing: longer than any sniffer's batching delay (a fixed time, not a
    poll: what the sniffers hold is not visible from outside until they exit)."""
    time.sleep(SETTLE_S)


def trial_of(
    tag: str, load: Load, sniffer: Sniffer, rnd: int, report: MeterReport,
    sent: int, unit: str, sent_s: float, nic: Link,
) -> Trial:  # fmt: skip
    """The trial's record, from the meter's report and what the sniffer says (each copy of
    it: every one must have ended well, and the record holds what each saw)."""
    for i, out in enumerate(report.copies):
        if out.exit != 0:
            which = f" (copy {i + 1} of {len(report.copies)})" if len(report.copies) > 1 else ""
            raise LabError(f"{tag}: {sniffer.name}{which} exited {out.exit}: {out.stderr[-1500:]}")
    rx = report.rx_packets
    if rx is None:
        raise LabError(f"{tag}: the meter counted no frames on {nic.iface}")
    if load.frames is not None and rx < load.frames:
        missed = f" (it missed {report.rx_missed}: no buffer)" if report.rx_missed else ""
        raise LabError(f"{tag}: {nic.iface} received {rx} of the {load.frames} frames sent{missed}")
    each = sniffer.figures(report, nic.iface)
    figures = together(each)
    before, after = report.stat_before, report.stat_after
    process = bool(report.copies)
    return Trial(
        load=load.name,
        sniffer=sniffer.name,
        round=rnd,
        process=process,
        sent=sent,
        sent_unit=unit,
        sent_s=round(sent_s, 3),
        rx=rx,
        stack=report.ip_packets,
        seen=figures.seen,
        missed=figures.missed,
        seen_each=tuple(f.seen for f in each),
        missed_each=tuple(f.missed for f in each),
        window_s=round(report.elapsed_s, 4),
        busy_s=round(busy_seconds(before, after, report.elapsed_s), 4),
        softirq_s=(after.softirq - before.softirq) / after.hz,
        sniffer_cpu_s=report.sniffer_cpu_s,
        module_loaded=sniffer.needs_module,
        syscalls=report.syscalls if process else None,
        wakeups=report.voluntary_switches if process else None,
        involuntary=report.involuntary_switches if process else None,
        buf_bytes=figures.buf_bytes,
        own_syscalls=figures.own_syscalls,
        own_wakeups=figures.own_wakeups,
        user_ticks=report.sniffer_user_ticks,
        system_ticks=report.sniffer_system_ticks,
    )


def together(each: Sequence[Figures]) -> Figures:
    """Copies of a sniffer on one device, as one: each must see every frame, so what the
    fewest saw and the most missed; the buffer of the one that filled most (per reader:
    NTA's readers share their chunks, AF_PACKET's sockets fill a ring each); their own
    counts summed, as the meter sums its counts of them."""

    def total(values: Sequence[int | None]) -> int | None:
        return None if None in values else sum(v or 0 for v in values)

    missed = [f.missed for f in each]
    buf = [f.buf_bytes for f in each]
    return Figures(
        seen=min(f.seen for f in each),
        missed=None if None in missed else max(m or 0 for m in missed),
        buf_bytes=None if None in buf else max(b or 0 for b in buf),
        own_syscalls=total([f.own_syscalls for f in each]),
        own_wakeups=total([f.own_wakeups for f in each]),
    )


def progress_detail(t: Trial) -> str:
    """A trial's key figures, for its progress line."""
    frames = max(t.rx, 1)
    seen = f"{t.seen}/{t.rx} frames"
    if len(t.seen_each) > 1:
        seen = f"{'+'.join(map(str, t.seen_each))} of {t.rx} frames by {len(t.seen_each)} copies"
    parts = [seen, f"guest busy {t.busy_s / frames * 1e6:.1f} us/frame"]
    if t.process:
        parts.append(f"sniffer {t.sniffer_cpu_s / frames * 1e6:.1f} us/frame")
        if t.syscalls is not None:
            parts.append(f"{t.syscalls / frames * 1000:.1f} syscalls/1k")
        if t.wakeups is not None:
            parts.append(f"{t.wakeups / frames * 1000:.1f} wakeups/1k")
    if t.missed:
        missed = "+".join(map(str, t.missed_each)) if len(t.missed_each) > 1 else t.missed
        parts.append(f"missed {missed}")
    return ", ".join(parts)
