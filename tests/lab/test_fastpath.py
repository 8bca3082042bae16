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

from lab.scenario import (
    IDLE_S,
    Execute,
    Figure,
    GuestNic,
    LabEnv,
    Scribble,
    ScribbleReport,
    SniffReport,
    WakeProbe,
    WakeProbeReport,
    checks,
    traffic,
)

LIMIT = 64  # max_shared for the need-wakeup scenario
AFTER = 32  # lab.guestside.wakeprobe.AFTER
SCRIBBLE_S = 5
SPACED = 40  # frames sent one at a time for the latency scenario
SPACED_RATE = 20.0  # per second: each frame alone in the ring
# What a frame may wait beyond wakeup_usecs before its reader runs: the hrtimer's
# softirq and the reader's wakeup under TCG on a shared 2-core host.
LATENCY_SLACK_US = 250_000
DUMP_FRAMES = 1000
EXIT_WAIT_S = 60  # for ntadump to exit once it has every frame


@pytest.mark.sanitizers
def test_a_reader_scribbling_over_its_ring(nta_env: LabEnv, figure: Figure) -> None:
    """Garbage over every byte of the ring mapping while frames flow: the module takes
    nothing on trust, closing gives every chunk back, and the next reader is served."""
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    scribble = Scribble(nic.iface, SCRIBBLE_S, env.new_run_id())
    proc = env.bkg("scribbler", scribble, ready=True)
    env.bounce([nic])
    batch = traffic.frames(1, 300, env.addrs(nic), ("udp4",), seed=1)
    with env.sending(nic, batch) as sending:
        report = proc.result(ScribbleReport.from_json)
    sent = sending.sent
    assert report.rounds > 0 and report.kicks > 0, report
    stats = env.module.wait("the scribbler's chunks back", lambda s: s.outstanding == 0)
    checks.balanced(stats)
    run_id = env.new_run_id()
    rx0 = env.rx(nic)
    got = env.sniff_while(nic, run_id, traffic.frames(run_id, 200, env.addrs(nic), traffic.KINDS))
    assert got.verify is not None
    checks.all_but_missed(nic.name, got.verify.of(nic.iface), 200, env.settled_rx(nic, rx0, 200))
    figure(nic, f"{report.bytes_scribbled} B scribbled in {report.rounds} rounds, {sent} frames")
    env.quiesced()


def test_need_wakeup_is_set_when_starved_and_cleared_when_chunks_return(
    nta_env: LabEnv, figure: Figure
) -> None:
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    env.module.set_param("max_shared", LIMIT)
    starved = env.outdir / "starved"
    proc = env.bkg("wakeprobe", WakeProbe(nic.iface, starved), ready=True)
    env.bounce([nic])
    a = env.addrs(nic)
    env.send(nic, traffic.frames(1, LIMIT * 2, a, ("udp4",), seed=1))
    proc.wait_file(starved)
    env.send(nic, traffic.frames(2, AFTER, a, ("udp4",), seed=2))
    r = proc.result(WakeProbeReport.from_json)
    assert r.held_when_set == LIMIT, r
    assert r.cleared_by_commit and r.syscalls_to_clear == 1, r
    assert r.frames_after == AFTER and r.times_set == 1, r
    figure(nic, f"set at {r.held_when_set} held, cleared by {r.syscalls_to_clear} poll")


def spaced(env: LabEnv, nic: GuestNic, tag: str, *args: object) -> SniffReport:
    sn = env.pysniff(nic, tag, "-c", SPACED, *args, idle=IDLE_S + 1 / SPACED_RATE)
    env.send(nic, traffic.frames(3, SPACED, env.addrs(nic), ("udp4",), seed=3), SPACED_RATE)
    return sn.result(SniffReport.from_json)


