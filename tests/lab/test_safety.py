"""NTA's safety in the kernel: the contexts its allocator is called from, unload under a
sleeping caller, what a local user's sockets do to a pool, bounded work when a pool is
empty, a failed load, and what one reader can see of another's.

Drivers reach NTA's hooks from contexts the lab's NICs do not on their own
(interrupts off, hard interrupt, a GFP_KERNEL allocation that sleeps):
kmod/nta_caller.c, a test-only module, makes those calls as a driver would.
On the sanitizer kernels lockdep watches every lock NTA takes in them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator

import pytest

from lab import kbuild, paths, traffic
from lab.guestnet import GuestNic
from lab.guestside.reports import ScanReport, SinkReport
from lab.labenv import FIRST_FRAME_S, IDLE_S, LabEnv
from lab.nta import PARAMS
from lab.pytest_plugin import Figure
from lab.wait import wait_until
from pysniff.report import SniffReport

CALLER = "/sys/kernel/debug/nta_caller"
CALLS = 300  # per context
PAGE = 4096
SINK_PORT = 6000
SINK_SOCKETS = 8
SINK_DATAGRAMS = 100  # per socket: more than a default rcvbuf holds of either size
SMALL_DATAGRAM = 200  # e1000's copybreak copies it into an skb NTA builds
LARGE_DATAGRAM = 1000  # e1000's frag path
EMPTY_POOL_KB = 1024  # a reader pool small enough for one burst to use up
BURST = 3000
# The most busy chunks an allocation that finds its pool empty may look at.
RECLAIM_BUDGET = int(
    re.search(
        r"#define NTA_RECLAIM_BUDGET\s+(\d+)", (paths.sources().kmod / "nta.h").read_text()
    ).group(1)  # type: ignore[union-attr]
)


@pytest.fixture(scope="module")
def caller(nta: LabEnv) -> Iterator[LabEnv]:
    """nta_caller loaded (it needs no symbol of NTA's: NTA can unload under it)."""
    built = kbuild.build(nta.kernel)
    assert built.caller is not None and built.caller.is_file(), built.log
    nta.cmd(f"insmod {shlex.quote(str(built.caller))}")
    yield nta
    nta.cmd("rmmod nta_caller")


def caller_result(env: LabEnv) -> dict[str, str]:
    words = env.cmd(f"cat {CALLER}/atomic").stdout.split()
    return dict(zip(words[::2], words[1::2], strict=True))


def calls_from_every_context(env: LabEnv, nic: GuestNic) -> str:
    before = env.nta.dev_stats(nic)
    env.cmd(f"echo {nic.iface} {CALLS} > {CALLER}/atomic", timeout=120)
    got = caller_result(env)
    after = env.nta.dev_stats(nic)
    assert (got["irqs_off"], got["hardirq"], got["failed"]) == (str(CALLS), str(CALLS), "0"), got
    served = after.allocated - before.allocated
    fell_back = after.fallback - before.fallback
    calls = 2 * CALLS + int(got["task"])
    assert served > 0 and served + fell_back >= calls, (before, after)
    return f"{calls} calls: {served} served, {fell_back} fell back"


@pytest.mark.lab
@pytest.mark.sanitizers
def test_allocations_with_interrupts_off_and_in_hard_interrupt(
    caller: LabEnv, figure: Figure
) -> None:
    """Receive buffers for a served device, allocated with interrupts off, from a hard
    interrupt nested on the task's allocations, and from the task: no hang, no lockdep
    report (the splat scan after every test), on the common pool and on a reader's."""
    nic = caller.use(caller.nics[0])
    common = calls_from_every_context(caller, nic)
    caller.pysniff(nic, "contexts-reader", "--bulk")
    mine = calls_from_every_context(caller, nic)
    figure(nic, f"common pool: {common}; reader's pool: {mine}")


@pytest.mark.lab
@pytest.mark.sanitizers
def test_rmmod_waits_for_a_caller_sleeping_in_a_fallback(caller: LabEnv) -> None:
    """A GFP_KERNEL allocation NTA cannot serve falls back to the kernel's allocator and may
    sleep there: the module is pinned until it returns, so rmmod is refused meanwhile,
    and succeeds after. Unpinned, rmmod would free the text the sleeper returns into."""
    nic = caller.use(caller.nics[0])
    loaded = caller.nta.loaded
    assert loaded is not None
    caller.set_param("fault_block_fallback", 1)
    log = caller.outdir / "sleeper.log"
    pid = caller.bg(f"echo {nic.iface} > {CALLER}/sleep", log)
    refcnt = "/sys/module/nta/refcnt"
    wait_until(lambda: caller.cmd(f"cat {refcnt}").stdout.strip() == "1", 30,
               "the sleeper to pin NTA")  # fmt: skip
    refused = caller.nta.rmmod()
    assert refused.rc != 0 and "in use" in refused.stderr, refused
    caller.nta.set_param("fault_block_fallback", 0)
    wait_until(lambda: caller.cmd(f"kill -0 {pid}", check=False).rc != 0, 30, "the sleeper")
    assert caller.cmd(f"cat {CALLER}/atomic").stdout.strip() == "slept ok"
    caller.nta.unload(bounce=caller.nics)
    caller.nta.load(loaded.module, loaded.params, bounce=caller.nics)


def sink_run(env: LabEnv, nic: GuestNic, payload: int) -> tuple[int, int, int]:
    """SINK_SOCKETS unread sockets, SINK_DATAGRAMS datagrams of ``payload`` bytes each sent
    to every one: (datagrams they held, bytes they were charged, chunks in use then)."""
    a = env.addrs(nic)
    ready = env.outdir / f"ready-sink-{payload}"
    sink = env.bkg(f"sink-{payload}", "lab.guestside.udpsink", a.guest_ip, SINK_PORT,
                   SINK_SOCKETS, ready, ready=ready)  # fmt: skip
    batch = [
        traffic.udp_request(a, SINK_PORT + i % SINK_SOCKETS, 40000, b"x" * payload)
        for i in range(SINK_SOCKETS * SINK_DATAGRAMS)
    ]
    rx0 = env.rx(nic)
    env.inject(nic, batch)
    env.nic_took(nic, rx0, len(batch))
    held = env.nta.stats()
    sink.signal("TERM")
    report = sink.result(SinkReport.from_json)
    queued = [SINK_DATAGRAMS - s.drops for s in report.sockets]
    for s, q in zip(report.sockets, queued, strict=True):
        assert q > 0 and s.drops > 0, f"rcvbuf {s.rcvbuf} held {q} of {SINK_DATAGRAMS}: {s}"
    return sum(queued), sum(s.rmem_alloc for s in report.sockets), held.in_use


@pytest.mark.lab
def test_unread_sockets_are_charged_what_they_pin(nta: LabEnv, figure: Figure) -> None:
    """UDP sockets that never read, receiving at rate: each datagram held pins a chunk,
    and its socket is charged what the skb reports, so a socket holds no more chunks
    than its rcvbuf pays for. Small datagrams (e1000's copybreak: an skb NTA builds) are
    charged the whole page; larger ones come on e1000's frag path, where the driver
    builds the skb over the chunk for the 2 KiB buffer it asked for, and are charged
    that (measured, stated in kmod/README.md). A reader started afterwards still gets
    every frame from its own pool."""
    nic = nta.use(nta.nics[0])
    small, small_bytes, in_use = sink_run(nta, nic, SMALL_DATAGRAM)
    assert small_bytes >= small * PAGE, f"{small} datagrams charged {small_bytes} B"
    large, large_bytes, _ = sink_run(nta, nic, LARGE_DATAGRAM)
    # Charged at least the driver's buffer (the chunk is a page): never less than half.
    assert large_bytes >= large * PAGE // 2, f"{large} datagrams charged {large_bytes} B"
    figure(
        nic,
        f"{SINK_SOCKETS} sockets: {small} chunks of copybreak datagrams at "
        f"{small_bytes // small} B each ({small // SINK_SOCKETS} a socket), {large} of "
        f"frag-path datagrams at {large_bytes // large} B ({large // SINK_SOCKETS} a "
        f"socket); pool in_use {in_use}",
    )
    # The sockets are closed: what a reader gets now is the promise.
    a = nta.addrs(nic)
    sn = nta.pysniff(nic, "after-sink", "--bulk", "-c", 200, "--idle", IDLE_S,
                     "--first-frame-timeout", FIRST_FRAME_S)  # fmt: skip
    rx0 = nta.rx(nic)
    nta.inject(nic, traffic.frames(nta.new_run_id(), 200, a, ("udp4",)))
    took = nta.nic_took(nic, rx0, 200).packets
    got = sn.result(SniffReport.from_json)
    assert got.frames == took == 200, got
    nta.quiesced()


def softirq_ticks(env: LabEnv) -> int:
    cpu = env.cmd("head -1 /proc/stat").stdout.split()
    return int(cpu[7])  # user nice system idle iowait irq softirq


@pytest.mark.lab
def test_an_empty_pool_costs_bounded_work_per_allocation(nta: LabEnv, figure: Figure) -> None:
    """A reader that holds its whole pool and commits nothing: every allocation then finds
    the pool empty, looks at most at NTA_RECLAIM_BUDGET chunks and falls back, and the
    background passes that find nothing hold off (NTA_PASS_INTERVAL_MS). Measured:
    chunks looked at per empty allocation, passes, and softirq time per frame against a
    reader that commits."""
    nic = nta.use(nta.nics[0])
    nta.set_param("pool_kb", EMPTY_POOL_KB)
    nta.set_param("max_shared", 1 << 20)
    batch = traffic.frames(1, BURST // 10, nta.addrs(nic), ("udp4",), seed=1) * 10
    costs, per, passes = {}, 0.0, 0
    for mode, flag in (("committing", "--bulk"), ("holding", "--no-commit")):
        sn = nta.pysniff(nic, f"empty-{mode}", flag, "--idle", IDLE_S,
                         "--first-frame-timeout", FIRST_FRAME_S)  # fmt: skip
        before, ticks = nta.nta.stats(), softirq_ticks(nta)
        rx0 = nta.rx(nic)
        nta.inject(nic, batch, rate=None)
        took = nta.nic_took(nic, rx0, len(batch)).packets
        ticks = softirq_ticks(nta) - ticks
        d = nta.nta.stats() - before
        sn.stop()
        costs[mode] = ticks * 10_000 / took  # USER_HZ 100: a tick is 10 ms
        if mode == "holding":
            assert d.pool_empty > 0, d
            # An allocation looks at busy chunks only when the free list is empty,
            # and then at RECLAIM_BUDGET at most (it may free one and succeed).
            per = d.reclaim_scanned / (d.allocated + d.pool_empty)
            assert per <= RECLAIM_BUDGET, f"{per:.1f} chunks looked at per allocation"
            passes = d.reclaim_passes
    figure(
        nic,
        f"softirq {costs['committing']:.1f} us/frame committing, "
        f"{costs['holding']:.1f} holding its empty pool ({per:.1f} chunks looked at per "
        f"allocation, {passes} background passes)",
    )
    nta.quiesced()


@pytest.mark.lab
@pytest.mark.sanitizers
def test_a_failed_load_never_shows_its_device(nta: LabEnv) -> None:
    """insmod with attach= naming a missing device fails; a reader opening /dev/nta in a loop
    all along never gets in (the device is registered last)."""
    loaded = nta.nta.loaded
    assert loaded is not None
    nta.nta.unload(bounce=nta.nics)
    nta.defer(nta.nta.load, loaded.module, loaded.params, nta.nics)
    stop, log = "/tmp/ntalab-racer-stop", nta.outdir / "racer.log"
    racer = nta.bg(
        f"rm -f {stop}; while [ ! -e {stop} ]; do {nta.ntadump_program} -i lo -c 1 -q; done", log
    )
    for _ in range(10):
        failed = nta.cmd(f"insmod {shlex.quote(str(loaded.module))} attach=nosuchdev", check=False)
        assert failed.rc != 0, failed
    nta.cmd(f"touch {stop}")
    wait_until(lambda: nta.cmd(f"kill -0 {racer}", check=False).rc != 0, 30, "the racer")
    seen = log.read_text()
    assert "listening on" not in seen, seen[-1000:]
    assert "no /dev/nta" in seen, seen[-1000:]
    assert nta.cmd("dmesg | grep -c 'nta: attach: no device nosuchdev'").stdout.strip() == "10"


@pytest.mark.lab
def test_a_fault_parameter_set_to_zero_under_traffic(nta: LabEnv) -> None:
    """The 0644 fault parameters are divisors: written 0 and back while frames flow, no
    division by zero (each is read once)."""
    nic = nta.use(nta.nics[0])
    sn = nta.pysniff(nic, "fault-writes", "--bulk", "--idle", IDLE_S,
                     "--first-frame-timeout", FIRST_FRAME_S)  # fmt: skip
    batch = traffic.frames(2, 300, nta.addrs(nic), ("udp4",), seed=2)
    with traffic.sustained(nic.host, batch, None):
        loop = " ".join(
            f"echo {v} > {PARAMS}/{p};"
            for p in ("fault_drop_record_every", "fault_leak_every")
            for v in (3, 0)
        )
        nta.cmd(f"for i in $(seq 200); do {loop} done", timeout=120)
    sn.stop()
    assert nta.nta.param("fault_drop_record_every") == 0
    nta.quiesced()


def marked(env: LabEnv, nic: GuestNic, marker: bytes, count: int) -> list[bytes]:
    a = env.addrs(nic)
    return [traffic.udp_request(a, 9, 40000 + i, marker * 8) for i in range(count)]


@pytest.mark.lab
def test_a_reader_sees_its_own_devices_only(nta: LabEnv, figure: Figure) -> None:
    """Two readers on two devices: a marker received only on one is nowhere in the other's
    mapping; a reader gets no counters of a device it did not attach; kernel addresses
    appear in a pool only inside skb_shared_info (what the README's isolation model
    says a reader can see). Who may attach: not a user who cannot open /dev/nta, not
    root without CAP_NET_RAW, not a device of another network namespace."""
    first, second = nta.nics[0], nta.nics[1]
    marker = os.urandom(16)
    scans = {}
    for nic, mark in ((first, marker), (second, os.urandom(16))):
        nta.use(nic)
        ready = nta.outdir / f"ready-scan-{nic.name}"
        other = second if nic is first else first
        scans[nic.name] = nta.bkg(
            f"scan-{nic.name}", "lab.guestside.poolscan", nic.iface, mark.hex(), 100,
            other.iface, ready, ready=ready,
        )  # fmt: skip
        nta.net.bounce([nic])
    for nic, mark in ((first, marker), (second, os.urandom(16))):
        nta.inject(nic, marked(nta, nic, mark, 100))
    got = {name: p.result(ScanReport.from_json) for name, p in scans.items()}
    mine, theirs = got[first.name], got[second.name]
    assert mine.marker_hits >= 100 and theirs.marker_hits == 0, got
    assert mine.other_dev_stats_refused and theirs.other_dev_stats_refused, got
    for r in got.values():
        assert r.kernel_words_elsewhere == 0, got

    dump = f"{nta.ntadump_program} -i {first.iface} -c 1 -q"
    nobody = nta.cmd(f"setpriv --reuid=65534 --regid=65534 --clear-groups {dump}", check=False)
    assert nobody.rc != 0 and "Permission denied" in nobody.stderr, nobody
    no_raw = nta.cmd(f"setpriv --inh-caps=-net_raw --bounding-set=-net_raw {dump}", check=False)
    assert no_raw.rc != 0 and "Operation not permitted" in no_raw.stderr, no_raw
    nta.cmd("ip netns add nta-other")
    nta.defer(nta.cmd, "ip netns del nta-other")
    # A new namespace gets its own fallback tunnels (tunl0, gre0, ...) once an earlier
    # scenario loaded their modules, numbered from 2 like ours: name an index that only
    # our namespace has, or the reader would attach to a tunnel and wait for frames.
    links = "ip {} -o link | cut -d: -f1"
    ours = set(nta.cmd(links.format("")).stdout.split())
    ours -= set(nta.cmd(links.format("-n nta-other")).stdout.split())
    index = nta.cmd(f"cat /sys/class/net/{first.iface}/ifindex").stdout.strip()
    assert ours, "every interface index of ours also exists in the new namespace"
    if index not in ours:
        index = min(ours, key=int)
    elsewhere = nta.cmd(
        f"ip netns exec nta-other timeout 30 {nta.ntadump_program} -i {index} -c 1 -q",
        check=False,
    )
    assert elsewhere.rc != 0 and "No such device" in elsewhere.stderr, elsewhere
    words = {n: f"{r.kernel_words_shinfo}" for n, r in got.items()}
    figure(first, f"marker isolated; kernel-address words in skb_shared_info {words}")
