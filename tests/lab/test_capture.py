"""Exact capture: NTA's reader gets the bytes that came off the wire, as tcpdump does.

pysniff (through NTA) and tcpdump (through AF_PACKET) capture the same
traffic at the same time in the same guest, and their frame lists must be
byte-identical, in order, and equal to what the NIC took. The traffic is a
wide mix built for this (lab.traffic.wide_mix), not the lab's signed
frames: stacked and priority tags, IP options and IPv6 extension headers
the stack processes, fragments it reassembles, SYNs, ICMP, ARP, LLC, odd
EtherTypes, bad checksums. Several of them are rewritten in place by the
stack after NTA published them (an inner VLAN tag stripped, record-route
and timestamp options filled in, a reassembled datagram's first fragment):
the captures stay equal only because a published chunk holds its data
shared (see kmod/nta_dev.c), which the last scenario shows by turning that
off. Where the stack answers (ARP, ping, SYN), every answer must come back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from scapy.layers.l2 import Ether

from lab.scenario import IDLE_S, Figure, GuestNic, LabEnv, SniffReport, TcpListen, checks, traffic

PACED = 600  # frames of the mix, at the NIC's lossless rate
AT_RATE = 2000  # frames of the mix, as fast as an e1000 takes them
GRO_SEGMENTS = 400
ANSWER_WAIT_S = 120.0


@dataclass(frozen=True)
class Captured:
    pysniff: list[bytes]
    tcpdump: list[bytes]
    tcpdump_dropped: int
    report: SniffReport
    answers: Counter[str]


def capture_both(env: LabEnv, nic: GuestNic, frames: list[bytes], tag: str) -> Captured:
    """The frames sent while tcpdump and pysniff both capture ``nic``; what each wrote."""
    a = env.addrs(nic)
    if env.features.ipv6:  # IPv6's receive paths too, for this test only
        env.sysctl(f"net.ipv6.conf.{nic.iface}.disable_ipv6", 0)
        address = f"{a.guest_ip6}/64 dev {nic.iface}"
        env.act(f"ip -6 addr replace {address} nodad", undo=f"ip -6 addr del {address}")
    env.bkg(f"listen-{tag}", TcpListen(a.guest_ip, traffic.LISTEN_PORT), ready=True)
    dump_pcap, sniff_pcap = env.outdir / f"tcpdump-{tag}.pcap", env.outdir / f"pysniff-{tag}.pcap"
    dump = env.tcpdump(nic, f"tcpdump-{tag}", "-Q", "in", "-n", "-Z", "root", "-w", dump_pcap)
    sn = env.pysniff(nic, f"pysniff-{tag}", "-w", sniff_pcap, idle=IDLE_S)
    matchers = traffic.answered_by(a)
    answers: Counter[str] = Counter()

    def want(frame: bytes) -> bool:
        p = Ether(frame)
        for kind, match in matchers.items():
            if match(p):
                answers[kind] += 1
                return True
        return False

    # Answers stop coming 2 s after the last: paid beside pysniff's idle wait, not after it.
    env.converse(nic, frames, len(frames), want, timeout=ANSWER_WAIT_S, quiet=2.0)
    report = sn.result(SniffReport.from_json)
    dump.stop()
    return Captured(
        pysniff=traffic.read_pcap(sniff_pcap),
        tcpdump=traffic.read_pcap(dump_pcap),
        tcpdump_dropped=checks.tcpdump_dropped(dump.log.read_text()),
        report=report,
        answers=answers,
    )


def differing_kinds(mix: list[traffic.Mixed], got: list[bytes]) -> Counter[str]:
    """The kinds of the frames a capture holds otherwise than they were sent (same count)."""
    return Counter(m.kind for m, g in zip(mix, got, strict=True) if m.frame != g)


def mixed(env: LabEnv, nic: GuestNic, count: int) -> list[traffic.Mixed]:
    return traffic.wide_mix(env.addrs(nic), count, seed=env.new_run_id(), ipv6=env.features.ipv6)


def exact(env: LabEnv, nic: GuestNic, count: int, tag: str) -> str:
    """The whole check on one NIC; its figure."""
    mix = mixed(env, nic, count)
    sent = [m.frame for m in mix]
    rx0 = env.rx(nic)
    got = capture_both(env, nic, sent, tag)
    rx = env.settled_rx(nic, rx0, len(sent))
    dev = got.report.dev_stats[nic.iface]
    checks.accounted(nic.name, dev)
    checks.same_frames(f"{nic.name}: pysniff against tcpdump", got.pysniff, got.tcpdump)
    if got.tcpdump_dropped == 0:
        assert dev.missed == dict.fromkeys(dev.missed, 0), f"{nic.name}: pysniff missed {dev}"
    if rx.missed == 0:
        kinds = differing_kinds(mix, got.pysniff) if len(got.pysniff) == len(mix) else None
        assert got.pysniff == sent, f"{nic.name}: the captures differ from the wire: {kinds}"
        asked = Counter(m.kind for m in mix)
        for kind, n in got.answers.items():
            assert n >= asked[kind], f"{nic.name}: {asked[kind]} {kind} sent, {n} answered"
        assert set(got.answers) == set(traffic.answered_by(env.addrs(nic))), got.answers
    else:  # rtl8139 without flow control: the NIC says how many it missed, not which
        assert len(got.pysniff) == len(sent) - rx.missed, (len(got.pysniff), rx)
    return f"{len(got.pysniff)}/{len(sent)} identical, tcpdump dropped {got.tcpdump_dropped}" + (
        f", NIC missed {rx.missed}" if rx.missed else ""
    )


@pytest.mark.sanitizers
def test_pysniff_and_tcpdump_capture_the_same_bytes(
    nta_env: LabEnv, nic: GuestNic, figure: Figure
) -> None:
    """The wide mix at the NIC's lossless rate; on e1000, as fast as it takes frames."""
    count = PACED if nic.rate else AT_RATE
    figure(nic, exact(nta_env, nic, count, f"exact-{nic.name}"))


