"""Frame building, signatures, pcap round trip, and injection into a unix socket."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

from lab import LabError, nics, traffic
from lab.nics import HostEnd, NicPlan, variant
from lab.wait import wait_until
from pysniff import signature

ADDRS = traffic.Addresses(guest_mac="52:54:00:4e:00:00")


@pytest.mark.parametrize("kind", traffic.KINDS)
@pytest.mark.parametrize("size", [60, 61, 333, 1514])
def test_each_kind_has_the_size_and_a_valid_signature(kind: str, size: int) -> None:
    frame = traffic.build_frame(kind, 0xC0FFEE, 41, size, ADDRS)
    smallest = len(traffic._headers(kind, ADDRS)) + signature.HEADER_LEN
    assert len(frame) == max(size, smallest)
    assert signature.find(frame) == signature.Signature(0xC0FFEE, 41, True)


def test_kinds_have_their_headers() -> None:
    vlan = Ether(traffic.build_frame("vlan", 1, 0, 100, ADDRS))
    assert vlan[Dot1Q].vlan == 77
    arp = Ether(traffic.build_frame("arp", 1, 0, 100, ADDRS))
    assert arp[ARP].op == 1 and arp.dst == "ff:ff:ff:ff:ff:ff"
    assert Ether(traffic.build_frame("othermac", 1, 0, 100, ADDRS)).dst == traffic.OTHER_MAC
    assert Ether(traffic.build_frame("mcast", 1, 0, 100, ADDRS)).dst.startswith("01:00:5e")


def test_size_out_of_range_refused() -> None:
    with pytest.raises(LabError, match=r"outside 60\.\.1514"):
        traffic.build_frame("udp4", 1, 0, 1515, ADDRS)
    with pytest.raises(LabError, match="unknown frame kind 'smtp'"):
        traffic.build_frame("smtp", 1, 0, 100, ADDRS)


def test_frames_deterministic_per_seed_and_sequenced() -> None:
    a = traffic.frames(7, 50, ADDRS, traffic.KINDS, seed=3)
    assert a == traffic.frames(7, 50, ADDRS, traffic.KINDS, seed=3)
    assert [signature.find(f).seq for f in a] == list(range(50))  # type: ignore[union-attr]
    assert all(len(f) >= 60 for f in a)
    assert [len(f) for f in traffic.frames(7, 4, ADDRS, sizes=[100, 200])] == [100, 200, 100, 200]


def test_corruption_is_detected() -> None:
    frame = bytearray(traffic.build_frame("udp4", 5, 9, 400, ADDRS))
    frame[-1] ^= 0xFF
    assert signature.find(frame) == signature.Signature(5, 9, False)
    truncated = traffic.build_frame("udp4", 5, 9, 400, ADDRS)[:200]
    assert signature.find(truncated) == signature.Signature(5, 9, False)


def test_pcap_round_trip_is_byte_exact(tmp_path: Path) -> None:
    batch = traffic.frames(1, 30, ADDRS, traffic.KINDS, seed=1)
    traffic.write_pcap(tmp_path / "x.pcap", batch)
    assert traffic.read_pcap(tmp_path / "x.pcap") == batch


def test_inject_delivers_every_frame_in_order(tmp_path: Path) -> None:
    guest = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    guest.bind(str(tmp_path / "g.sock"))
    plan = NicPlan(0, variant("e1000"), ADDRS.guest_mac, tmp_path / "g.sock", tmp_path / "h.sock")
    end = HostEnd(plan)
    batch = traffic.frames(2, 100, ADDRS, seed=2)
    got: list[bytes] = []
    # A unix datagram queue holds only a few frames: the fake guest reads as they come.
    reader = threading.Thread(target=lambda: got.extend(guest.recv(2048) for _ in batch))
    reader.start()
    try:
        result = traffic.inject(end, batch, rate=5000)
        reader.join(timeout=30)
    finally:
        end.close()
        guest.close()
    assert result.sent == 100
    assert got == batch


def test_sustained_sends_whole_batches_until_the_block_ends(tmp_path: Path) -> None:
    guest = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    guest.bind(str(tmp_path / "g.sock"))
    guest.settimeout(5)
    plan = NicPlan(0, variant("e1000"), ADDRS.guest_mac, tmp_path / "g.sock", tmp_path / "h.sock")
    end = HostEnd(plan)
    batch = traffic.frames(3, 10, ADDRS, seed=3)
    got: list[bytes] = []
    try:
        with traffic.sustained(end, batch, 2000) as sending:
            while len(got) < 3 * len(batch):
                got.append(guest.recv(2048))
        # Joined on leaving: nothing more is sent, and every frame sent was the batch's.
        guest.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(guest.recv(2048))
    finally:
        end.close()
        guest.close()
    assert sending.sent == len(got) and sending.sent % len(batch) == 0
    assert got == batch * (len(got) // len(batch))


def test_inject_without_qemu_is_a_clear_error(tmp_path: Path) -> None:
    plan = NicPlan(0, variant("e1000"), ADDRS.guest_mac, tmp_path / "g.sock", tmp_path / "h.sock")
    end = HostEnd(plan)
    try:
        with pytest.raises(LabError, match="QEMU is not listening"):
            traffic.inject(end, [b"x" * 60])
    finally:
        end.close()


def test_a_guest_that_stops_reading_is_a_clear_error_however_replies_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sends wait out their own timeout even while another thread polls for replies."""
    monkeypatch.setattr(nics, "SEND_TIMEOUT_S", 1)
    guest = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    guest.bind(str(tmp_path / "g.sock"))  # and never read: QEMU with a full ring
    plan = NicPlan(0, variant("e1000"), ADDRS.guest_mac, tmp_path / "g.sock", tmp_path / "h.sock")
    end = HostEnd(plan)
    done = threading.Event()

    def poll_replies() -> None:
        while not done.is_set():
            assert end.recv(0.05) is None

    poller = threading.Thread(target=poll_replies)
    poller.start()
    try:
        with pytest.raises(LabError, match="the guest took no frame for 1 s"):
            traffic.inject(end, [b"x" * 60] * 100_000)
    finally:
        done.set()
        poller.join()
        end.close()
        guest.close()


def test_what_the_guest_sends_is_read_even_when_no_test_asks(tmp_path: Path) -> None:
    """QEMU retries a send to a full host socket at once, for ever: the host end must
    empty it all the time, not only while a test waits for replies."""
    guest = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    guest.bind(str(tmp_path / "g.sock"))
    plan = NicPlan(0, variant("e1000"), ADDRS.guest_mac, tmp_path / "g.sock", tmp_path / "h.sock")
    end = HostEnd(plan)
    frames = [i.to_bytes(4, "big") * 15 for i in range(3000)]
    refused = 0
    try:
        deadline = time.monotonic() + 30
        for frame in frames:
            while True:
                try:
                    guest.sendto(frame, socket.MSG_DONTWAIT, str(tmp_path / "h.sock"))
                    break
                except BlockingIOError:
                    refused += 1  # the queue is full for a moment: the reader catches up
                    assert time.monotonic() < deadline, "nobody empties the host end"
                    time.sleep(0.001)
        got = [end.recv(5) for _ in frames[:10]]
        assert got == frames[:10]
        rest = [0]

        def all_read() -> bool:
            rest[0] += end.drain()
            return rest[0] == len(frames) - 10

        wait_until(all_read, 10, "the rest of the guest's frames")
    finally:
        end.close()
        guest.close()
