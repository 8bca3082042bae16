"""pysniff's pcap and pcapng writers: read back by scapy and by tcpdump, byte for byte."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.utils import RawPcapNgReader, RawPcapReader

from pysniff.fake import ethernet
from pysniff.pcap import IOV_MAX, open_writer
from pysniff.reader import Frame
from tests.conftest import missing

FRAMES = [
    (ethernet(bytes(range(256)) * 2), 1_700_000_000_123_456_789, 1),
    (ethernet(b"odd length!"), 1_700_000_001_000_000_001, 2),
    (ethernet(b"x" * 1486, vlan_tci=7), 1_700_000_002_999_999_999, 1),
    (ethernet(b"ad" * 40, vlan_tci=9, tpid=0x88A8), 1_700_000_003_000_000_000, 2),
]


def as_frame(wire: bytes, ts: int, ifindex: int, split: int = 0) -> Frame:
    """What the reader yields: a tag the stack took out, the bytes in pieces."""
    tci, tpid, data = None, 0, wire
    if wire[12:14] in (b"\x81\x00", b"\x88\xa8"):
        tci, tpid, data = (
            int.from_bytes(wire[14:16], "big"),
            int.from_bytes(wire[12:14], "big"),
            wire[:12] + wire[16:],
        )
    pieces = (memoryview(data[:split]), memoryview(data[split:])) if split else (memoryview(data),)
    return Frame(0, ts, ifindex, 8, 0, len(data), tci, tpid, pieces)


def write(path: Path, split: int = 0) -> None:
    w = open_writer(path, {1: "eth0", 2: "eth1"})
    for data, ts, ifindex in FRAMES:
        w.add(as_frame(data, ts, ifindex, split))
    w.close()


@pytest.mark.parametrize("split", [0, 20])
def test_pcap_nanoseconds(tmp_path: Path, split: int) -> None:
    """Tags put back with their own TPID; a frame in several pieces written whole."""
    path = tmp_path / "f.pcap"
    write(path, split)
    with RawPcapReader(str(path)) as r:
        got = [(bytes(d), m.sec * 1_000_000_000 + m.usec, m.wirelen) for d, m in r]
    assert got == [(d, ts, len(d)) for d, ts, _ in FRAMES]


def test_pcapng_interfaces_and_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "f.pcapng"
    write(path)
    with RawPcapNgReader(str(path)) as r:
        got = [(bytes(d), m._asdict()) for d, m in r]
    assert [d for d, _ in got] == [d for d, _, _ in FRAMES]
    assert [m["ifname"] for _, m in got] == [b"eth0", b"eth1", b"eth0", b"eth1"]
    assert [m["tshigh"] << 32 | m["tslow"] for _, m in got] == [ts for _, ts, _ in FRAMES]
    assert {m["tsresol"] for _, m in got} == {1_000_000_000}


@pytest.mark.parametrize("suffix", ["pcap", "pcapng"])
def test_tcpdump_reads_it(tmp_path: Path, suffix: str) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        missing("tcpdump is not installed")
    path = tmp_path / f"f.{suffix}"
    write(path)
    done = subprocess.run(
        [tcpdump, "-r", str(path), "-n", "-e", "--nano"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    assert "length 526" in lines[0] and "length 25" in lines[1]
    assert "vlan 7" in lines[2] and "802.1Q-QinQ" in lines[3] and "vlan 9" in lines[3]
    assert "02:02:02:02:02:02 > ff:ff:ff:ff:ff:ff" in lines[0]


def test_a_batch_larger_than_iov_max_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "many.pcap"
    w = open_writer(path)
    wire = [ethernet(i.to_bytes(4, "big") * 20) for i in range(IOV_MAX)]  # 2 buffers each
    for i, data in enumerate(wire):
        w.add(as_frame(data, i, 1))
    w.close()
    with RawPcapReader(str(path)) as r:
        assert [bytes(d) for d, _ in r] == wire
