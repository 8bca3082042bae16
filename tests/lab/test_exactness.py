"""Exact capture outside the lab's habits: tunnels the guest terminates, a bridge that
forwards into a marking qdisc, GRO on with several flows on a small pool.

Some writers in the stack change a frame's bytes in place without asking whether
anyone else holds them (skb_cloned()): tunnel decapsulation copies the outer
header's ECN mark into the inner header, and a qdisc marks CE on a frame a
bridge forwards. A reader that published such a frame in place would show what
the stack made of it, so NTA publishes a copy made in the tap (kmod/nta_capture.c).
Here the guest terminates IPIP, GRE, VXLAN and Geneve tunnels and bridges a lab
NIC to a veth whose fq_codel marks every ECN-capable frame; the host sends outer
CE over inner ECT(0), and ECT(0) frames to forward. pysniff and ntadump must each
equal tcpdump, which copies at the tap, and the wire; with NTA told to trust the
writers (fault_trust_writers=1) the same check must fail, which shows the stack
did write.

The last scenario is the one the copy path's reclaim race needed (a chunk being
filled freed under it): GRO on (merged frames published in place as chains),
tunnel frames (copied) among them, several flows taken on both CPUs (RPS), a
small pool, and the counters read in a loop (each read reclaims every pool).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from lab.scenario import (
    DEBUGFS,
    IDLE_S,
    Execute,
    Figure,
    GuestNic,
    LabEnv,
    RxCounts,
    checks,
    traffic,
    wait_until,
)

PER_TUNNEL = 60
BRIDGED = 100
READERS = ("pysniff", "ntadump")
SMALL_POOL_KB = 2048
SMALL_SHARE = 96
FLOWS, SEGMENTS, ROUNDS = 8, 150, 3
EXIT_WAIT_S = 60  # for a reader with every frame to exit
TCPDUMP_WAIT_S = 30  # for tcpdump's file to have every frame (libpcap's 1 s block timeout)
MARK_WAIT_S = 30  # for the shaped qdisc to let the last frames go


def tunnels_up(env: LabEnv, nic: GuestNic) -> None:
    """The guest's end of each of traffic.TUNNELS, to the host over ``nic``, until the
    test ends (the kernel loads the tunnel drivers on demand)."""
    a = env.addrs(nic)
    specs = {
        "ipip": f"type ipip local {a.guest_ip} remote {a.host_ip}",
        "gre": f"type gre local {a.guest_ip} remote {a.host_ip}",
        "vxlan": f"type vxlan id {traffic.VXLAN_VNI} dstport {traffic.VXLAN_PORT} "
        f"local {a.guest_ip} remote {a.host_ip}",
        "geneve": f"type geneve id {traffic.GENEVE_VNI} remote {a.host_ip}",
    }
    for kind in traffic.TUNNELS:
        name = env.add_link(f"nta{kind[:3]}{nic.index}", specs[kind])
        net = traffic.tunnel_inner_net(nic.index, kind)
        # On a link of the test's own, gone with it.
        env.act(f"ip addr add {net}.1/24 dev {name} && ip link set {name} up", undo=None)


def bridged_up(env: LabEnv, nic: GuestNic) -> str:
    """``nic`` a port of a bridge whose other port is a veth marking CE on every
    ECN-capable frame it sends, until the test ends; the MAC to send to for the bridge
    to forward there. The marking is fq_codel's CE threshold (0: every frame that
    waited at all), under a 1 Mbit/s shaper: an idle fq_codel is bypassed (its frames
    never wait), a shaped one is not."""
    br, v0, v1 = f"ntabr{nic.index}", f"ntav{nic.index}a", f"ntav{nic.index}b"
    env.add_link(br, "type bridge")
    env.add_link(v0, f"type veth peer name {v1}")
    # On links of the test's own, gone with them.
    env.act(f"ip link set {br} up && ip link set {v0} master {br} up && ip link set {v1} up "
            f"&& tc qdisc add dev {v0} root handle 1: tbf rate 1mbit burst 1600 latency 4s "
            f"&& tc qdisc add dev {v0} parent 1: handle 10: fq_codel ce_threshold 0us",
            undo=None)  # fmt: skip
    env.enslave(nic, br)
    return env.cmd(f"cat /sys/class/net/{v1}/address").stdout.strip()


@dataclass(frozen=True)
class Shaper:
    """The bridge's veth qdiscs, as ``tc -s`` counts them: frames the shaper sent,
    frames still queued, frames dropped, and fq_codel's CE marks (shown once non-zero)."""

    sent: int
    queued: int
    dropped: int
    ce_marks: int


def shaper(env: LabEnv, nic: GuestNic) -> Shaper:
    words = env.cmd(f"tc -s qdisc show dev ntav{nic.index}a").stdout.replace(",", "").split()
    # The root (tbf) comes first: "Sent B bytes P pkt (dropped D ..." and "backlog Bb Pp".
    sent, dropped = words.index("Sent"), words.index("(dropped")
    queued = words[words.index("backlog") + 2]
    marks = int(words[words.index("ce_mark") + 1]) if "ce_mark" in words else 0
    return Shaper(int(words[sent + 3]), int(queued.rstrip("p")), int(words[dropped + 1]), marks)


