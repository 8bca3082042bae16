"""NTA's fast path: the commit ring, the need-wakeup flag, batched wakeups, and ntadump.

A reader hands chunks back by storing commits in a ring it shares with the
module, and makes a system call only when the module sets
NTA_COMMIT_NEED_WAKEUP; it is woken once wakeup_frames records are pending
or the oldest is wakeup_usecs old. These scenarios check each promise from
the reader's side, and that a reader writing garbage over the shared ring
cannot hurt the module.
"""

from __future__ import annotations

import time

import pytest

from lab import checks, traffic
from lab.guestnet import GuestNic
from lab.guestside.reports import ScribbleReport, WakeProbeReport
from lab.labenv import FIRST_FRAME_S, IDLE_S, LabEnv
from lab.pytest_plugin import Figure
from pysniff.report import SniffReport

LIMIT = 64  # max_shared for the need-wakeup scenario
AFTER = 32  # lab.guestside.wakeprobe.AFTER
SCRIBBLE_S = 5
SPACED = 40  # frames sent one at a time for the latency scenario
SPACED_RATE = 20.0  # per second: each frame alone in the ring
# What a frame may wait beyond wakeup_usecs before its reader runs: the hrtimer's
# softirq and the reader's wakeup under TCG on a shared 2-core host.
LATENCY_SLACK_US = 250_000
DUMP_FRAMES = 1000


@pytest.mark.lab
@pytest.mark.sanitizers
def test_a_reader_scribbling_over_its_ring(nta: LabEnv, figure: Figure) -> None:
    """Garbage over every byte of the ring mapping while frames flow: the module takes
    nothing on trust, closing gives every chunk back, and the next reader is served."""
    nic = nta.use(nta.nics[0])
    ready = nta.outdir / "ready-scribbler"
    proc = nta.bkg("scribbler", "lab.guestside.scribbler", nic.iface, SCRIBBLE_S,
                   nta.new_run_id(), ready, ready=ready)  # fmt: skip
    nta.net.bounce([nic])
    batch = traffic.frames(1, 300, nta.addrs(nic), ("udp4",), seed=1)
    sent = 0
    while proc.poll() is None:
        sent += traffic.inject(nic.host, batch, nic.rate).sent
    report = proc.result(ScribbleReport.from_json)
    assert report.rounds > 0 and report.kicks > 0, report
    stats = nta.nta.wait("the scribbler's chunks back", lambda s: s.outstanding == 0)
    checks.balanced(stats)
    run_id = nta.new_run_id()
    rx0 = nta.rx(nic)
    got = nta.sniff_while(nic, run_id, traffic.frames(run_id, 200, nta.addrs(nic), traffic.KINDS))
    assert got.verify is not None
    checks.all_but_missed(nic.name, got.verify.of(nic.iface), 200, nta.nic_took(nic, rx0, 200))
    figure(nic, f"{report.bytes_scribbled} B scribbled in {report.rounds} rounds, {sent} frames")
    nta.quiesced()


@pytest.mark.lab
def test_need_wakeup_is_set_when_starved_and_cleared_when_chunks_return(
    nta: LabEnv, figure: Figure
) -> None:
    nic = nta.use(nta.nics[0])
    nta.set_param("max_shared", LIMIT)
    starved, ready = nta.outdir / "starved", nta.outdir / "ready-wakeprobe"
    proc = nta.bkg("wakeprobe", "lab.guestside.wakeprobe", nic.iface, starved, ready,
                   ready=ready)  # fmt: skip
    nta.net.bounce([nic])
    a = nta.addrs(nic)
    nta.inject(nic, traffic.frames(1, LIMIT * 2, a, ("udp4",), seed=1))
    proc.wait_file(starved)
    nta.inject(nic, traffic.frames(2, AFTER, a, ("udp4",), seed=2))
    r = proc.result(WakeProbeReport.from_json)
    assert r.held_when_set == LIMIT, r
    assert r.cleared_by_commit and r.syscalls_to_clear == 1, r
    assert r.frames_after == AFTER and r.times_set == 1, r
    figure(nic, f"set at {r.held_when_set} held, cleared by {r.syscalls_to_clear} poll")


def spaced(env: LabEnv, nic: GuestNic, tag: str, *args: object) -> SniffReport:
    sn = env.pysniff(nic, tag, "-c", SPACED, "--idle", IDLE_S + 1 / SPACED_RATE,
                     "--first-frame-timeout", FIRST_FRAME_S, *args)  # fmt: skip
    env.inject(nic, traffic.frames(3, SPACED, env.addrs(nic), ("udp4",), seed=3),
               rate=SPACED_RATE)  # fmt: skip
    return sn.result(SniffReport.from_json)


