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

from lab import traffic
from lab.labenv import LabEnv
from lab.pytest_plugin import Figure

SECONDS = 30
RATE = 2000.0  # frames/s: the benchmark's fixed load (flat out, the guest's shell starves)
FRAMES = 2000  # one batch, sent again and again
TOP = 40  # lines of the flat report kept
CALLERS = 400  # lines of the report with each busy symbol's callers
PERF = "/usr/bin/perf"


def sniffer_up(env: LabEnv, sniffer: str, iface: str) -> None:
    """``sniffer`` capturing ``iface`` into /dev/null until the test ends."""
    if sniffer == "tcpdump":
        dump = env.bkg("profiled-tcpdump", "lab.guestside.execute", "tcpdump", "-i", iface,
                       "-Q", "in", "-n", "-Z", "root", "-w", "/dev/null")  # fmt: skip
        dump.wait_line("listening on")
    elif sniffer == "ntadump":
        nic = next(n for n in env.nics if n.iface == iface)
        env.ntadump([nic], "profiled-ntadump", "-w", "/dev/null")
        env.net.bounce([nic])  # every buffer from here on is the reader's


@pytest.mark.lab
@pytest.mark.investigation("profile")
@pytest.mark.parametrize("sniffer", ["none", "tcpdump", "ntadump"])
def test_where_capture_time_goes(nta: LabEnv, sniffer: str, figure: Figure) -> None:
    """perf record -a on cpu-clock for SECONDS while the first NIC receives RATE frames/s and
    ``sniffer`` captures them; the top symbols by command saved, the busiest in the figure."""
    nic = nta.use(nta.nics[0])
    sniffer_up(nta, sniffer, nic.iface)
    batch = traffic.frames(nta.new_run_id(), FRAMES, nta.addrs(nic), ("udp4",), seed=9)
    data = f"/tmp/perf-{sniffer}.data"
    nta.defer(nta.cmd, f"rm -f {data}")
    rx0 = nta.rx(nic)
    with traffic.sustained(nic.host, batch, RATE) as sent:
        nta.cmd(f"{PERF} record -a -g -e cpu-clock -F 499 -o {data} -- sleep {SECONDS}",
                timeout=SECONDS + 120)  # fmt: skip
    took = nta.rx(nic).packets - rx0.packets
    perf = f"{PERF} report -i {data} --stdio --no-children --sort comm,sym 2>/dev/null"
    report = nta.cmd(
        f"{perf} --percent-limit 0.5 -g none | grep -v '^#' | grep -v '^$' | head -{TOP}",
        timeout=300,
    ).stdout
    out = nta.outdir / f"profile-{sniffer}.txt"
    out.write_text(f"# {sniffer}: {sent.sent} frames sent, {took} received, {SECONDS} s\n{report}")
    callers = nta.cmd(f"{perf} --percent-limit 2 -g graph,1,callee | head -{CALLERS}", timeout=300)
    (nta.outdir / f"callers-{sniffer}.txt").write_text(callers.stdout)
    lines = [" ".join(line.split()) for line in report.splitlines()]
    assert lines, f"perf reported nothing: see {out}"
    figure(nic, f"{sniffer}: {took} frames; top: {'; '.join(lines[:3])}")
