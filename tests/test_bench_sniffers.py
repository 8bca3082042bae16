"""The bench's sniffers: how the meter starts each, and what each says of its own run
(tcpdump's text on its real output; the NTA readers' and AF_PACKET's typed reports)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from lab import LabError, UsageError
from lab.bench import sniffers
from lab.bench.sniffers import SNIFFERS, Tools, parse, parse_tcpdump
from lab.guestside.protocol import Meter
from lab.guestside.reports import AfpacketReport, CpuStat, MeterReport, SnifferOutput
from pysniff.abi import DevStats, ReaderStats, Stats
from pysniff.report import SniffReport

DATA = Path(__file__).parent / "data" / "tcpdump"
TOOLS = Tools(ntadump="/b/ntadump", tcpdump="/usr/bin/tcpdump")
WINDOW = Meter(hold=Path("/r/started"), iface="eth1", expect_rx=5)


def meter(*stdouts: str, stderr: str = "", rx: int | None = 77) -> MeterReport:
    """The meter's report of a copy of the sniffer per stdout given."""
    stat = CpuStat(0, 0, 0, 0, 0, 0, 0, 0, 2, 100)
    copies = [SnifferOutput(0, out, stderr) for out in stdouts or ("",)]
    return MeterReport(copies, 0.1, 1.0, stat, stat, rx_packets=rx)


def test_the_registry_in_its_order_and_names_checked() -> None:
    assert list(SNIFFERS) == ["none", "none-loaded", "afpacket", "tcpdump", "pysniff", "ntadump"]
    assert [s.name for s in parse("ntadump,none,pysniff")] == ["none", "pysniff", "ntadump"]
    with pytest.raises(UsageError, match="unknown sniffer 'nta'; known: none, none-loaded"):
        parse("none,nta")
    with pytest.raises(UsageError, match="no sniffer given"):
        parse(",")
    assert [s.needs_module for s in SNIFFERS.values()] == [False, True, True, True, True, True]


def test_how_the_meter_starts_each() -> None:
    def request(name: str, count: int | None) -> Meter:
        launch = SNIFFERS[name].launch("eth1", count, TOOLS)
        return launch.meter(WINDOW) if launch is not None else WINDOW

    assert request("none", 5) == WINDOW and request("none-loaded", None) == WINDOW
    # The guest's argv, whole: the window's options, then how the sniffer says it is ready.
    assert request("tcpdump", 5).to_argv() == [
        "--hold", "/r/started", "--iface", "eth1", "--expect-rx", "5", "--drain-s", "1.5",
        "--wait-line", "listening on", "--copies", "1", "--", "/usr/bin/tcpdump", "-i", "eth1",
        "-n", "-Q", "in", "-w", "/dev/null", "-B", "2048", "-c", "5",
    ]  # fmt: skip
    assert "-c" not in request("tcpdump", None).cmd  # runs until stopped
    ntadump = request("ntadump", 5)
    assert (ntadump.wait_line, ntadump.module) == ("ntadump: listening on", None)
    # Once the NIC is done, only a sniffer that a stop would rob of frames it batched
    # (tcpdump's open block, the AF_PACKET reader's unread ones) is given time first.
    drains = {name: request(name, 5).drain_s for name in SNIFFERS}
    assert drains == {"none": 0, "none-loaded": 0, "afpacket": 0.5, "tcpdump": 1.5,
                      "pysniff": 0, "ntadump": 0}  # fmt: skip
    assert ntadump.cmd == (
        "/b/ntadump", "-i", "eth1", "-Q", "in", "-w", "/dev/null", "--json", "-c", "5"
    )  # fmt: skip
    # The Python readers are forked warm and say they are ready through the protocol:
    # no wait line, and no ready path in their arguments (the meter gives them one).
    pysniff = request("pysniff", None)
    assert (pysniff.wait_line, pysniff.module) == (None, "pysniff.cli")
    assert pysniff.cmd == ("-i", "eth1", "-Q", "in", "--json", "--bulk")
    afpacket = request("afpacket", 5)
    assert (afpacket.wait_line, afpacket.module) == (None, "lab.guestside.afpacket")
    assert afpacket.cmd == ("--iface", "eth1", "--count", "5", "--duration", "3600",
                            "--filter", "")  # fmt: skip
    assert request("afpacket", None).cmd[3] == str(sniffers.UNTIL_STOPPED)
    assert Meter.from_argv(afpacket.to_argv()) == afpacket
    # Copies of a sniffer (two readers of a device): the window's, kept.
    launch = SNIFFERS["ntadump"].launch("eth1", 5, TOOLS)
    assert launch is not None
    two = launch.meter(replace(WINDOW, copies=2))
    assert two == replace(ntadump, copies=2)
    argv = two.to_argv()
    assert argv[argv.index("--copies") :][:2] == ["--copies", "2"]
    assert Meter.from_argv(argv) == two


