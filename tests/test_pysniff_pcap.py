"""pysniff's pcap and pcapng writers: read back by scapy and by tcpdump, byte for byte."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.utils import RawPcapNgReader, RawPcapReader

from pysniff.fake import ethernet
from pysniff.pcap import open_writer

FRAMES = [
    (ethernet(bytes(range(256)) * 2), 1_700_000_000_123_456_789, 1),
    (ethernet(b"odd length!"), 1_700_000_001_000_000_001, 2),
    (ethernet(b"x" * 1486, vlan_tci=7), 1_700_000_002_999_999_999, 1),
]


def write(path: Path) -> None:
    w = open_writer(path, {1: "eth0", 2: "eth1"})
    for data, ts, ifindex in FRAMES:
        w.write(data, ts, ifindex)
    w.close()


def test_pcap_nanoseconds(tmp_path: Path) -> None:
    path = tmp_path / "f.pcap"
    write(path)
    with RawPcapReader(str(path)) as r:
        got = [(bytes(d), m.sec * 1_000_000_000 + m.usec, m.wirelen) for d, m in r]
    assert got == [(d, ts, len(d)) for d, ts, _ in FRAMES]


def test_pcapng_interfaces_and_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "f.pcapng"
    write(path)
    with RawPcapNgReader(str(path)) as r:
        got = [(bytes(d), m._asdict()) for d, m in r]
    assert [d for d, _ in got] == [d for d, _, _ in FRAMES]
    assert [m["ifname"] for _, m in got] == [b"eth0", b"eth1", b"eth0"]
    assert [m["tshigh"] << 32 | m["tslow"] for _, m in got] == [ts for _, ts, _ in FRAMES]
    assert {m["tsresol"] for _, m in got} == {1_000_000_000}


@pytest.mark.parametrize("suffix", ["pcap", "pcapng"])
def test_tcpdump_reads_it(tmp_path: Path, suffix: str) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed")
    path = tmp_path / f"f.{suffix}"
    write(path)
    done = subprocess.run(
        [tcpdump, "-r", str(path), "-n", "-e", "--nano"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert "length 526" in lines[0] and "length 25" in lines[1]
    assert "vlan 7" in lines[2]
    assert "02:02:02:02:02:02 > ff:ff:ff:ff:ff:ff" in lines[0]
