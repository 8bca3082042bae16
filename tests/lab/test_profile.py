"""Where capture's time goes: perf's samples over the whole guest while one sniffer
captures flat out. A study for the benchmark's shortfalls, not a check: it runs only
when ``-k`` names it (``ntalab run -k debian-6.1 --nics e1000 -- -k profile``).

Under TCG there is no PMU: perf samples on the ``cpu-clock`` software event, a timer
on every CPU, so a sample lands wherever the CPU was, softirq and idle included
(the same whole-machine view as the benchmark's ``capture_us``); time a CPU spends
with interrupts off is charged to where it turns them on again (the timer fires
there), so ``_raw_spin_unlock_irqrestore`` stands for the section it ends: the
callers report says whose. Each sniffer's reports (``profile-<sniffer>.txt``, the
symbols with the most samples by command; ``callers-<sniffer>.txt``, the same with
their call chains) cover the same traffic, beside the ``none`` trial's.
"""

from __future__ import annotations

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