def beside_tcpdump(
    env: LabEnv, nic: GuestNic, frames: list[bytes], tag: str, reader: str
) -> tuple[list[bytes], list[bytes], RxCounts]:
    """``frames`` sent while tcpdump and one NTA reader capture ``nic``: what the reader
    wrote, what tcpdump wrote, what the NIC took."""
    dump_pcap, mine = env.outdir / f"tcpdump-{tag}.pcap", env.outdir / f"{reader}-{tag}.pcap"
    # Each frame flushed to the file as tcpdump gets it (-U), so that the file says when
    # tcpdump has them all: at most libpcap's block timeout (1 s) after the last.
    dump = env.tcpdump(nic, f"tcpdump-{tag}", "-Q", "in", "-n", "-Z", "root", "-U", "-w", dump_pcap)
    if reader == "pysniff":
        sn = env.pysniff(nic, f"pysniff-{tag}", "-w", mine, "-c", len(frames), idle=IDLE_S)
    else:
        sn = env.ntadump([nic], f"ntadump-{tag}", "-w", mine, "-c", len(frames))
        env.bounce([nic])
    rx0 = env.rx(nic)
    env.send(nic, frames)
    rx = env.settled_rx(nic, rx0, len(frames))
    if rx.missed:
        sn.stop()  # it waits for the frames the NIC missed
    else:
        assert sn.wait(EXIT_WAIT_S) == 0, sn.log_tail()
    wait_until(lambda: len(traffic.read_pcap(dump_pcap)) >= rx.packets, TCPDUMP_WAIT_S,
               f"tcpdump to write the {rx.packets} frames {nic.name} took")  # fmt: skip
    dump.stop()
    return traffic.read_pcap(mine), traffic.read_pcap(dump_pcap), rx


def inner_ce(frames: list[bytes]) -> int:
    """How many frames carry an inner IPv4 header marked CE (decapsulation's write)."""
    count = 0
    for f in frames:
        ips = [layer for layer in Ether(f).iterpayloads() if isinstance(layer, IP)]
        count += len(ips) > 1 and ips[-1].tos & 0x03 == traffic.ECN_CE
    return count


def ecn_of(frames: list[bytes]) -> Counter[int]:
    return Counter(Ether(f)[IP].tos & 0x03 for f in frames if IP in Ether(f))


def flows(env: LabEnv, nic: GuestNic) -> list[bytes]:
    """FLOWS TCP flows of SEGMENTS segments each, for GRO to merge."""
    return traffic.gro_flow(env.addrs(nic), SEGMENTS, env.new_run_id(), flows=FLOWS)


def tunnel_mix(env: LabEnv, nic: GuestNic) -> list[bytes]:
    a, seed = env.addrs(nic), env.new_run_id()
    per = [traffic.tunneled(a, k, nic.index, PER_TUNNEL, seed + i)
           for i, k in enumerate(traffic.TUNNELS)]  # fmt: skip
    return [f for group in zip(*per, strict=True) for f in group]


def exact_against_tcpdump(
    env: LabEnv, nic: GuestNic, frames: list[bytes], tag: str
) -> dict[str, RxCounts]:
    """Each NTA reader in turn beside tcpdump: equal to it and to the wire."""
    took = {}
    for reader in READERS:
        got, dumped, rx = beside_tcpdump(env, nic, frames, f"{tag}-{reader}", reader)
        checks.same_frames(f"{nic.name}: {reader} against tcpdump", got, dumped)
        checks.subsequence(f"{nic.name}: {reader} against the wire", got, frames, rx.missed)
        took[reader] = rx
    return took


@pytest.mark.sanitizers
def test_tunnels_the_guest_terminates_are_captured_as_sent(
    nta_env: LabEnv, nic: GuestNic, figure: Figure
) -> None:
    """IPIP, GRE, VXLAN and Geneve to tunnels the guest terminates, outer CE over inner
    ECT(0): decapsulation marks the inner header CE in place, and both NTA readers still
    capture every frame as tcpdump and the wire have it."""
    env = nta_env
    tunnels_up(env, nic)
    frames = tunnel_mix(env, nic)
    before = env.module.stats()
    took = exact_against_tcpdump(env, nic, frames, f"tunnels-{nic.name}")
    d = env.module.stats() - before
    got = sum(rx.packets for rx in took.values())
    assert d.copied == got, f"{nic.name}: {d.copied} copied of {got} tunneled frames"
    figure(nic, f"{len(frames)} tunneled x {len(READERS)} readers identical, all copied")
    env.quiesced()