def test_a_filter_reaches_every_sniffer_in_its_own_words() -> None:
    expr = "udp dst port 10"

    def cmd(name: str) -> tuple[str, ...]:
        launch = SNIFFERS[name].launch("eth1", 2, TOOLS, expr)
        assert launch is not None
        return launch.args

    assert cmd("tcpdump")[-3:] == ("-c", "2", expr)  # tcpdump's trailing expression
    assert cmd("ntadump")[-2:] == ("-f", expr) and cmd("pysniff")[-2:] == ("-f", expr)
    assert cmd("afpacket")[-2:] == ("--filter", expr)
    assert SNIFFERS["none"].launch("eth1", 2, TOOLS, expr) is None


def test_tcpdump_counts_from_its_real_output() -> None:
    counted = parse_tcpdump((DATA / "count-reached.txt").read_text())
    assert (counted.captured, counted.received_by_filter, counted.dropped_by_kernel) == (20, 60, 0)
    dropped = parse_tcpdump((DATA / "dropped.txt").read_text())
    assert (dropped.captured, dropped.dropped_by_kernel) == (16960, 6080)
    (figures,) = SNIFFERS["tcpdump"].figures(
        meter(stderr=(DATA / "interrupted.txt").read_text()), "e"
    )
    assert (figures.seen, figures.missed, figures.buf_bytes) == (7, 0, None)
    with pytest.raises(LabError, match="tcpdump printed no capture count"):
        parse_tcpdump("tcpdump: listening on lo\n")


def test_nta_readers_and_afpacket_from_their_reports() -> None:
    nd = {
        "frames": 20000, "bytes": 1, "rejected": 0, "syscalls": 812, "wakeups": 405,
        "records": 20010, "committed": 20010, "refused": None,
        "interfaces": {"eth1": {"captured": 20000, "received": 20010, "published": 20000,
                                "unserved": 0, "not_shared": 0, "ring_full": 10, "skipped": 0,
                                "fault_dropped": 0, "gone": False}},
    }  # fmt: skip
    (got,) = SNIFFERS["ntadump"].figures(meter(json.dumps(nd)), "eth1")
    assert (got.seen, got.missed, got.own_syscalls, got.own_wakeups) == (20000, 10, 812, 405)
    assert got.buf_bytes == 20010 * 4096
    sn = SniffReport(
        frames=50, bytes=3200, per_interface={"eth1": 50}, committed=50, refused=0, pending=0,
        crc_sum=0, max_wait_us=0, elapsed_s=1.0, syscalls=9, stats_before=Stats(),
        stats_after=Stats(), reader=ReaderStats(records=52, wakeups=4),
        dev_stats={"eth1": DevStats(received=53, published=50, not_shared=3)},
    )  # fmt: skip
    (py,) = SNIFFERS["pysniff"].figures(meter(sn.to_json()), "eth1")
    assert (py.seen, py.missed, py.buf_bytes, py.own_syscalls, py.own_wakeups) == (
        50, 3, 52 * 4096, 9, 4,
    )  # fmt: skip
    afp = AfpacketReport(100, 6400, 0, 2, 1.0, 0.1, 0.1, blocks=3, bytes_in_blocks=9000)
    (a,) = SNIFFERS["afpacket"].figures(meter(json.dumps(asdict(afp))), "e")
    assert (a.seen, a.missed, a.buf_bytes) == (100, 2, 9000)
    assert [f.seen for f in SNIFFERS["none-loaded"].figures(meter(rx=77), "e")] == [77]


def test_each_copy_says_what_it_saw() -> None:
    """Two readers of one device: a Figures per copy, in the order the meter ran them."""
    one = AfpacketReport(100, 6400, 0, 2, 1.0, 0.1, 0.1, blocks=3, bytes_in_blocks=9000)
    two = replace(one, frames=98, kernel_drops=4, bytes_in_blocks=8800)
    got = SNIFFERS["afpacket"].figures(meter(*(json.dumps(asdict(r)) for r in (one, two))), "e")
    assert [(f.seen, f.missed, f.buf_bytes) for f in got] == [(100, 2, 9000), (98, 4, 8800)]