def test_wakeups_come_within_the_policy(nta_env: LabEnv, figure: Figure) -> None:
    """Frames one at a time: with the default policy none waits longer than wakeup_usecs
    (plus LATENCY_SLACK_US); with wakeup_usecs=0 (--immediate) none waits for the timer
    and the reader wakes more often; and a burst wakes it once per wakeup_frames, not
    per frame."""
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    usecs = env.module.param("wakeup_usecs")
    frames = env.module.param("wakeup_frames")
    policy = spaced(env, nic, "wake-default")
    assert policy.frames == SPACED, policy
    assert policy.max_wait_us <= usecs + LATENCY_SLACK_US, policy.max_wait_us
    immediate = spaced(env, nic, "wake-immediate", "--immediate")
    assert immediate.frames == SPACED, immediate
    # Each frame wakes a sleeping reader at once: none waits for the policy's
    # timer. A frame that finds the reader still awake (busy with the one before,
    # on a loaded host) needs no wakeup, so there may be fewer than frames.
    assert immediate.max_wait_us < usecs, immediate.max_wait_us
    assert policy.reader.wakeups < immediate.reader.wakeups <= SPACED, (
        policy.reader,
        immediate.reader,
    )

    sn = env.pysniff(nic, "wake-burst", "--bulk", "-c", DUMP_FRAMES, idle=IDLE_S)
    rx0 = env.rx(nic)
    env.send(nic, traffic.frames(4, DUMP_FRAMES, env.addrs(nic), ("udp4",), seed=4))
    took = env.settled_rx(nic, rx0, DUMP_FRAMES).packets
    burst = sn.result(SniffReport.from_json)
    assert burst.frames == took, burst
    assert burst.reader.wakeups <= took // frames + SPACED, burst.reader
    figure(
        nic,
        f"max wait {policy.max_wait_us / 1000:.1f} ms (policy {usecs / 1000:.0f} ms), "
        f"immediate {immediate.reader.wakeups} wakeups/{SPACED}, burst "
        f"{burst.reader.wakeups} wakeups {burst.syscalls} syscalls/{took}",
    )


@pytest.mark.sanitizers
def test_ntadump_delivers_every_frame(nta_env: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """ntadump, the C reader, writes exactly the frames the NIC took, byte for byte."""
    env = nta_env
    batch = traffic.frames(env.new_run_id(), DUMP_FRAMES, env.addrs(nic), traffic.KINDS)
    pcap = env.outdir / f"ntadump-{nic.name}.pcap"
    dump = env.ntadump([nic], f"ntadump-{nic.name}", "-w", pcap, "-c", DUMP_FRAMES)
    env.bounce([nic])
    rx0 = env.rx(nic)
    env.send(nic, batch)
    rx = env.settled_rx(nic, rx0, len(batch))
    if rx.missed:
        dump.stop()  # it waits for the frames the NIC missed
    else:
        assert dump.wait(EXIT_WAIT_S) == 0, dump.log_tail()
    got = traffic.read_pcap(pcap)
    checks.subsequence(f"{nic.name}: ntadump's pcap", got, batch, rx.missed)
    summary = dump.log.read_text()
    assert f"{rx.packets} received, {len(got)} captured, 0 not delivered" in summary, summary
    figure(nic, f"{len(got)}/{len(batch)}" + (f" (NIC missed {rx.missed})" if rx.missed else ""))


def test_both_readers_end_when_their_interface_goes(nta_env: LabEnv, figure: Figure) -> None:
    """Each reader on a veth of its own (a device has one reader), the veths deleted: each
    ends with its summary, 'the interfaces are gone' and exit status 1, as tcpdump does
    (on POLLHUP, or with a module without it on NTA_DEV_GONE after idle polls)."""
    env = nta_env
    pairs = ("ntagone0", "ntagone2")
    for dev in pairs:
        peer = dev[:-1] + str(int(dev[-1]) + 1)
        env.add_link(dev, f"type veth peer name {peer}")
        env.act(f"ip link set {dev} up", undo=None)  # deleted with it
    py = env.pysniff(pairs[0], "gone-pysniff")
    dump = env.bkg(
        "gone-ntadump",
        Execute("ntadump: listening on", (env.ntadump_program, "-i", pairs[1])),
        ready=True,
    )
    for dev in pairs:
        env.delete_link(dev)
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
    figure(env.nics[0], f"both exit 1 within {took:.1f} s of the delete")
