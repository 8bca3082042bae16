"""The guest's stack uses what it receives: ping and a UDP echo service answer the host."""

from __future__ import annotations

from collections.abc import Callable

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from lab.scenario import GuestNic, LabEnv, UdpEcho, signature, traffic

REQUESTS = 200
ECHO_PORT = 7
ECHO_WAIT_S = 60
# Replies need send buffer: at full speed, with TX completions lagging under
# TCG, the guest's ICMP socket runs out of it and drops replies (OutErrors).
# That is the stack's own behaviour, so requests are paced.
REQUEST_RATE = 500.0


def payloads(run_id: int) -> list[bytes]:
    """Signed payloads from 24 to 1400 bytes."""
    return [signature.payload(run_id, i, 24 + (i * 53) % 1377) for i in range(REQUESTS)]


def udp_reply_from(ip: str) -> Callable[[bytes], bool]:
    def want(frame: bytes) -> bool:
        p = Ether(frame)
        return UDP in p and p[UDP].sport == ECHO_PORT and p[IP].src == ip

    return want


def test_guest_answers_every_ping(lab_env: LabEnv, nic: GuestNic) -> None:
    a = lab_env.addrs(nic)
    data = payloads(lab_env.new_run_id())
    requests = [traffic.echo_request(a, 0x4E54, i, d) for i, d in enumerate(data)]
    rx0 = lab_env.rx(nic)
    got = lab_env.converse(
        nic, requests, REQUESTS, traffic.icmp_reply_from(a.guest_ip), REQUEST_RATE
    )

    # Every request the NIC took is answered (see checks.nic_took).
    rx = lab_env.settled_rx(nic, rx0, REQUESTS)
    replies = {Ether(f)[ICMP].seq: bytes(Ether(f)[ICMP].payload) for f in got}
    assert len(got) == rx.packets, nic.name
    assert replies == {i: data[i] for i in replies}, f"{nic.name}: echo data differs"


def test_guest_udp_service_echoes_every_datagram(lab_env: LabEnv, nic: GuestNic) -> None:
    a = lab_env.addrs(nic)
    data = payloads(lab_env.new_run_id())
    echo = UdpEcho(a.guest_ip, ECHO_PORT, REQUESTS)
    proc = lab_env.bkg(f"udpecho-{nic.name}", echo, ready=True)
    requests = [traffic.udp_request(a, ECHO_PORT, 40000 + i, d) for i, d in enumerate(data)]
    rx0 = lab_env.rx(nic)
    got = lab_env.converse(nic, requests, REQUESTS, udp_reply_from(a.guest_ip), REQUEST_RATE)

    echoed = proc.result(int, ECHO_WAIT_S)
    rx = lab_env.settled_rx(nic, rx0, REQUESTS)
    replies = {Ether(f)[UDP].dport - 40000: bytes(Ether(f)[UDP].payload) for f in got}
    assert len(got) == echoed == rx.packets, nic.name
    assert replies == {i: data[i] for i in replies}, f"{nic.name}: echoed data differs"
