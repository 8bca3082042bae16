"""NTA in a guest: every frame lands in an NTA chunk, reaches pysniff intact, comes back.

The module is built for the guest's kernel (W=1, warning-free) and loaded once
per guest; each scenario runs on every NIC of the guest. The scenarios
misbehave on purpose: a reader that stops committing, one that is killed,
malformed commits, the module's own fault injection, rmmod under traffic.
After each, the module's counters must balance to the chunk.
"""

from __future__ import annotations

import pytest

from lab import checks, traffic
from lab.guestnet import GuestNic
from lab.labenv import FIRST_FRAME_S, IDLE_S, LabEnv
from lab.pytest_plugin import Figure
from pysniff.abi import DevStats
from pysniff.report import SniffReport

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


def delivered(env: LabEnv, nic: GuestNic, frames: int, rate: float = READER_RATE) -> str:
    """The delivery scenario on one NIC; its figure for the matrix.

    Mixed kinds and sizes; every frame read in place from an NTA chunk, once,
    intact, committed; the pcap pysniff wrote is the injected one.
    """
    run_id = env.new_run_id()
    batch = traffic.frames(run_id, frames, env.addrs(nic), traffic.KINDS, seed=run_id)
    pcap = env.outdir / f"pysniff-{nic.name}-{run_id}.pcap"
    rx0 = env.rx(nic)
    before = env.nta.stats()

    got = env.sniff_while(nic, run_id, batch, "-w", pcap, rate=rate)

    rx = env.nic_took(nic, rx0, frames)
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


@pytest.mark.lab
@pytest.mark.boot_profiles("debug")
@pytest.mark.sanitizers
def test_nta_delivers_every_frame_in_place(nta: LabEnv, nic: GuestNic, figure: Figure) -> None:
    figure(nic, delivered(nta, nic, FRAMES))
    nta.quiesced()


def sustained_run(
    env: LabEnv, nic: GuestNic, batch: list[bytes], rate: float | None
) -> tuple[int, float, DevStats]:
    """One long run with a bulk reader: (frames the NIC took, rate sent at, its dev counters).

    Whatever the NIC took was in a chunk of the reader's pool and is
    accounted for by exactly one counter; the reader read and committed all
    that was published.
    """
    before = env.nta.stats()
    # -c: done with the last frame; --idle only when some never come (missed, not shared).
    sn = env.pysniff(
        nic, f"sustained-{nic.name}-{rate}", "--bulk", "-c", len(batch), "--idle", IDLE_S,
        "--first-frame-timeout", FIRST_FRAME_S,
    )  # fmt: skip
    rx0 = env.rx(nic)
    sent = traffic.inject(nic.host, batch, rate)
    got = sn.result(SniffReport.from_json)
    received = env.nic_took(nic, rx0, len(batch)).packets
    d = got.stats_after - before
    dev = got.dev_stats[nic.iface]
    checks.accounted(nic.name, dev)
    assert (dev.received, dev.unserved) == (received, 0), (received, dev)
    assert got.frames == dev.published == d.published == got.committed, (got, d)
    checks.balanced(got.stats_after)
    return received, sent.rate, dev


