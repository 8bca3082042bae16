"""``ntalab bench``: what capture costs the machine, NTA's readers against AF_PACKET's.

One guest; under each load, every sniffer in turn, round after round (A B A
B), so slow drift of a noisy host hits all of them alike. The modules:
``sniffers`` (the sniffers, a class each, in a registry), ``loads`` (what
the host does to the guest), ``trial`` (one sniffer, one load, one round),
``stats`` (records, arithmetic, the targets as data), ``render`` (table,
text, plot). The bench is not a scenario: it drives the guest through its
``lab.testbed.Testbed``, and its guest programs are typed requests that say
when they are ready (``lab.guestside.protocol``). Progress goes through the
same event lines as ``ntalab run``'s.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab import LabError, accel, images, kbuild, nics, traffic
from lab.bench import render, sniffers
from lab.bench.loads import (
    USER_GUEST_IP,
    USER_MAC,
    BulkLoad,
    FrameLoad,
    Load,
    Nic,
    UserNet,
    WebLoad,
)
from lab.bench.sniffers import SNIFFERS, Sniffer, Tools
from lab.bench.stats import GOALS, UNIT, BenchResult, Trial, judge, summarize
from lab.bench.trial import Bench, ModuleState, run_trial
from lab.events import EventLog
from lab.guest import Guest, GuestSpec
from lab.guestnet import Link
from lab.records import EventKind
from lab.runner import Progress
from lab.testbed import Testbed

# The frame sizes a sweep may use (bytes, no FCS): e1000 pads shorter ones to 60.
SWEEP_MIN, SWEEP_MAX = traffic.MIN_FRAME, traffic.MAX_FRAME


@dataclass(frozen=True)
class BenchConfig:
    kernel: str
    rounds: int
    loads: tuple[Load, ...]
    sniffers: tuple[Sniffer, ...]
    accel: str | None = None
    clocksource: str = "default"  # "tsc": the guest told its TSC is reliable (CLOCKSOURCES)


def run_bench(config: BenchConfig, out: Path, say: Callable[[str], None] = print) -> int:
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    events = EventLog(out / "events.jsonl", f"{config.kernel}/bench", Progress(say).event)
    kernel = images.kernel_for(
        config.kernel, progress=lambda m: events(EventKind.PREPARE, detail=m)
    )
    acc = accel.choose(config.accel)
    if acc.name == "tcg" and config.accel in (None, "auto"):
        # Detected, not asked for: multi-threaded TCG froze the bench's guest as the
        # meter patched kernel text (README, "Shortfalls"); one thread runs it through.
        acc = accel.Accel("tcg-single", f"{acc.reason}; one thread: multi-threaded TCG froze it")
    sniffers = available(config.sniffers, lambda m: events(EventKind.PREPARE, detail=m))
    tools, module = build(kernel, sniffers)
    user = UserNet.plan(ld.guest_port for ld in config.loads if ld.guest_port is not None)
    opts = user.qemu_opts() if user.forwards else ()
    spec = GuestSpec(kernel, nics.nic_set("e1000"), acc, name="ntalab-bench", qemu_opts=opts,
                     append=CLOCKSOURCES[config.clocksource])  # fmt: skip
    trials: list[Trial] = []
    events(EventKind.BOOT, detail=f"{kernel.release}, {acc.name}")
    with Guest(spec, out / "guest") as guest:
        events(EventKind.BOOTED, detail=f"{guest.boot_seconds:.0f}s")
        env = Testbed.up(guest, kernel, "e1000", events)
        links: dict[Nic, Link] = {Nic.LAB: env.nics[0]}
        if user.forwards:
            links[Nic.USER] = env.net.adopt(USER_MAC, "e1000", USER_GUEST_IP)
        bench = Bench(env, links, ModuleState(env, module, list(links.values())), tools,
                      config.rounds, events)  # fmt: skip
        idle = idle_accounting(env)
        clock = env.cmd(f"cat {CURRENT_CLOCKSOURCE}").stdout.strip()
        if config.clocksource != "default" and clock != config.clocksource:
            raise LabError(f"the guest's clocksource is {clock}, not {config.clocksource}")

        def result(complete: bool) -> BenchResult:
            rows = summarize(trials)
            return BenchResult(
                kernel=kernel.release, accel=acc.name, accel_reason=acc.reason,
                host=host_cpu(), idle_accounting=idle, clocksource=clock,
                boot_s=round(guest.boot_seconds, 1), total_s=round(time.monotonic() - start, 1),
                complete=complete, rounds=config.rounds, sniffers=[s.name for s in sniffers],
                loads={ld.name: ld.describe() for ld in config.loads},
                sweep={ld.name: ld.size for ld in config.loads
                       if isinstance(ld, FrameLoad) and ld.size is not None},
                unit=UNIT, rows=rows, targets=judge(GOALS, rows) if complete else [],
                trials=list(trials),
            )  # fmt: skip

        try:
            for load in config.loads:
                run_load(bench, load, sniffers, user, trials)
        except BaseException:
            # Hours of trials are not lost to the last one: what was measured is kept.
            (out / "bench-partial.json").write_text(result(complete=False).to_json())
            say(f"bench stopped; {len(trials)} trials kept in {out}/bench-partial.json")
            raise
        final = result(complete=True)
    (out / "bench.json").write_text(final.to_json())
    title = f"NTA vs AF_PACKET, {final.kernel}, {final.accel}, {final.clocksource}, {final.host}"
    render.plot(final, out / "bench.png", title)
    text = render.report_text(final)
    (out / "bench.txt").write_text(text + "\n")
    events(EventKind.GUEST_DONE, outcome="pass")
    say(
        f"\n{text}\n\naccelerator: {acc.name} ({acc.reason}); clocksource {final.clocksource}; "
        f"host cpu {final.host}"
    )
    say(f"guest boot {final.boot_s:.0f}s, bench {final.total_s:.0f}s; results: {out}")
    return 0


def run_load(
    bench: Bench, load: Load, sniffers: Sequence[Sniffer], user: UserNet, into: list[Trial]
) -> None:
    """Every round of one load, every sniffer in each, the load's guest side up throughout."""
    nic = bench.nics[load.nic]
    port = user.host_port(load.guest_port) if load.guest_port is not None else None
    with load.running(bench.env, nic, port) as drive:
        for rnd in range(bench.rounds):
            for sniffer in sniffers:
                into.append(run_trial(bench, load, drive, sniffer, rnd))


