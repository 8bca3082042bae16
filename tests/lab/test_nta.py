"""NTA in a guest: every frame lands in an NTA chunk, reaches pysniff intact, comes back.

The module is built for the guest's kernel (W=1, warning-free) and loaded once
per guest; each scenario runs on every NIC of the guest. The scenarios
misbehave on purpose: a reader that stops committing, one that is killed,
malformed commits, the module's own fault injection, rmmod under traffic.
After each, the module's counters must balance to the chunk.
"""

from __future__ import annotations

import pytest

from lab.scenario import (
    IDLE_S,
    DevStats,
    Figure,
    GuestNic,
    LabEnv,
    Pace,
    SniffReport,
    checks,
    traffic,
)

FRAMES = 1000
# What pysniff, verifying and writing a pcap frame by frame in a TCG guest,
# keeps up with. Faster, it holds max_shared chunks and NTA stops sharing
# (not_shared), which is the limit scenario's business, not delivery's.
READER_RATE = 250.0
SHORT_RUN = 200  # frames, for scenarios about something other than volume
SUSTAINED_FRAMES = 3000
LIMIT = 64  # max_shared for the limit scenario
PINGS = 50
PING_RATE = 500.0  # the guest's ICMP replies need it (see test_stack)
EXIT_WAIT_S = 60  # for a reader killed to be gone


def delivered(env: LabEnv, nic: GuestNic, frames: int, rate: float | Pace = READER_RATE) -> str:
    """The delivery scenario on one NIC; its figure for the matrix.

    Mixed kinds and sizes; every frame read in place from an NTA chunk, once,
    intact, committed; the pcap pysniff wrote is the injected one.
    """
    run_id = env.new_run_id()
    batch = traffic.frames(run_id, frames, env.addrs(nic), traffic.KINDS, seed=run_id)
    pcap = env.outdir / f"pysniff-{nic.name}-{run_id}.pcap"
    rx0 = env.rx(nic)
    before = env.module.stats()

    got = env.sniff_while(nic, run_id, batch, "-w", pcap, rate=rate)

    rx = env.settled_rx(nic, rx0, frames)
    took = rx.packets
    d = got.stats_after - before
    dev = got.dev_stats[nic.iface]
    checks.accounted(nic.name, dev)
    assert (dev.received, dev.published) == (took, took), f"{nic.name}: missed {dev.missed}"
    assert d.fallback == 0, f"{nic.name}: frames outside NTA chunks: {d}"
    assert (d.published, d.committed) == (took, took), (nic.name, d)
    assert got.verify is not None
    lost = checks.all_but_missed(nic.name, got.verify.of(nic.iface), frames, rx)
    assert (got.committed, got.refused) == (took, 0), nic.name
    checks.same_frames(
        f"{nic.name}: pysniff's pcap", traffic.read_pcap(pcap), checks.wire_minus(batch, lost)
    )
    assert got.stats_after.outstanding == 0, nic.name
    checks.balanced(got.stats_after)
    return f"{took}/{frames}" + (f" (NIC missed {rx.missed})" if rx.missed else "")


@pytest.mark.boot_profiles("debug")
@pytest.mark.sanitizers
def test_nta_delivers_every_frame_in_place(nta_env: LabEnv, nic: GuestNic, figure: Figure) -> None:
    figure(nic, delivered(nta_env, nic, FRAMES))
    nta_env.quiesced()


def sustained_run(
    env: LabEnv, nic: GuestNic, batch: list[bytes], rate: Pace
) -> tuple[int, float, DevStats]:
    """One long run with a bulk reader: (frames the NIC took, rate sent at, its dev counters).

    Whatever the NIC took was in a chunk of the reader's pool and is
    accounted for by exactly one counter; the reader read and committed all
    that was published.
    """
    before = env.module.stats()
    # -c: done with the last frame; idle only when some never come (missed, not shared).
    tag = f"sustained-{nic.name}-{rate.name.lower()}"
    sn = env.pysniff(nic, tag, "--bulk", "-c", len(batch), idle=IDLE_S)
    rx0 = env.rx(nic)
    sent = env.send(nic, batch, rate)
    got = sn.result(SniffReport.from_json)
    received = env.settled_rx(nic, rx0, len(batch)).packets
    d = got.stats_after - before
    dev = got.dev_stats[nic.iface]
    checks.accounted(nic.name, dev)
    assert (dev.received, dev.unserved) == (received, 0), (received, dev)
    assert got.frames == dev.published == d.published == got.committed, (got, d)
    checks.balanced(got.stats_after)
    return received, sent.rate, dev


