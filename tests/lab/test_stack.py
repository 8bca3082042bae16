"""The guest's stack uses what it receives: ping and a UDP echo service answer the host."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from lab import traffic
from lab.guestnet import GuestNic
from lab.labenv import LabEnv
from pysniff import signature

REQUESTS = 200
ECHO_PORT = 7
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


@pytest.mark.lab
def test_guest_answers_every_ping(lab_env: LabEnv, nic: GuestNic) -> None:
    a = lab_env.addrs(nic)
    data = payloads(lab_env.new_run_id())
    requests = [traffic.echo_request(a, 0x4E54, i, d) for i, d in enumerate(data)]
    rx0 = lab_env.rx(nic)
    got = traffic.converse(
        nic.host, requests, REQUESTS, traffic.icmp_reply_from(a.guest_ip), REQUEST_RATE
    )

    # Every request the NIC took is answered (see checks.nic_took).
    rx = lab_env.nic_took(nic, rx0, REQUESTS)
    replies = {Ether(f)[ICMP].seq: bytes(Ether(f)[ICMP].payload) for f in got}
    assert len(got) == rx.packets, nic.name
    assert replies == {i: data[i] for i in replies}, f"{nic.name}: echo data differs"


@pytest.mark.lab
def test_guest_udp_service_echoes_every_datagram(lab_env: LabEnv, nic: GuestNic) -> None:
    a = lab_env.addrs(nic)
    data = payloads(lab_env.new_run_id())
    ready = lab_env.outdir / f"ready-udpecho-{nic.name}"
    proc = lab_env.bkg(
        f"udpecho-{nic.name}", "lab.guestside.udpecho", a.guest_ip, ECHO_PORT, REQUESTS, ready,
        ready=ready,
    )  # fmt: skip
    requests = [traffic.udp_request(a, ECHO_PORT, 40000 + i, d) for i, d in enumerate(data)]
    rx0 = lab_env.rx(nic)
    got = traffic.converse(nic.host, requests, REQUESTS, udp_reply_from(a.guest_ip), REQUEST_RATE)

    echoed = proc.result(int, 60)
    rx = lab_env.nic_took(nic, rx0, REQUESTS)
    replies = {Ether(f)[UDP].dport - 40000: bytes(Ether(f)[UDP].payload) for f in got}
    assert len(got) == echoed == rx.packets, nic.name
    assert replies == {i: data[i] for i in replies}, f"{nic.name}: echoed data differs"