def available(sniffers: Sequence[Sniffer], say: Callable[[str], None]) -> list[Sniffer]:
    """The sniffers this host can run: tcpdump only where it is installed (the guest runs
    the host's userspace); under CI a missing tcpdump is an error, never a skip."""
    if any(s.name == "tcpdump" for s in sniffers) and shutil.which("tcpdump") is None:
        if os.environ.get("CI") == "true":
            raise LabError("tcpdump is not installed on the host: apt-get install tcpdump")
        say("tcpdump is not installed on the host (the guest runs its userspace): skipped")
        return [s for s in sniffers if s.name != "tcpdump"]
    return list(sniffers)


def build(kernel: images.Kernel, sniffers: Sequence[Sniffer]) -> tuple[Tools, Path | None]:
    """NTA for the kernel (if a sniffer needs it loaded) and ntadump, before the guest boots:
    no compiler competes with it."""
    module = None
    if any(s.needs_module for s in sniffers):
        built = kbuild.build(kernel)
        if built.module is None:
            raise LabError(f"NTA did not build for {kernel.name}: see {built.log}")
        module = built.module
    ntadump = str(kbuild.build_ntadump().program) if "ntadump" in {s.name for s in sniffers} else ""
    return Tools(ntadump=ntadump, tcpdump=shutil.which("tcpdump") or "tcpdump"), module


# The guest kernel's command line for each --clocksource. Under TCG a 2-CPU guest marks its
# TSC unstable ("TSCs unsynchronized": an AMD-flavoured CPU without constant_tsc) and reads
# the HPET, an emulated device, where hardware and KVM guests read the TSC; tsc=reliable
# keeps the TSC, so that a run can show how much the emulated clock weighs (docs/bench.md).
CLOCKSOURCES: dict[str, tuple[str, ...]] = {"default": (), "tsc": ("tsc=reliable",)}
CURRENT_CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"


def idle_accounting(env: Testbed) -> str:
    """How the guest's kernel knows idle time: measured (NO_HZ active, the capture figure's
    premise) or sampled at ticks."""
    modes = env.cmd("grep nohz_mode /proc/timer_list", check=False).stdout.split()
    active = [m for m in modes if m.isdigit()]
    if active and all(m != "0" for m in active):
        return "nohz: idle periods measured"
    return "tick-sampled" if active else "unknown"


def host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


__all__ = [
    "SNIFFERS",
    "SWEEP_MAX",
    "SWEEP_MIN",
    "BenchConfig",
    "BulkLoad",
    "FrameLoad",
    "Load",
    "WebLoad",
    "run_bench",
    "sniffers",
]
