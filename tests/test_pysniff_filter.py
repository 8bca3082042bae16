"""pysniff's -Q and kernel-side filter: tcpdump -ddd's output parsed into struct sock_filter,
handed to the module before any attach; a bad expression is exit status 2 with nothing
opened; pcapng says each frame's direction."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from pysniff import abi, bpf, cli
from pysniff.device import Device
from pysniff.errors import FilterError
from pysniff.fake import FakeNta, ethernet
from pysniff.pcap import open_writer
from pysniff.reader import Frame
from tests.conftest import missing

# tcpdump -i lo -ddd icmp, as tcpdump 4.99 / libpcap 1.10 print it.
ICMP_DDD = "6\n40 0 0 12\n21 0 3 2048\n48 0 0 23\n21 0 1 1\n6 0 0 262144\n6 0 0 0\n"
ICMP = [(40, 0, 0, 12), (21, 0, 3, 2048), (48, 0, 0, 23), (21, 0, 1, 1),
        (6, 0, 0, 262144), (6, 0, 0, 0)]  # fmt: skip
SKF_AD_VLAN_TAG_PRESENT = 0xFFFFF000 + 48  # SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT


def test_parse_ddd() -> None:
    assert bpf.parse_ddd(ICMP_DDD) == ICMP
    assert bpf.pack(bpf.parse_ddd(ICMP_DDD))[:8] == struct.pack("<HBBI", 40, 0, 0, 12)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "printed nothing"),
        ("2\n6 0 0 1\n", "said 2 instructions"),
        ("1\n6 0 0 x\n", "something else"),
        ("1\n6 0 300 1\n", "out of range"),
        ("1\n6 0 0 4294967296\n", "out of range"),
        ("0\n", "1 to 4096"),
    ],
)
def test_parse_ddd_refuses_what_is_not_a_program(text: str, why: str) -> None:
    with pytest.raises(FilterError, match=why):
        bpf.parse_ddd(text)


def fake_tcpdump(tmp: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    """A tcpdump on PATH that runs ``script`` (its arguments logged to ``args``)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "tcpdump"
    tool.write_text(f'#!/bin/sh\necho "$@" > {tmp}/args\n{script}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp / "args"


def fake() -> FakeNta:
    return FakeNta(interfaces={1: "lo"}, ring_entries=32, node_pages=16)


def test_direction_and_filter_reach_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = fake_tcpdump(tmp_path, monkeypatch, f"printf '{ICMP_DDD}'")
    nta = fake()
    devices: list[Device] = []

    def open_device(path: str) -> Device:
        devices.append(nta.open(path))
        return devices[-1]

    assert cli.main(["-i", "1", "-c", "1", "--duration", "0.1", "-Q", "out", "icmp", "and",
                     "host", "10.0.0.1"], open_device=open_device) == 0  # fmt: skip
    dev = devices[0]
    assert dev.direction == abi.Direction.OUT  # type: ignore[attr-defined]
    assert dev.filter == ICMP  # type: ignore[attr-defined]
    # Compiled on the interface by name (tcpdump's -i numbers are not ifindexes).
    assert args.read_text().split() == ["-i", "lo", "-ddd", "icmp", "and", "host", "10.0.0.1"]
    capsys.readouterr()


def test_without_options_both_directions_and_no_filter(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake()
    devices: list[Device] = []

    def open_device(path: str) -> Device:
        devices.append(nta.open(path))
        return devices[-1]

    assert cli.main(["-i", "lo", "--duration", "0.1"], open_device=open_device) == 0
    assert devices[0].direction == abi.Direction.INOUT  # type: ignore[attr-defined]
    assert devices[0].filter is None  # type: ignore[attr-defined]
    capsys.readouterr()


def test_a_bad_expression_is_status_2_and_opens_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_tcpdump(
        tmp_path, monkeypatch, "echo 'tcpdump: syntax error in filter expression' >&2; exit 1"
    )
    opened: list[str] = []

    def open_device(path: str) -> Device:
        opened.append(path)
        return fake().open(path)

    assert cli.main(["-i", "lo", "-f", "tcp port"], open_device=open_device) == 2
    assert opened == []
    err = capsys.readouterr().err
    assert "cannot compile the filter 'tcp port': tcpdump: syntax error" in err


def test_a_program_longer_than_the_kernel_takes_is_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before the module is asked (BPF_MAXINSNS), as the module would refuse it.
    fake_tcpdump(tmp_path, monkeypatch, "printf '4097\\n'; i=0; while [ $i -lt 4097 ]; do "
                 "echo 6 0 0 0; i=$((i+1)); done")  # fmt: skip
    assert cli.main(["-i", "lo", "icmp"], open_device=fake().open) == 2
    assert "1 to 4096" in capsys.readouterr().err


def test_filter_given_twice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["-i", "lo", "-f", "icmp", "udp"], open_device=fake().open)
    assert e.value.code == 2
    assert "not both" in capsys.readouterr().err


def test_vlan_compiles_to_the_tag_present_load() -> None:
    """The real tcpdump on a live handle: ``vlan`` asks the kernel whether the stack took a
    tag out (the tap never sees it in the bytes), which a dead handle would not."""
    if shutil.which("tcpdump") is None:
        missing("tcpdump not found")
    if os.geteuid() != 0:
        pytest.skip("tcpdump -i lo needs root to open the interface")
    insns = bpf.compile_expression("vlan", "lo")
    assert any(n.k == SKF_AD_VLAN_TAG_PRESENT for n in insns), insns
    with pytest.raises(FilterError, match="syntax error"):
        bpf.compile_expression("tcp port", "lo")


def epb_flags(path: Path) -> list[int]:
    """Each Enhanced Packet Block's epb_flags, walking the pcapng's blocks."""
    data, at, out = path.read_bytes(), 0, []
    while at < len(data):
        kind, total = struct.unpack_from("<II", data, at)
        if kind == 6:
            caplen = struct.unpack_from("<I", data, at + 20)[0]
            opt = at + 28 + caplen + (-caplen % 4)
            code, size, value = struct.unpack_from("<HHI", data, opt)
            assert (code, size) == (2, 4)
            out.append(value)
        at += total
    return out


def test_pcapng_says_the_direction(tmp_path: Path) -> None:
    w = open_writer(tmp_path / "x.pcapng", {1: "eth0"})
    for flags in (0, abi.RECORD_OUTGOING | abi.RECORD_COPY, 0):
        data = ethernet(b"odd length!")
        w.add(Frame(0, 1, 1, 8, flags, len(data), None, 0, (memoryview(data),)))
    w.close()
    assert epb_flags(tmp_path / "x.pcapng") == [1, 2, 1]
