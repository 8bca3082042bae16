"""NTA in a guest: every frame lands in an NTA chunk, reaches pysniff intact, comes back.

The module is built for the guest's kernel (W=1, warning-free) and loaded once
per guest; each scenario then runs on every NIC of the guest in turn. The
scenarios misbehave on purpose: a reader that stops committing, one that is
killed, malformed commits, the module's own fault injection, rmmod under
traffic. After each, the module's counters must balance to the chunk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import kbuild, traffic
from lab.guest import GuestNic
from lab.labenv import LabEnv

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

Figure = Callable[[GuestNic, str], None]


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def balanced(stats: dict[str, int]) -> None:
    assert stats["allocated"] == stats["freed"] + stats["in_use"], stats
    assert stats["published"] == (
        stats["committed"] + stats["returned_on_close"] + stats["outstanding"]
    ), stats


def seen_by_nta(d: dict[str, int]) -> int:
    """Frames in NTA chunks the tap saw, from a counters delta: each lands in one counter."""
    return d["published"] + d["not_shared"] + d["ring_full"] + d["fault_dropped"] + d["no_reader"]


def quiesced(env: LabEnv, leaked: int, timeout: float = 30.0) -> dict[str, int]:
    """No chunk leaked: with the links down, only the ``leaked`` chunks are still in use.

    While the links are up the drivers' rings and the stack hold NTA buffers,
    a number that differs by one from one quiet moment to the next (seen
    here: 574, 575, 574). Taking the links down frees them all, so in_use
    has one exact expected value.
    """
    env.guest.links_down(env.nics)
    stats = env.wait_nta("in_use", leaked, timeout)
    env.guest.links_up(env.nics)
    assert stats["outstanding"] == 0, stats
    assert stats["in_use"] == leaked, f"in_use {stats['in_use']} with the links down: leak"
    balanced(stats)
    return stats


def delivered(env: LabEnv, gn: GuestNic, frames: int, rate: float = READER_RATE) -> str:
    """The delivery scenario on one NIC; its figure for the matrix.

    Mixed kinds and sizes; every frame read in place from an NTA chunk, once,
    intact, committed; the pcap pysniff wrote is the injected one.
    """
    name = gn.plan.variant.name
    run_id = env.new_run_id()
    batch = traffic.frames(run_id, frames, env.addrs(gn), traffic.KINDS, seed=run_id)
    pcap = env.outdir / f"pysniff-{name}-{run_id}.pcap"
    rx0 = env.guest.rx_counts(gn.iface)
    before = env.nta_stats()

    got = env.sniff_while(gn, run_id, batch, "-w", pcap, rate=rate)

    rx = env.nic_took(gn, rx0, frames)
    took = rx.packets
    d = delta(got["stats_after"], before)
    assert d["fallback"] == 0, f"{name}: frames outside NTA chunks: {d}"
    assert (d["published"], d["committed"]) == (took, took), (name, d)
    lost = env.all_but_missed(name, got["verify"]["interfaces"].get(gn.iface, {}), frames, rx)
    assert (got["committed"], got["refused"]) == (took, 0), name
    wire = [frame for seq, frame in enumerate(batch) if seq not in lost]
    assert traffic.read_pcap(pcap) == wire, f"{name}: pysniff's pcap differs from the wire"
    assert got["stats_after"]["outstanding"] == 0, name
    balanced(got["stats_after"])
    return f"{took}/{frames}" + (f" (NIC missed {rx.missed})" if rx.missed else "")


@pytest.fixture(scope="module")
def nta(lab_env: LabEnv) -> Iterator[LabEnv]:
    built = kbuild.build(lab_env.kernel)
    assert built.status is kbuild.BuildStatus.OK, built.warnings or built.log.read_text()[-3000:]
    # Served from load on: a device with no reader still gets NTA buffers.
    lab_env.load_nta(built.module, "attach=" + ",".join(gn.iface for gn in lab_env.nics))
    version = lab_env.guest.sh.run("dmesg | grep 'nta: version'").stdout
    assert "abi 1" in version, version
    yield lab_env
    if lab_env.module is None:
        return  # the unload scenario failed before it loaded the module again
    # Chunks leaked on purpose by fault injection stay in use for good.
    quiesced(lab_env, lab_env.nta_stats()["fault_leaked"])
    lab_env.unload_nta()


@pytest.fixture
def baseline(nta: LabEnv) -> int:
    """Chunks in use for good before the test: those fault injection leaked."""
    return nta.nta_stats()["fault_leaked"]


@pytest.mark.lab
@pytest.mark.boot_profiles("debug")
def test_nta_delivers_every_frame_in_place(nta: LabEnv, baseline: int, figure: Figure) -> None:
    for gn in nta.each_nic():
        figure(gn, delivered(nta, gn, FRAMES))
    quiesced(nta, baseline)


def sustained_run(
    env: LabEnv, gn: GuestNic, batch: list[bytes], rate: float | None
) -> tuple[int, float, dict[str, int]]:
    """One long run with a bulk reader: (frames the NIC took, rate sent at, counters delta).

    Whatever the NIC took was in an NTA chunk and is accounted for by exactly
    one counter; the reader read and committed all that was published.
    """
    rx0 = env.guest.rx_counts(gn.iface)
    before = env.nta_stats()
    dev_before = env.dev_stats(gn)
    sn = env.start_pysniff(gn, f"sustained-{gn.plan.variant.name}-{rate}", "--bulk", "--idle", 3)
    sent = traffic.inject(gn.host, batch, rate)
    got = sn.result()
    received = env.nic_took(gn, rx0, len(batch)).packets
    d = delta(got["stats_after"], before)
    in_chunks = env.dev_stats(gn)["received"] - dev_before["received"]
    assert in_chunks == received, (received, in_chunks, d)
    assert seen_by_nta(d) == received, d
    assert got["frames"] == d["published"] == got["committed"], (got, d)
    balanced(got["stats_after"])
    return received, sent.rate, d


@pytest.mark.lab
def test_nta_sustained_load(nta: LabEnv, baseline: int, figure: Figure) -> None:
    """A long run at the highest rate the guest takes without a drop, then flat out.

    The rate is measured: the NIC's nominal lossless rate, halved while the
    guest (its vCPUs shared with other guests) drops frames. Flat out, the
    drops are reported as they are. Every run must account for each frame.
    """
    for gn in nta.each_nic():
        # Load, not a delivery check: a few hundred distinct frames, sent over again.
        distinct = traffic.frames(1, SUSTAINED_FRAMES // 8, nta.addrs(gn), ("udp4",), seed=1)
        batch = distinct * 8
        nominal = gn.plan.variant.lossless_rate
        tries = [nominal, nominal / 2, nominal / 4] if nominal else [None]
        for rate in tries:
            received, sent_rate, d = sustained_run(nta, gn, batch, rate)
            if received == SUSTAINED_FRAMES:
                break
        assert received == SUSTAINED_FRAMES, f"drops even at {sent_rate:.0f}/s"
        result = f"lossless {sent_rate:.0f}/s unshared {d['not_shared']}"
        if nominal:  # back-pressure makes the flat-out run the one above
            received, sent_rate, d = sustained_run(nta, gn, batch, None)
            result += f"; {sent_rate:.0f}/s NIC missed {SUSTAINED_FRAMES - received}"
        figure(gn, result)
    quiesced(nta, baseline)


@pytest.mark.lab
def test_nta_reader_that_stops_committing(nta: LabEnv, baseline: int, figure: Figure) -> None:
    """At max_shared NTA stops sharing, the stack is unaffected; commits bring sharing back."""
    default = nta.set_nta_param("max_shared", LIMIT)
    try:
        for gn in nta.each_nic():
            a = nta.addrs(gn)
            stalled = traffic.frames(nta.new_run_id(), SHORT_RUN, a, traffic.KINDS, seed=2)
            after_resume = traffic.frames(nta.new_run_id(), LIMIT // 2, a, traffic.KINDS, seed=3)
            pings = [traffic.echo_request(a, 0x4E54, i, b"nta" * 20) for i in range(PINGS)]
            before = nta.nta_stats()
            sn = nta.start_pysniff(gn, f"stall-{gn.plan.variant.name}", "--pause-commits",
                                   "-c", LIMIT + len(after_resume))  # fmt: skip

            rx0 = nta.guest.rx_counts(gn.iface)
            traffic.inject(gn.host, stalled, gn.plan.variant.lossless_rate)
            took = nta.nic_took(gn, rx0, SHORT_RUN).packets
            rx0 = nta.guest.rx_counts(gn.iface)
            replies = traffic.converse(
                gn.host, pings, PINGS, traffic.icmp_reply_from(a.guest_ip), PING_RATE
            )
            ping_rx = nta.nic_took(gn, rx0, PINGS)
            assert len(replies) == ping_rx.packets, (
                "the stack lost traffic while NTA was at its limit"
            )
            took += ping_rx.packets
            d = delta(nta.nta_stats(), before)
            assert (d["published"], d["outstanding"]) == (LIMIT, LIMIT), d
            assert d["not_shared"] == took - LIMIT, d

            nta.signal(sn, "USR1")
            wait_for_line(sn.log, "pysniff: resumed commits")
            # Fewer frames than the smallest ring (rtl8139's 64): none can be missed.
            traffic.inject(gn.host, after_resume, gn.plan.variant.lossless_rate)
            got = sn.result()

            d = delta(got["stats_after"], before)
            shared = LIMIT + len(after_resume)
            assert (got["frames"], got["committed"]) == (shared, shared), got
            assert (d["published"], d["committed"]) == (shared, shared), d
            assert d["not_shared"] == took - LIMIT, d
            figure(gn, f"unshared {d['not_shared']} pings {len(replies)}/{ping_rx.packets}")
        quiesced(nta, baseline)
    finally:
        nta.set_nta_param("max_shared", default)


def wait_for_line(path: Path, line: str, timeout: float = 30.0) -> None:
    """The guest writes ``path`` through the shared filesystem: read it from here."""
    deadline = time.monotonic() + timeout
    while line not in path.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {line!r} in {path} after {timeout:.0f}s")
        time.sleep(0.1)


@pytest.mark.lab
def test_nta_reader_killed(nta: LabEnv, baseline: int, figure: Figure) -> None:
    """SIGKILL with chunks held: close gives them all back; the next reader starts clean."""
    for gn in nta.each_nic():
        batch = traffic.frames(nta.new_run_id(), SHORT_RUN, nta.addrs(gn), traffic.KINDS, seed=4)
        before = nta.nta_stats()
        sn = nta.start_pysniff(gn, f"killed-{gn.plan.variant.name}", "--no-commit")
        rx0 = nta.guest.rx_counts(gn.iface)
        traffic.inject(gn.host, batch, gn.plan.variant.lossless_rate)
        took = nta.nic_took(gn, rx0, SHORT_RUN).packets
        nta.wait_nta("outstanding", took)

        nta.signal(sn, "KILL")
        assert sn.wait(60) == 128 + 9

        d = delta(nta.wait_nta("outstanding", 0), before)
        assert (d["published"], d["returned_on_close"], d["committed"]) == (took, took, 0)
        figure(gn, f"returned {d['returned_on_close']}; {delivered(nta, gn, SHORT_RUN)}")
    quiesced(nta, baseline)


@pytest.mark.lab
def test_nta_refuses_bad_commits(nta: LabEnv, baseline: int, figure: Figure) -> None:
    """Each kind of malformed commit is refused and counted under its reason; nothing is freed."""
    for gn in nta.each_nic():
        run_id = nta.new_run_id()
        batch = traffic.frames(run_id, SHORT_RUN, nta.addrs(gn), traffic.KINDS, seed=5)
        before = nta.nta_stats()
        rx0 = nta.guest.rx_counts(gn.iface)

        got = nta.sniff_while(gn, run_id, batch, "--bad-commits", "all", rate=READER_RATE)

        sent, refused = got["bad_commits_sent"], got["bad_commits_refused"]
        assert refused == sent and all(sent.values()), got
        d = delta(got["stats_after"], before)
        for kind in ("length", "node", "offset", "state", "generation", "owner"):
            assert d[f"bad_commits_{kind}"] == sent[kind], (kind, d)
        # Random bytes are refused first of all for their non-zero reserved field.
        assert d["bad_commits_reserved"] == sent["reserved"] + sent["random"], d
        rx = nta.nic_took(gn, rx0, SHORT_RUN)
        nta.all_but_missed(
            gn.plan.variant.name, got["verify"]["interfaces"].get(gn.iface, {}), SHORT_RUN, rx
        )
        took = rx.packets
        assert (got["committed"], d["committed"], d["published"]) == (took,) * 3, d
        figure(gn, f"refused {sum(refused.values())}")
    quiesced(nta, baseline)


@pytest.mark.lab
def test_nta_fault_injection_fails_the_scenarios(nta: LabEnv, baseline: int) -> None:
    """The checks above can fail: NTA's fault-injection knobs make them fail, as they must.

    fault_drop_record_every=N loses every Nth record: delivery must see the
    gaps. fault_leak_every=N never frees every Nth chunk: the quiesce check
    must see in_use stay up.
    """
    gn = nta.guest.use_nic(nta.nics[0])
    before = nta.nta_stats()
    nta.set_nta_param("fault_drop_record_every", 50)
    try:
        with pytest.raises(AssertionError):
            delivered(nta, gn, SHORT_RUN)
    finally:
        nta.set_nta_param("fault_drop_record_every", 0)
    assert delta(nta.nta_stats(), before)["fault_dropped"] == SHORT_RUN // 50
    quiesced(nta, baseline)

    before = nta.nta_stats()
    nta.set_nta_param("fault_leak_every", 20)
    try:
        delivered(nta, gn, SHORT_RUN)
        with pytest.raises(AssertionError, match="leak"):
            quiesced(nta, baseline, timeout=5)
    finally:
        nta.set_nta_param("fault_leak_every", 0)
    leaked = delta(nta.nta_stats(), before)["fault_leaked"]
    assert leaked >= SHORT_RUN // 20
    quiesced(nta, baseline + leaked)


@pytest.mark.lab
def test_nta_unload_under_fire(nta: LabEnv, figure: Figure) -> None:
    """rmmod while frames flow: refused while a reader holds chunks, clean once it is gone.

    Then the module loads again and delivers as before.
    """
    gn = nta.guest.use_nic(nta.nics[0])
    assert nta.module is not None
    module, params = nta.module, nta.module_params
    rate = gn.plan.variant.lossless_rate or 2000.0
    burst = traffic.frames(nta.new_run_id(), SHORT_RUN, nta.addrs(gn), ("udp4",), seed=6)
    nta.save_pcap(gn, "injected-unload-burst", burst)
    stop = threading.Event()

    def fire() -> None:
        while not stop.is_set():
            traffic.inject(gn.host, burst, rate)

    sn = nta.start_pysniff(gn, "unload-holder", "--no-commit")
    sender = threading.Thread(target=fire)
    sender.start()
    try:
        nta.wait_nta("outstanding", nta.nta_param("max_shared"))
        busy = nta.guest.sh.run("rmmod nta", check=False)
        assert busy.rc != 0 and "in use" in busy.stderr, busy
        nta.signal(sn, "KILL")
        sn.wait(60)
        rx = nta.guest.rx_counts(gn.iface).packets
        nta.guest.sh.run("rmmod nta")
        nta.module = None
        assert nta.guest.rx_counts(gn.iface).packets > rx, "no traffic during rmmod: not under fire"
    finally:
        stop.set()
        sender.join()
    unloaded = nta.guest.sh.run("dmesg | grep 'nta: unloaded' | tail -1").stdout
    assert "in_use" in unloaded, unloaded
    nta.guest.bounce_nics(nta.nics)

    nta.load_nta(module, params)
    for each in nta.each_nic():
        figure(each, f"reload {delivered(nta, each, SHORT_RUN)}")
