"""Where capture's time goes: perf's samples over the whole guest while one sniffer
captures at the benchmark's fixed rate. A study for the benchmark's shortfalls, not a
check: it runs only when ``-k`` names it (``ntalab run -k debian-6.1 --nics e1000 -- -k profile``).

Under TCG there is no PMU: perf samples on the ``cpu-clock`` software event, a timer
on every CPU, so a sample lands wherever the CPU was, softirq and idle included
(the same whole-machine view as the benchmark's ``capture_us``); time a CPU spends
with interrupts off is charged to where it turns them on again (the timer fires
there), so ``_raw_spin_unlock_irqrestore`` stands for the section it ends: the
callers report says whose. Each sniffer's reports (``profile-<sniffer>.txt``, the
symbols with the most samples by command; ``callers-<sniffer>.txt``, the same with
their call chains) cover the same traffic, beside the ``none`` trial's.

Samples cannot see inside a section run with interrupts off, nor tell one clock read
from three. The second study (``-k calls``) counts instead: every call of the receive
path's, the allocators', the clocks' and NTA's functions over a few seconds of traffic,
per frame received (``calls-<sniffer>.txt``). Counts do not depend on how loaded the
host is, so two runs compare exactly (``read_hpet`` a frame: what each sniffer adds to
the reads the stack makes anyway).
"""

from __future__ import annotations

import re

import pytest

from lab.scenario import Figure, LabEnv, traffic

SECONDS = 30
RATE = 2000.0  # frames/s: the benchmark's fixed load (flat out, the guest's shell starves)
FRAMES = 2000  # one batch, sent again and again
TOP = 40  # lines of the flat report kept
CALLERS = 400  # lines of the report with each busy symbol's callers
PERF = "/usr/bin/perf"


def sniffer_up(env: LabEnv, sniffer: str, iface: str) -> None:
    """``sniffer`` capturing ``iface`` into /dev/null until the test ends."""
    nic = next(n for n in env.nics if n.iface == iface)
    if sniffer == "tcpdump":
        env.tcpdump(nic, "profiled-tcpdump", "-Q", "in", "-n", "-Z", "root", "-w", "/dev/null")
    elif sniffer == "ntadump":
        env.ntadump([nic], "profiled-ntadump", "-w", "/dev/null")
        env.bounce([nic])  # every buffer from here on is the reader's


@pytest.mark.investigation("profile")
@pytest.mark.parametrize("sniffer", ["none", "tcpdump", "ntadump"])
def test_where_capture_time_goes(nta_env: LabEnv, sniffer: str, figure: Figure) -> None:
    """perf record -a on cpu-clock for SECONDS while the first NIC receives RATE frames/s and
    ``sniffer`` captures them; the top symbols by command saved, the busiest in the figure."""
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    sniffer_up(env, sniffer, nic.iface)
    batch = traffic.frames(env.new_run_id(), FRAMES, env.addrs(nic), ("udp4",), seed=9)
    data = f"/tmp/perf-{sniffer}.data"
    rx0 = env.rx(nic)
    with env.sending(nic, batch, RATE) as sent:
        env.act(f"{PERF} record -a -g -e cpu-clock -F 499 -o {data} -- sleep {SECONDS}",
                undo=f"rm -f {data}", timeout=SECONDS + 120)  # fmt: skip
    took = env.rx(nic).packets - rx0.packets
    perf = f"{PERF} report -i {data} --stdio --no-children --sort comm,sym 2>/dev/null"
    report = env.cmd(
        f"{perf} --percent-limit 0.5 -g none | grep -v '^#' | grep -v '^$' | head -{TOP}",
        timeout=300,
    ).stdout
    out = env.outdir / f"profile-{sniffer}.txt"
    out.write_text(f"# {sniffer}: {sent.sent} frames sent, {took} received, {SECONDS} s\n{report}")
    callers = env.cmd(f"{perf} --percent-limit 2 -g graph,1,callee | head -{CALLERS}", timeout=300)
    (env.outdir / f"callers-{sniffer}.txt").write_text(callers.stdout)
    lines = [" ".join(line.split()) for line in report.splitlines()]
    assert lines, f"perf reported nothing: see {out}"
    figure(nic, f"{sniffer}: {took} frames; top: {'; '.join(lines[:3])}")


