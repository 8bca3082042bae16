"""Both directions and kernel-side filters, against tcpdump with the same options.

The lab's host end sends the wide mix (lab.traffic.wide_mix) and the guest's
stack answers part of it (ARP, ping, SYN to a listener and to a closed port,
ICMP errors): a conversation in both directions on one NIC. An NTA reader
and tcpdump capture it at once with the same -Q (and the same filter
expression), and their captures must be byte-identical, in order: the frames
the guest sends reach NTA's tap as they reach AF_PACKET's, in the order they
are sent (dev_queue_xmit_nit()), published as copies.

Filters: the expression is compiled by libpcap (ntadump) or tcpdump -ddd
(pysniff) and runs in the module; the captures must equal tcpdump's with the
same expression, and the counters must show that a refused frame cost
nothing: every frame the device received or sent is published or filtered,
nothing missed, and every record the reader was given is a published frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from scapy.layers.l2 import Ether

from lab.scenario import (
    IDLE_S,
    BadFilter,
    BadFilterReport,
    Figure,
    GuestNic,
    LabEnv,
    SniffReport,
    TcpListen,
    checks,
    traffic,
    wait_until,
)

MIX = 300  # frames of the wide mix, at the NIC's lossless rate
ANSWER_WAIT_S = 60.0
# Each kind the issue names, on what the wide mix carries.
FILTERS = {
    "host": "host {guest_ip}",
    "port": "port 5001 or port 9",
    "icmp": "icmp",
    "udp": "udp",
    "tcp": "tcp",
    "vlan": "vlan",
    "ip-bytes": "ip[8] > 32 and ip[9] != 6",
}


@dataclass(frozen=True)
class Both:
    nta: list[bytes]
    tcpdump: list[bytes]
    answers: int  # frames the guest sent back to the host end
    report: SniffReport | None  # pysniff's, with its counters


def converse_beside_tcpdump(
    env: LabEnv, nic: GuestNic, reader: str, way: str, tag: str, expr: str | None = None
) -> Both:
    """The wide mix sent, the guest answering, while tcpdump and one NTA reader capture
    ``nic`` with -Q ``way`` (and filter ``expr``).

    Both captures must end on the same frame, so the guest says nothing once the
    conversation is over. The host end never completes a handshake: with the default
    tcp_synack_retries the listener's SYN-ACKs would come again 1, 3, 7... s after each
    SYN, some of them just before the readers stop: the NTA reader has them at once,
    tcpdump only when libpcap's ring block is handed over, at the end of its 1 s timer,
    and frames still in that block when tcpdump is stopped are never written (seen:
    ntadump two frames longer than tcpdump). With no retries the guest's last frame is
    its last answer. (tcpdump's --immediate-mode is no way out: with it, under TCG,
    tcpdump's kernel dropped 334 of 379 frames.)"""
    a = env.addrs(nic)
    env.sysctl("net.ipv4.tcp_synack_retries", 0)
    listener = env.bkg(f"listen-{tag}", TcpListen(a.guest_ip, traffic.LISTEN_PORT), ready=True)
    words = [expr] if expr else []
    dump_pcap, mine = env.outdir / f"tcpdump-{tag}.pcap", env.outdir / f"{reader}-{tag}.pcap"
    dump = env.tcpdump(nic, f"tcpdump-{tag}", "-Q", way, "-n", "-Z", "root", "-U", "-w",
                       dump_pcap, *words)  # fmt: skip
    filt = ["-f", expr] if expr else []
    if reader == "pysniff":
        sn = env.pysniff(nic, f"pysniff-{tag}", "-Q", way, "-w", mine, *filt, idle=IDLE_S)
    else:
        sn = env.ntadump([nic], f"ntadump-{tag}", "-Q", way, "-w", mine, *filt)
        env.bounce([nic])
    mix = traffic.wide_mix(a, MIX, seed=env.new_run_id(), ipv6=False)
    answers = env.converse(nic, [m.frame for m in mix], 10 * MIX, lambda _f: True,
                           timeout=ANSWER_WAIT_S, quiet=2.0)  # fmt: skip
    # tcpdump writes each frame as it gets it (-U): done once its file stops growing.
    seen = [-1]

    def settled() -> bool:
        n = len(traffic.read_pcap(dump_pcap))
        done, seen[0] = n == seen[0], n
        return done

    wait_until(settled, 30, "tcpdump's capture to settle", interval=1.0)
    report = None
    if reader == "pysniff":
        report = sn.result(SniffReport.from_json)
    else:
        sn.stop()
    dump.stop()
    listener.stop()
    return Both(traffic.read_pcap(mine), traffic.read_pcap(dump_pcap), len(answers), report)


def sent_by_guest(frames: list[bytes], nic: GuestNic) -> int:
    return sum(Ether(f).src == nic.mac for f in frames)


@pytest.mark.sanitizers
@pytest.mark.parametrize(("reader", "way"), [("pysniff", "inout"), ("ntadump", "out"),
                                             ("ntadump", "inout"), ("pysniff", "in")])  # fmt: skip
def test_directions_equal_tcpdump(
    nta_env: LabEnv, nic: GuestNic, figure: Figure, reader: str, way: str
) -> None:
    """-Q in, out, inout: the NTA reader's capture is tcpdump's, byte for byte, in order;
    the guest's answers are in it (out, inout) or not (in)."""
    env = nta_env
    got = converse_beside_tcpdump(env, nic, reader, way, f"q{way}-{reader}-{nic.name}")
    checks.same_frames(f"{nic.name}: {reader} -Q {way} against tcpdump", got.nta, got.tcpdump)
    ours = sent_by_guest(got.nta, nic)
    if way == "in":
        assert ours == 0, f"{nic.name}: {ours} frames the guest sent in a -Q in capture"
    else:
        assert ours >= got.answers > 0, f"{nic.name}: {ours} sent captured, {got.answers} seen"
    if way == "out":
        assert ours == len(got.nta), f"{nic.name}: received frames in a -Q out capture"
    if got.report is not None:
        dev = got.report.dev_stats[nic.iface]
        checks.accounted(nic.name, dev)
        assert dev.sent == ours and dev.published == len(got.nta), dev
    figure(nic, f"-Q {way}: {len(got.nta)} frames ({ours} sent) identical to tcpdump")
    env.quiesced()


# The filter runs in the tap, before a frame is admitted, on the skb the stack hands every
# tap (VLAN tags already taken out, whatever the NIC): no driver's path changes what it
# decides, so one NIC answers for all.
@pytest.mark.sanitizers
@pytest.mark.nic_variants("e1000")
@pytest.mark.parametrize("kind", FILTERS)
def test_filters_equal_tcpdump(nta_env: LabEnv, nic: GuestNic, figure: Figure, kind: str) -> None:
    """A filter expression: equal to tcpdump with the same one, and every frame it refused
    cost no chunk and no record."""
    env = nta_env
    expr = FILTERS[kind].format(guest_ip=env.addrs(nic).guest_ip)
    for reader in ("pysniff", "ntadump"):
        got = converse_beside_tcpdump(env, nic, reader, "inout", f"f{kind}-{reader}-{nic.name}",
                                      expr)  # fmt: skip
        checks.same_frames(f"{nic.name}: {reader} -f {expr!r} against tcpdump", got.nta,
                           got.tcpdump)  # fmt: skip
        assert got.nta, f"{nic.name}: {expr!r} kept nothing: the check would prove nothing"
        if got.report is None:
            continue
        dev = got.report.dev_stats[nic.iface]
        checks.accounted(nic.name, dev)
        assert dev.missed == dict.fromkeys(dev.missed, 0), dev
        assert dev.filtered > 0, f"{nic.name}: {expr!r} refused nothing: {dev}"
        assert dev.published == len(got.nta) == got.report.reader.records, (dev, got.report)
        figure(nic, f"{expr!r}: {dev.published} kept, {dev.filtered} filtered, identical")
    env.quiesced()


BAD_FILTERS = {
    "len 0": "EINVAL",
    "len over BPF_MAXINSNS": "EINVAL",
    "len 65537 (wraps sock_fprog's u16 to 1)": "EINVAL",
    "null pointer": "EINVAL",
    "unmapped pointer": "EFAULT",
    "invalid opcode": "EINVAL",
    "no return": "EINVAL",
    "jump out of the program": "EINVAL",
    "reserved set": "EINVAL",
    "direction 0": "EINVAL",
    "direction 4": "EINVAL",
    "direction reserved set": "EINVAL",
}
REFUSED_FRAMES = 50


@pytest.mark.sanitizers
@pytest.mark.nic_variants("e1000")  # the ioctl's answers: no driver is involved
def test_bad_filter_programs_are_refused(nta_env: LabEnv, nic: GuestNic, figure: Figure) -> None:
    """Malformed filters and directions, straight to the ioctl: each refused with its errno,
    nothing counted, and the good program set before them still the one that runs (every
    frame filtered, no record)."""
    env = nta_env
    request = BadFilter(nic.iface, REFUSED_FRAMES)
    proc = env.bkg("badfilter", request, ready=True, out=env.outdir / "badfilter.json")
    env.bounce([nic])
    before = env.module.stats()
    rx0 = env.rx(nic)
    run_id = env.new_run_id()
    env.send(nic, traffic.frames(run_id, REFUSED_FRAMES, env.addrs(nic)))
    rx = env.settled_rx(nic, rx0, REFUSED_FRAMES)
    got = proc.result(BadFilterReport.from_json)
    after = env.module.stats()
    assert got.answers == BAD_FILTERS, got.answers
    assert got.received == got.filtered == rx.packets and got.published == got.records == 0, got
    assert (after - before).published == 0 and (after - before).filtered == rx.packets
    figure(nic, f"{len(BAD_FILTERS)} malformed requests refused; {got.filtered} frames filtered")
    env.quiesced()