def test_gro_merged_frames_are_captured_as_tcpdump_sees_them(
    nta_env: LabEnv, nic: GuestNic, figure: Figure
) -> None:
    """With GRO on (the kernel's default), frames of one flow merged: pysniff gets each
    merged frame as tcpdump does, a chain of CONTD records, in place where its pieces lie
    in the reader's chunks (the e1000 frag path's segments do), copied where not."""
    env = nta_env
    env.set_gro(nic, True)
    flow = traffic.gro_flow(env.addrs(nic), GRO_SEGMENTS, seed=env.new_run_id())
    rx0 = env.rx(nic)
    got = capture_both(env, nic, flow, f"gro-{nic.name}")
    rx = env.settled_rx(nic, rx0, len(flow))
    checks.same_frames(f"{nic.name}: pysniff against tcpdump, GRO on", got.pysniff, got.tcpdump)
    d = got.report.stats_after - got.report.stats_before
    merged = len(got.pysniff)
    assert sum(len(f) - 14 - 20 - 20 for f in got.pysniff) == 1448 * (len(flow) - rx.missed)
    if nic.rate is None:  # back-pressure delivers bursts: GRO merges them, in NTA chunks
        assert d.chained > 0 and merged < len(flow), (d.chained, d.copied, merged)
    figure(nic, f"{len(flow)} segments as {merged} frames, {d.chained} in place, {d.copied} copied")


def test_the_capture_check_fails_without_write_protection(nta_env: LabEnv, figure: Figure) -> None:
    """fault_no_protect=1 publishes frames without holding their data: the stack's writes
    then show in what pysniff reads, and the comparison with tcpdump fails. The kinds
    that differ are the stack's writers on this kernel (kmod/README.md lists them)."""
    env = nta_env
    nic = env.with_driver_settings(env.nics[0])
    env.module.set_param("fault_no_protect", 1)
    mix = mixed(env, nic, PACED)
    got = capture_both(env, nic, [m.frame for m in mix], "unprotected")
    with pytest.raises(AssertionError, match="pysniff against tcpdump"):
        checks.same_frames(f"{nic.name}: pysniff against tcpdump", got.pysniff, got.tcpdump)
    kinds = differing_kinds(mix, got.pysniff)
    assert kinds, "no frame differs, yet the captures do"
    figure(nic, "rewritten: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