@pytest.mark.lab
def test_wakeups_come_within_the_policy(nta: LabEnv, figure: Figure) -> None:
    """Frames one at a time: with the default policy none waits longer than wakeup_usecs
    (plus LATENCY_SLACK_US); with wakeup_usecs=0 (--immediate) none waits for the timer
    and the reader wakes more often; and a burst wakes it once per wakeup_frames, not
    per frame."""
    nic = nta.use(nta.nics[0])
    usecs = nta.nta.param("wakeup_usecs")
    frames = nta.nta.param("wakeup_frames")
    policy = spaced(nta, nic, "wake-default")
    assert policy.frames == SPACED, policy
    assert policy.max_wait_us <= usecs + LATENCY_SLACK_US, policy.max_wait_us
    immediate = spaced(nta, nic, "wake-immediate", "--immediate")
    assert immediate.frames == SPACED, immediate
    # Each frame wakes a sleeping reader at once: none waits for the policy's
    # timer. A frame that finds the reader still awake (busy with the one before,
    # on a loaded host) needs no wakeup, so there may be fewer than frames.
    assert immediate.max_wait_us < usecs, immediate.max_wait_us
    assert policy.reader.wakeups < immediate.reader.wakeups <= SPACED, (
        policy.reader,
        immediate.reader,
    )

    sn = nta.pysniff(nic, "wake-burst", "--bulk", "-c", DUMP_FRAMES, "--idle", IDLE_S,
                     "--first-frame-timeout", FIRST_FRAME_S)  # fmt: skip
    rx0 = nta.rx(nic)
    nta.inject(nic, traffic.frames(4, DUMP_FRAMES, nta.addrs(nic), ("udp4",), seed=4),
               rate=None)  # fmt: skip
    took = nta.nic_took(nic, rx0, DUMP_FRAMES).packets
    burst = sn.result(SniffReport.from_json)
    assert burst.frames == took, burst
    assert burst.reader.wakeups <= took // frames + SPACED, burst.reader
    figure(
        nic,
        f"max wait {policy.max_wait_us / 1000:.1f} ms (policy {usecs / 1000:.0f} ms), "
        f"immediate {immediate.reader.wakeups} wakeups/{SPACED}, burst "
        f"{burst.reader.wakeups} wakeups {burst.syscalls} syscalls/{took}",
    )


@pytest.mark.lab
@pytest.mark.sanitizers
def test_ntadump_delivers_every_frame(nta: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """ntadump, the C reader, writes exactly the frames the NIC took, byte for byte."""
    batch = traffic.frames(nta.new_run_id(), DUMP_FRAMES, nta.addrs(nic), traffic.KINDS)
    pcap = nta.outdir / f"ntadump-{nic.name}.pcap"
    dump = nta.ntadump([nic], f"ntadump-{nic.name}", "-w", pcap, "-c", DUMP_FRAMES)
    nta.net.bounce([nic])
    rx0 = nta.rx(nic)
    nta.inject(nic, batch)
    rx = nta.nic_took(nic, rx0, len(batch))
    if rx.missed:
        dump.stop()  # it waits for the frames the NIC missed
    else:
        assert dump.wait(60) == 0, dump.log_tail()
    got = traffic.read_pcap(pcap)
    checks.subsequence(f"{nic.name}: ntadump's pcap", got, batch, rx.missed)
    summary = dump.log.read_text()
    assert f"{rx.packets} received, {len(got)} captured, 0 not delivered" in summary, summary
    figure(nic, f"{len(got)}/{len(batch)}" + (f" (NIC missed {rx.missed})" if rx.missed else ""))


@pytest.mark.lab
def test_both_readers_end_when_their_interface_goes(nta: LabEnv, figure: Figure) -> None:
    """Each reader on a veth of its own (a device has one reader), the veths deleted: each
    ends with its summary, 'the interfaces are gone' and exit status 1, as tcpdump does
    (on POLLHUP, or with a module without it on NTA_DEV_GONE after idle polls)."""
    pairs = ("ntagone0", "ntagone2")
    for dev in pairs:
        peer = dev[:-1] + str(int(dev[-1]) + 1)
        nta.cmd(f"ip link add {dev} type veth peer name {peer} && ip link set {dev} up")
        nta.defer(nta.cmd, f"ip link del {dev}", 60.0, False)
    ready = nta.outdir / "ready-gone-pysniff"
    py = nta.bkg(
        "gone-pysniff", "pysniff", "-i", pairs[0], "--json", "--ready-file", ready,
        ready=ready, out=nta.outdir / "gone-pysniff.json",
    )  # fmt: skip
    dump = nta.bkg("gone-ntadump", "lab.guestside.execute", nta.ntadump_program, "-i", pairs[1])
    dump.wait_line("ntadump: listening on")
    nta.cmd(" && ".join(f"ip link del {dev}" for dev in pairs))
    start = time.monotonic()
    rcs = (py.wait(30), dump.wait(30))
    took = time.monotonic() - start
    assert rcs == (1, 1), (rcs, py.log_tail(), dump.log_tail())
    report = SniffReport.from_json(py.out.read_text())
    assert report.gone and report.dev_stats[pairs[0]].gone, report
    assert py.log.read_text().endswith("pysniff: the interfaces are gone\n"), py.log_tail()
    summary = dump.log.read_text()
    assert f"{pairs[1]}: 0 received, 0 captured" in summary, summary
    lines = summary.splitlines()
    # The module-wide refusal line (if earlier scenarios left any) may come between.
    device = next(line for line in lines if line.startswith(f"{pairs[1]}: "))
    assert device.endswith("; the device is gone"), summary
    assert lines[-1] == "ntadump: the interfaces are gone", summary
    figure(nta.nics[0], f"both exit 1 within {took:.1f} s of the delete")