@pytest.mark.lab
def test_nta_sustained_load(nta: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """A long run at the NIC's lossless rate (e1000: as fast as it takes frames), then flat
    out: every frame the NIC took is in a chunk of the reader's pool and accounted for by
    exactly one counter, and the reader read and committed all that was published.

    rtl8139 has no flow control: what it misses is counted by the NIC and reported, as
    everywhere in the lab, not retried away.
    """
    # Load, not a delivery check: a few hundred distinct frames, sent over again.
    distinct = traffic.frames(1, SUSTAINED_FRAMES // 8, nta.addrs(nic), ("udp4",), seed=1)
    batch = distinct * 8
    received, rate, d = sustained_run(nta, nic, batch, nic.rate)
    result = f"{rate:.0f}/s NIC missed {SUSTAINED_FRAMES - received} unshared {d.not_shared}"
    if nic.rate:  # back-pressure makes the flat-out run the one above
        received, rate, d = sustained_run(nta, nic, batch, None)
        result += f"; {rate:.0f}/s NIC missed {SUSTAINED_FRAMES - received}"
    figure(nic, result)
    nta.quiesced()


@pytest.mark.lab
def test_nta_reader_that_stops_committing(nta: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """At max_shared NTA stops sharing, the stack is unaffected; commits bring sharing back."""
    nta.set_param("max_shared", LIMIT)
    a = nta.addrs(nic)
    stalled = traffic.frames(nta.new_run_id(), SHORT_RUN, a, traffic.KINDS, seed=2)
    after_resume = traffic.frames(nta.new_run_id(), LIMIT // 2, a, traffic.KINDS, seed=3)
    pings = [traffic.echo_request(a, 0x4E54, i, b"nta" * 20) for i in range(PINGS)]
    before = nta.nta.stats()
    sn = nta.pysniff(nic, f"stall-{nic.name}", "--pause-commits", "-c", LIMIT + len(after_resume))

    rx0 = nta.rx(nic)
    nta.inject(nic, stalled)
    took = nta.nic_took(nic, rx0, SHORT_RUN).packets
    rx0 = nta.rx(nic)
    replies = traffic.converse(
        nic.host, pings, PINGS, traffic.icmp_reply_from(a.guest_ip), PING_RATE
    )
    ping_rx = nta.nic_took(nic, rx0, PINGS)
    assert len(replies) == ping_rx.packets, "the stack lost traffic while NTA was at its limit"
    took += ping_rx.packets
    d = nta.nta.stats() - before
    assert (d.published, d.outstanding) == (LIMIT, LIMIT), d
    assert d.not_shared == took - LIMIT, d

    sn.signal("USR1")
    sn.wait_line("pysniff: resumed commits")
    # Fewer frames than the smallest ring (rtl8139's 64): none can be missed.
    nta.inject(nic, after_resume)
    got = sn.result(SniffReport.from_json)

    d = got.stats_after - before
    shared = LIMIT + len(after_resume)
    assert (got.frames, got.committed) == (shared, shared), got
    assert (d.published, d.committed) == (shared, shared), d
    assert d.not_shared == took - LIMIT, d
    figure(nic, f"unshared {d.not_shared} pings {len(replies)}/{ping_rx.packets}")
    nta.quiesced()


@pytest.mark.lab
@pytest.mark.sanitizers
def test_nta_reader_killed(nta: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """SIGKILL with chunks held: close gives them all back; the next reader starts clean."""
    batch = traffic.frames(nta.new_run_id(), SHORT_RUN, nta.addrs(nic), traffic.KINDS, seed=4)
    before = nta.nta.stats()
    sn = nta.pysniff(nic, f"killed-{nic.name}", "--no-commit")
    rx0 = nta.rx(nic)
    nta.inject(nic, batch)
    took = nta.nic_took(nic, rx0, SHORT_RUN).packets
    nta.nta.wait(f"outstanding {took}", lambda s: s.outstanding - before.outstanding == took)

    sn.signal("KILL")
    assert sn.wait(60) == 128 + 9

    d = nta.nta.wait("outstanding 0", lambda s: s.outstanding == 0) - before
    assert (d.published, d.returned_on_close, d.committed) == (took, took, 0)
    figure(nic, f"returned {d.returned_on_close}; {delivered(nta, nic, SHORT_RUN)}")
    nta.quiesced()


@pytest.mark.lab
@pytest.mark.sanitizers
def test_nta_refuses_bad_commits(nta: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """Each kind of malformed commit, through write() and through the commit ring, is refused
    and counted under its reason; nothing is freed, and the frames still come through."""
    figures = []
    for via in ("write", "ring"):
        run_id = nta.new_run_id()
        batch = traffic.frames(run_id, SHORT_RUN // 2, nta.addrs(nic), traffic.KINDS, seed=5)
        before = nta.nta.stats()
        rx0 = nta.rx(nic)

        got = nta.sniff_while(
            nic, run_id, batch, "--bad-commits", "all", "--commit-via", via, rate=READER_RATE
        )

        sent, refused = got.bad_commits_sent, got.bad_commits_refused
        assert refused == sent and all(sent.values()), got
        d = got.stats_after - before
        for kind in ("node", "offset", *(("length",) if via == "write" else ())):
            assert d.bad_commits[kind] == sent[kind], (via, kind, d)
        if via == "ring":
            assert d.bad_commits["ring"] == sent["ring"], d
        # Another reader's chunk is not shared with the committer: refused as state. So
        # is a chunk committed twice, unless the module handed it back and published it
        # to this reader again between the two copies: then its generation moved on and
        # the second copy is stale. Either way each is refused once, never freed.
        late = d.bad_commits["generation"] - sent["generation"]
        assert 0 <= late <= sent["state"], (via, d)
        assert d.bad_commits["state"] + late == sent["state"] + sent["owner"], (via, d)
        # Random bytes are refused first of all for their non-zero reserved field.
        assert d.bad_commits["reserved"] == sent["reserved"] + sent["random"], (via, d)
        rx = nta.nic_took(nic, rx0, len(batch))
        assert got.verify is not None
        checks.all_but_missed(nic.name, got.verify.of(nic.iface), len(batch), rx)
        took = rx.packets
        assert (got.committed, d.committed, d.published) == (took,) * 3, (via, d)
        figures.append(f"{via} {sum(refused.values())}")
    figure(nic, "refused " + ", ".join(figures))
    nta.quiesced()


@pytest.mark.lab
def test_nta_fault_injection_fails_the_scenarios(nta: LabEnv) -> None:
    """The checks above can fail: NTA's fault-injection knobs make them fail, as they must.

    fault_drop_record_every=N loses every Nth record: delivery must see the
    gaps. fault_leak_every=N never frees every Nth chunk: the quiesce check
    must see in_use stay up.
    """
    nic = nta.use(nta.nics[0])
    before = nta.nta.stats()
    nta.set_param("fault_drop_record_every", 50)
    with pytest.raises(AssertionError):
        delivered(nta, nic, SHORT_RUN)
    nta.set_param("fault_drop_record_every", 0)
    assert (nta.nta.stats() - before).fault_dropped == SHORT_RUN // 50
    nta.quiesced()

    before = nta.nta.stats()
    nta.set_param("fault_leak_every", 20)
    delivered(nta, nic, SHORT_RUN)
    with pytest.raises(AssertionError, match="leak"):
        nta.quiesced(before.fault_leaked, timeout=5)
    nta.set_param("fault_leak_every", 0)
    leaked = (nta.nta.stats() - before).fault_leaked
    assert leaked >= SHORT_RUN // 20
    nta.quiesced(before.fault_leaked + leaked)


@pytest.mark.lab
@pytest.mark.sanitizers
def test_nta_unload_under_fire(nta: LabEnv, figure: Figure) -> None:
    """rmmod while frames flow: refused while a reader holds chunks, clean once it is gone.

    Then the module loads again and delivers as before.
    """
    nic = nta.use(nta.nics[0])
    loaded = nta.nta.loaded
    assert loaded is not None
    rate = nic.rate or 2000.0
    burst = traffic.frames(nta.new_run_id(), SHORT_RUN, nta.addrs(nic), ("udp4",), seed=6)
    sn = nta.pysniff(nic, "unload-holder", "--no-commit")
    try:
        with traffic.sustained(nic.host, burst, rate):
            nta.nta.wait("a reader holding chunks", lambda s: s.outstanding >= SHORT_RUN)
            busy = nta.nta.rmmod()
            assert busy.rc != 0 and "in use" in busy.stderr, busy
            sn.signal("KILL")
            sn.wait(60)
            rx = nta.rx(nic).packets
            assert nta.nta.rmmod().rc == 0
            assert nta.rx(nic).packets > rx, "no traffic during rmmod: not under fire"
            unloaded = nta.cmd("dmesg | grep 'nta: unloaded' | tail -1").stdout
            assert "in_use" in unloaded, unloaded
    finally:
        # Loaded again whatever failed above, so the guest's later scenarios find it.
        if nta.nta.loaded is None:
            nta.net.bounce(nta.nics)
            nta.nta.load(loaded.module, loaded.params, bounce=nta.nics)
    for each in nta.each_nic():
        figure(each, f"reload {delivered(nta, each, SHORT_RUN)}")