TRACING = "/sys/kernel/tracing"
TRACE_SECONDS = 2
TRACE_RATE = 300.0  # frames/s: traced, the guest must keep up
CALLS = 600  # functions kept, most called first
# What is traced: the receive path, allocators, clocks, wakeups and NTA (every function
# in the kernel takes minutes to patch under TCG, and the guest then stops answering).
TRACED = (
    "nta_* e1000* *skb* *hpet* ktime_* *clocksource* *packet* *_rcv* *napi* *gro_* "
    "kmem_cache_* __kmalloc* kfree* *page_frag* __free_pages free_unref_page* __put_page "
    "*hrtimer* try_to_wake_up *wake_up* *tlb* *_poll *ioctl* handle_mm_fault ip_* udp_* "
    "__udp4_* icmp_* *_softirq* *spin_lock* *spin_unlock*"
)


@pytest.mark.investigation("calls")
@pytest.mark.parametrize("sniffer", ["none", "tcpdump", "ntadump"])
def test_what_each_frame_calls(nta_env: LabEnv, sniffer: str, figure: Figure) -> None:
    """Every kernel function called while ``sniffer`` captures TRACE_RATE frames/s, counted
    by ftrace's function tracer over TRACE_SECONDS (the Debian kernels have no function
    profiler): ``calls-<sniffer>.txt``, calls per function with the frames received in the
    window, so that two sniffers' files divide into calls per frame and compare. As in the
    benchmark, NTA serves no device but ntadump's (``none`` and ``tcpdump``: loaded, idle)."""
    env = nta_env
    env.module.reload_with("")
    nic = env.with_driver_settings(env.nics[0])
    sniffer_up(env, sniffer, nic.iface)
    batch = traffic.frames(env.new_run_id(), FRAMES, env.addrs(nic), ("udp4",), seed=9)
    rx = f"/sys/class/net/{nic.iface}/statistics/rx_packets"
    with env.sending(nic, batch, TRACE_RATE):
        env.cmd(f"sleep {TRACE_SECONDS}")  # steady state first
        window = env.act(
            f"cd {TRACING} && echo 0 > tracing_on && "
            # One glob at a time: one that matches nothing (nta_* before the load) fails alone.
            f"set -f; for g in {TRACED}; do echo $g >> set_ftrace_filter 2>/dev/null; done; "
            "set +f; "
            "grep -q . set_ftrace_filter && echo function > current_tracer && "
            "echo 65536 > buffer_size_kb && echo > trace && "
            f"a=$(cat {rx}) && echo 1 > tracing_on && sleep {TRACE_SECONDS} && "
            f"echo 0 > tracing_on && b=$(cat {rx}) && echo $((b - a))",
            undo=f"cd {TRACING} && echo nop > current_tracer && echo > set_ftrace_filter && "
            "echo 1408 > buffer_size_kb && echo 1 > tracing_on",
            timeout=600,
        )
    frames = int(window.stdout.split()[-1])
    kept, written = re.findall(r"entries-in-buffer/entries-written: (\d+)/(\d+)",
                               env.cmd(f"head -5 {TRACING}/trace").stdout)[0]  # fmt: skip
    counts = env.cmd(
        f"sed -n 's/.*: \\([^ ]*\\) <-.*/\\1/p' {TRACING}/trace | sort | uniq -c | "
        f"sort -rn | head -{CALLS}",
        timeout=600,
    ).stdout.split()
    per_frame = [(int(n) / frames, name) for n, name in zip(counts[::2], counts[1::2], strict=True)]
    out = env.outdir / f"calls-{sniffer}.txt"
    out.write_text(
        f"# {sniffer}: calls a frame, {frames} frames received in {TRACE_SECONDS} s\n"
        + "".join(f"{n:9.2f} {name}\n" for n, name in per_frame)
    )
    assert frames and per_frame, f"the tracer counted nothing: see {out}"
    assert kept == written, f"the trace buffer lost {int(written) - int(kept)} calls"
    hpet = next((n for n, name in per_frame if name == "read_hpet"), 0.0)
    figure(nic, f"{sniffer}: {frames} frames; read_hpet {hpet:.2f} a frame")