@pytest.mark.sanitizers
def test_frames_a_bridge_forwards_into_a_marking_qdisc_are_captured_as_sent(
    nta_env: LabEnv, nic: GuestNic, figure: Figure
) -> None:
    """ECT(0) frames the bridge forwards to a veth whose qdisc marks CE in place (the
    bridge does not copy first): both NTA readers capture them as sent."""
    env = nta_env
    dst = bridged_up(env, nic)
    frames = traffic.ecn_capable(env.addrs(nic), dst, BRIDGED, env.new_run_id())
    before = shaper(env, nic)
    took = exact_against_tcpdump(env, nic, frames, f"bridged-{nic.name}")
    received = sum(rx.packets for rx in took.values())
    # Marked as the shaper lets them go, the last ones seconds after they came. A frame
    # that found the queue empty did not wait and is not marked (codel's clock counts
    # microseconds): most are, and one is enough to make the capture's check mean
    # something; fault_trust_writers shows it fails.
    wait_until(lambda: shaper(env, nic).queued == 0, 60, "the shaper to send what it holds")
    after = shaper(env, nic)
    sent, marked = after.sent - before.sent, after.ce_marks - before.ce_marks
    assert after.dropped == before.dropped and 0 < marked <= sent, (before, after)
    figure(
        nic, f"{received} received, the shaper sent {sent}, {marked} marked CE; captured as sent"
    )
    env.quiesced()


def test_the_check_fails_when_nta_trusts_those_writers(nta_env: LabEnv, figure: Figure) -> None:
    """fault_trust_writers=1 publishes those frames in place, under the usual hold: the
    tunnels' decapsulation and the bridge's qdisc then show in what pysniff reads, and
    the comparison with tcpdump fails."""
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    env.module.set_param("fault_trust_writers", 1)
    tunnels_up(env, nic)
    frames = tunnel_mix(env, nic)
    got, dumped, rx = beside_tcpdump(env, nic, frames, "trusting-tunnels", "pysniff")
    assert rx.missed == 0, rx
    with pytest.raises(AssertionError, match="against tcpdump"):
        checks.same_frames(f"{nic.name}: pysniff against tcpdump", got, dumped)
    rewritten, tunneled = inner_ce(got), len(got)
    assert inner_ce(dumped) == 0 and rewritten > 0, (inner_ce(dumped), rewritten)

    dst = bridged_up(env, nic)
    frames = traffic.ecn_capable(env.addrs(nic), dst, BRIDGED, env.new_run_id())
    got, dumped, rx = beside_tcpdump(env, nic, frames, "trusting-bridge", "pysniff")
    assert ecn_of(dumped) == {traffic.ECN_ECT0: len(dumped)}, ecn_of(dumped)
    assert ecn_of(got)[traffic.ECN_CE] > 0, ecn_of(got)
    figure(
        nic,
        f"rewritten in place: {rewritten}/{tunneled} tunneled inner CE, "
        f"{ecn_of(got)[traffic.ECN_CE]}/{len(got)} bridged CE",
    )


@pytest.mark.sanitizers
def test_merged_frames_on_a_small_pool_while_every_pool_is_reclaimed(
    nta_env: LabEnv, figure: Figure
) -> None:
    """GRO on both e1000 NICs, FLOWS flows each and tunneled frames (copied, filled with
    the pool's lock dropped), frames taken on both CPUs (RPS), a reader with SMALL_POOL_KB
    pools at max_shared SMALL_SHARE, and the debugfs counters read in a loop all along
    (each read reclaims every pool): after every part of every round the counters
    balance, and at the end every chunk is back."""
    env = nta_env
    nics = env.needs_nics("e1000", "e1000-cb0")
    env.with_driver_settings(nics[1])  # copybreak 0
    env.module.set_param("pool_kb", SMALL_POOL_KB)
    env.module.set_param("max_shared", SMALL_SHARE)
    for n in nics:
        env.set_gro(n, True)
        env.set_rps_cpus(n, "3")
    reading = f"while :; do cat {DEBUGFS}/stats > /dev/null; done"
    env.bkg("stats-reader", Execute(cmd=("sh", "-c", reading)))
    # One reader on both NICs (env.pysniff takes one).
    sn = env.pysniff(nics[0], "small-pool", "-i", nics[1].iface, "--bulk", refill=False)
    env.bounce(nics)
    before = env.module.stats()
    for _rnd in range(ROUNDS):
        # Each device has a pool of its own, so more frames are served than the reader's
        # SMALL_SHARE takes at once: the tunneled frames (copied) and the flows (merged in
        # place) are sent apart, each to a reader that holds nothing, or the later kind
        # meets a reader at its limit (seen: 0 copied, and with the order turned, 0 merged).
        for part in (tunnel_mix, flows):
            batches = {n: part(env, n) for n in nics}
            senders = [threading.Thread(target=env.send, args=(n, b)) for n, b in batches.items()]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            s = env.module.wait(
                "the part's records committed",
                lambda s: (
                    s.published == s.committed + s.returned_on_close + s.outstanding
                    and s.outstanding == 0
                ),
            )
            checks.balanced(s)
            assert s.in_use < 1 << 32, f"in_use wrapped: {s}"
    sn.stop()
    d = env.module.stats() - before
    assert d.chained > 0 and d.copied > 0, d
    figure(
        nics[0],
        f"{ROUNDS} rounds: {d.chained} merged in place, {d.copied} copied, "
        f"{d.not_shared} not shared, {d.reclaim_passes} passes; balanced",
    )
    env.quiesced()