def test_nta_sustained_load(nta_env: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """A long run at the NIC's lossless rate (e1000: as fast as it takes frames), then flat
    out: every frame the NIC took is in a chunk of the reader's pool and accounted for by
    exactly one counter, and the reader read and committed all that was published.

    rtl8139 has no flow control: what it misses is counted by the NIC and reported, as
    everywhere in the lab, not retried away.
    """
    # Load, not a delivery check: a few hundred distinct frames, sent over again.
    distinct = traffic.frames(1, SUSTAINED_FRAMES // 8, nta_env.addrs(nic), ("udp4",), seed=1)
    batch = distinct * 8
    received, rate, d = sustained_run(nta_env, nic, batch, Pace.LOSSLESS)
    result = f"{rate:.0f}/s NIC missed {SUSTAINED_FRAMES - received} unshared {d.not_shared}"
    if nic.rate:  # back-pressure makes the flat-out run the one above
        received, rate, d = sustained_run(nta_env, nic, batch, Pace.FLAT_OUT)
        result += f"; {rate:.0f}/s NIC missed {SUSTAINED_FRAMES - received}"
    figure(nic, result)
    nta_env.quiesced()


def test_nta_reader_that_stops_committing(nta_env: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """At max_shared NTA stops sharing, the stack is unaffected; commits bring sharing back."""
    env = nta_env
    env.module.set_param("max_shared", LIMIT)
    a = env.addrs(nic)
    stalled = traffic.frames(env.new_run_id(), SHORT_RUN, a, traffic.KINDS, seed=2)
    after_resume = traffic.frames(env.new_run_id(), LIMIT // 2, a, traffic.KINDS, seed=3)
    pings = [traffic.echo_request(a, 0x4E54, i, b"nta" * 20) for i in range(PINGS)]
    before = env.module.stats()
    sn = env.pysniff(nic, f"stall-{nic.name}", "--pause-commits", "-c", LIMIT + len(after_resume))

    rx0 = env.rx(nic)
    env.send(nic, stalled)
    took = env.settled_rx(nic, rx0, SHORT_RUN).packets
    rx0 = env.rx(nic)
    replies = env.converse(nic, pings, PINGS, traffic.icmp_reply_from(a.guest_ip), PING_RATE)
    ping_rx = env.settled_rx(nic, rx0, PINGS)
    assert len(replies) == ping_rx.packets, "the stack lost traffic while NTA was at its limit"
    took += ping_rx.packets
    d = env.module.stats() - before
    assert (d.published, d.outstanding) == (LIMIT, LIMIT), d
    assert d.not_shared == took - LIMIT, d

    sn.signal("USR1")
    sn.wait_line("pysniff: resumed commits")
    # Fewer frames than the smallest ring (rtl8139's 64): none can be missed.
    env.send(nic, after_resume)
    got = sn.result(SniffReport.from_json)

    d = got.stats_after - before
    shared = LIMIT + len(after_resume)
    assert (got.frames, got.committed) == (shared, shared), got
    assert (d.published, d.committed) == (shared, shared), d
    assert d.not_shared == took - LIMIT, d
    figure(nic, f"unshared {d.not_shared} pings {len(replies)}/{ping_rx.packets}")
    env.quiesced()


@pytest.mark.sanitizers
def test_nta_reader_killed(nta_env: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """SIGKILL with chunks held: close gives them all back; the next reader starts clean."""
    env = nta_env
    batch = traffic.frames(env.new_run_id(), SHORT_RUN, env.addrs(nic), traffic.KINDS, seed=4)
    before = env.module.stats()
    sn = env.pysniff(nic, f"killed-{nic.name}", "--no-commit")
    rx0 = env.rx(nic)
    env.send(nic, batch)
    took = env.settled_rx(nic, rx0, SHORT_RUN).packets
    env.module.wait(f"outstanding {took}", lambda s: s.outstanding - before.outstanding == took)

    sn.signal("KILL")
    assert sn.wait(EXIT_WAIT_S) == 128 + 9

    d = env.module.wait("outstanding 0", lambda s: s.outstanding == 0) - before
    assert (d.published, d.returned_on_close, d.committed) == (took, took, 0)
    figure(nic, f"returned {d.returned_on_close}; {delivered(env, nic, SHORT_RUN)}")
    env.quiesced()


@pytest.mark.sanitizers
def test_nta_refuses_bad_commits(nta_env: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """Each kind of malformed commit, through write() and through the commit ring, is refused
    and counted under its reason; nothing is freed, and the frames still come through."""
    env = nta_env
    figures = []
    for via in ("write", "ring"):
        run_id = env.new_run_id()
        batch = traffic.frames(run_id, SHORT_RUN // 2, env.addrs(nic), traffic.KINDS, seed=5)
        before = env.module.stats()
        rx0 = env.rx(nic)

        got = env.sniff_while(
            nic, run_id, batch, "--bad-commits", "all", "--commit-via", via, rate=READER_RATE
        )

        sent, refused = got.bad_commits_sent, got.bad_commits_refused
        assert refused == sent and all(sent.values()), got
        d = got.stats_after - before
        for kind in ("node", "offset", "pool", *(("length",) if via == "write" else ())):
            assert d.bad_commits[kind] == sent[kind], (via, kind, d)
        if via == "ring":
            assert d.bad_commits["ring"] == sent["ring"], d
        # Another reader's chunk (one of the pools it binds too) is not shared with the
        # committer: refused as state. So
        # is a chunk committed twice, unless the module handed it back and published it
        # to this reader again between the two copies: then its generation moved on and
        # the second copy is stale. Either way each is refused once, never freed.
        late = d.bad_commits["generation"] - sent["generation"]
        assert 0 <= late <= sent["state"], (via, d)
        assert d.bad_commits["state"] + late == sent["state"] + sent["owner"], (via, d)
        # Random bytes are refused first of all for their non-zero reserved field.
        assert d.bad_commits["reserved"] == sent["reserved"] + sent["random"], (via, d)
        rx = env.settled_rx(nic, rx0, len(batch))
        assert got.verify is not None
        checks.all_but_missed(nic.name, got.verify.of(nic.iface), len(batch), rx)
        took = rx.packets
        assert (got.committed, d.committed, d.published) == (took,) * 3, (via, d)
        figures.append(f"{via} {sum(refused.values())}")
    figure(nic, "refused " + ", ".join(figures))
    env.quiesced()


def test_nta_fault_injection_fails_the_scenarios(nta_env: LabEnv) -> None:
    """The checks above can fail: NTA's fault-injection knobs make them fail, as they must.

    fault_drop_record_every=N loses every Nth record: delivery must see the
    gaps. fault_leak_every=N never frees every Nth chunk: the quiesce check
    must see in_use stay up.
    """
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    before = env.module.stats()
    env.module.set_param("fault_drop_record_every", 50)
    with pytest.raises(AssertionError):
        delivered(env, nic, SHORT_RUN)
    env.module.set_param("fault_drop_record_every", 0)
    assert (env.module.stats() - before).fault_dropped == SHORT_RUN // 50
    env.quiesced()

    before = env.module.stats()
    env.module.set_param("fault_leak_every", 20)
    delivered(env, nic, SHORT_RUN)
    with pytest.raises(AssertionError, match="leak"):
        env.quiesced(before.fault_leaked, timeout=5)
    env.module.set_param("fault_leak_every", 0)
    leaked = (env.module.stats() - before).fault_leaked
    assert leaked >= SHORT_RUN // 20
    env.quiesced(before.fault_leaked + leaked)


@pytest.mark.sanitizers
def test_nta_unload_under_fire(nta_env: LabEnv, figure: Figure) -> None:
    """rmmod while frames flow: refused while a reader holds chunks, clean once it is gone.

    Then the module loads again and delivers as before.
    """
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    rate = nic.rate or 2000.0
    burst = traffic.frames(env.new_run_id(), SHORT_RUN, env.addrs(nic), ("udp4",), seed=6)
    sn = env.pysniff(nic, "unload-holder", "--no-commit")
    with env.sending(nic, burst, rate):
        env.module.wait("a reader holding chunks", lambda s: s.outstanding >= SHORT_RUN)
        busy = env.module.rmmod()
        assert busy.rc != 0 and "in use" in busy.stderr, busy
        sn.signal("KILL")
        sn.wait(EXIT_WAIT_S)
        rx = env.rx(nic).packets
        assert env.module.rmmod().rc == 0
        assert env.rx(nic).packets > rx, "no traffic during rmmod: not under fire"
    unloaded = env.cmd("dmesg | grep 'nta: unloaded' | tail -1").stdout
    assert "in_use" in unloaded, unloaded
    env.bounce(env.nics)

    env.module.load()
    for each in env.each_nic():
        figure(each, f"reload {delivered(env, each, SHORT_RUN)}")
