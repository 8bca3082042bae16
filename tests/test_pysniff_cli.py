"""The pysniff CLI against the fake module: --json, --verify, -w, commits, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from scapy.utils import RawPcapNgReader, RawPcapReader

from pysniff import cli, signature
from pysniff.fake import FakeNta, ethernet
from pysniff.report import SniffReport

REPO = Path(__file__).resolve().parents[1]
RUN = 7


def signed(seq: int, run_id: int = RUN, size: int = 100) -> bytes:
    return ethernet(signature.payload(run_id, seq, size))


def fake(burst: int = 8) -> FakeNta:
    # 9001: an index no host has, so its name is "9001" everywhere.
    return FakeNta(interfaces={1: "lo", 9001: "x"}, ring_entries=32, burst=burst, node_pages=16)


def pysniff(nta: FakeNta, capsys: pytest.CaptureFixture[str], *args: str) -> SniffReport:
    assert cli.main([*args, "--json"], open_device=nta.open) == 0
    out = capsys.readouterr()
    assert "pysniff: ready on" in out.err
    return SniffReport.from_json(out.out)


def test_counts_and_commits_everything_at_count(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake()
    nta.queue(1, [signed(i) for i in range(20)])
    nta.queue(9001, [signed(i) for i in range(10)])
    got = pysniff(nta, capsys, "-i", "lo", "-i", "9001", "-c", "30")
    assert got.frames == 30 and got.per_interface == {"lo": 20, "9001": 10}
    assert got.bytes == 30 * 114
    assert (got.committed, got.refused, got.pending) == (30, 0, 0)
    assert got.stats_after.committed == 30 and got.stats_after.outstanding == 0
    assert got.stats_before.published == 0
    assert got.dev_stats["9001"].published == 10
    assert got.verify is None and got.bad_commits_sent == {}
    assert nta.stats["returned_on_close"] == 0


def test_verify_summary(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake()
    corrupt = bytearray(signed(8))
    corrupt[-1] ^= 0xFF
    frames = [signed(i) for i in range(10) if i not in (3, 4, 5, 8)]
    frames += [signed(7), bytes(corrupt), signed(0, run_id=99), ethernet(b"no signature" * 5)]
    nta.queue(1, frames)
    got = pysniff(nta, capsys, "-i", "lo", "-c", str(len(frames)), "--verify",
                  "--run-id", str(RUN), "--expect", "10")  # fmt: skip
    lo = signature.IfaceTally(seen=7, unique=6, duplicates=1, corrupt=1, missing=[[3, 5], [8, 8]])
    assert got.verify == signature.TallySummary(RUN, 10, {"lo": lo}, foreign=1, unsigned=1)


def test_verify_puts_stripped_vlan_tags_back(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake()
    nta.queue(1, [ethernet(signature.payload(RUN, i, 80), vlan_tci=5) for i in range(4)],
              strip_vlan=True)  # fmt: skip
    got = pysniff(nta, capsys, "-i", "lo", "-c", "4", "--verify", "--run-id", str(RUN),
                  "--expect", "4")  # fmt: skip
    assert got.verify is not None
    assert got.verify.interfaces["lo"] == signature.perfect(4)


@pytest.mark.parametrize("suffix", ["pcap", "pcapng"])
def test_pcap_holds_the_wire_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    nta = fake()
    wire = [signed(i, size=60 + 37 * i) for i in range(12)]
    tagged = [ethernet(signature.payload(RUN, 100 + i, 70), vlan_tci=0x10 + i) for i in range(3)]
    nta.queue(1, wire)
    nta.queue(9001, tagged, strip_vlan=True)
    out = tmp_path / f"out.{suffix}"
    got = pysniff(nta, capsys, "-i", "lo", "-i", "9001", "-c", "15", "-w", str(out))
    assert got.frames == 15
    by_iface: dict[str, list[bytes]] = {}
    if suffix == "pcapng":
        with RawPcapNgReader(str(out)) as ng:
            for data, meta in ng:
                by_iface.setdefault(meta._asdict()["ifname"].decode(), []).append(bytes(data))
    else:
        with RawPcapReader(str(out)) as classic:
            packets = [(bytes(data), meta) for data, meta in classic]
        for data, _ in packets:
            by_iface.setdefault("lo" if data in wire else "9001", []).append(data)
        stamps = [m.sec * 1_000_000_000 + m.usec for _, m in packets]  # nanoseconds
        assert stamps == sorted(stamps) and len(set(stamps)) == 15
    assert by_iface == {"lo": wire, "9001": tagged}


def test_bulk_path(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake(burst=16)
    wire = [signed(i, size=64 + i) for i in range(40)]
    nta.queue(1, wire)
    got = pysniff(nta, capsys, "-i", "lo", "-c", "40", "--bulk")
    assert got.frames == 40 and got.per_interface == {"lo": 40}
    assert got.crc_sum == sum(zlib.crc32(f) for f in wire)
    assert got.bytes == sum(map(len, wire))
    assert got.committed == 40 and got.stats_after.outstanding == 0


@pytest.mark.parametrize("how", [["--immediate"], ["--wakeup-frames", "16", "--wakeup-usecs", "0"]])
def test_wakeup_options_read_everything(capsys: pytest.CaptureFixture[str], how: list[str]) -> None:
    nta = fake(burst=4)
    nta.queue(1, [signed(i) for i in range(40)])
    got = pysniff(nta, capsys, "-i", "lo", "-c", "40", "--bulk", *how)
    assert (got.frames, got.committed, got.stats_after.outstanding) == (40, 40, 0)
    assert got.crc_sum == sum(zlib.crc32(signed(i)) for i in range(40))


def test_a_stalled_reader_is_told_what_it_missed(capsys: pytest.CaptureFixture[str]) -> None:
    """As tcpdump's "dropped by kernel": per interface, what the device received and the
    reader did not get, by reason."""
    nta = FakeNta(interfaces={1: "lo"}, ring_entries=32, max_shared=5, node_pages=16)
    nta.queue(1, [signed(i) for i in range(12)])
    assert (
        cli.main(["-i", "lo", "-c", "5", "--no-commit", "--idle", "0.3"], open_device=nta.open) == 0
    )
    err = capsys.readouterr().err
    assert "lo: 12 received, 5 captured, 7 not delivered to pysniff (not_shared 7)" in err


def test_hold_and_no_commit(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake()
    nta.queue(1, [signed(i) for i in range(20)])
    got = pysniff(nta, capsys, "-i", "lo", "-c", "20", "--hold", "5", "--commit-every", "3")
    assert (got.committed, got.pending) == (15, 5)
    assert got.stats_after.outstanding == 5
    assert nta.stats["returned_on_close"] == 5  # close gave the held ones back

    nta = fake()
    nta.queue(1, [signed(i) for i in range(9)])
    got = pysniff(nta, capsys, "-i", "lo", "-c", "9", "--no-commit")
    assert (got.committed, got.pending) == (0, 9)
    assert nta.stats["returned_on_close"] == 9 and nta.writes == []


def test_pause_commits_until_sigusr1(capsys: pytest.CaptureFixture[str]) -> None:
    """A stalled reader hits max_shared (the rest is not shared); SIGUSR1 recovers it."""
    nta = FakeNta(interfaces={1: "lo"}, ring_entries=32, max_shared=5, node_pages=16)
    nta.queue(1, [signed(i) for i in range(20)])

    def resume_then_send_more() -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        # Past the reader's next wakeup (0.2 s at most): it has committed by then.
        time.sleep(0.6)
        nta.queue(1, [signed(i) for i in range(20, 24)])  # under max_shared

    timer = threading.Timer(0.3, resume_then_send_more)
    timer.start()
    try:
        got = pysniff(nta, capsys, "-i", "lo", "-c", "9", "--pause-commits", "--duration", "5")
    finally:
        timer.join()
    after = got.stats_after
    assert (after.published, after.not_shared) == (9, 15)
    assert (got.frames, got.committed, after.outstanding) == (9, 9, 0)


def test_bad_commits_report_matches_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake(burst=4)
    nta.queue(1, [signed(i) for i in range(12)])
    kinds = ["--bad-commits", "node", "--bad-commits", "owner", "--bad-commits", "length"]
    got = pysniff(nta, capsys, "-i", "lo", "-c", "12", *kinds, "--commit-via", "write")
    assert got.bad_commits_sent == {"length": 3, "node": 12, "owner": 12}
    assert got.bad_commits_refused == got.bad_commits_sent
    after = got.stats_after
    assert (after.bad_commits["length"], after.bad_commits["node"]) == (3, 12)
    assert after.bad_commits["state"] == 12 and after.bad_commits["offset"] == 0  # owner's
    assert got.committed == 12 and got.refused == 0


def test_stats_only(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake()
    got = pysniff(nta, capsys, "--stats")
    assert got.frames == 0 and got.stats_after == nta.stats_now()


def test_duration_and_ready_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ready = tmp_path / "ready"
    got = pysniff(fake(), capsys, "-i", "lo", "--duration", "0.3", "--ready-file", str(ready))
    assert ready.read_text() == "ready\n"
    assert got.frames == 0 and 0.25 <= got.elapsed_s < 2


def test_idle_ends_a_capture_that_stops_getting_frames(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nta = fake()
    nta.queue(1, [signed(i) for i in range(5)])
    got = pysniff(nta, capsys, "-i", "lo", "-c", "10", "--idle", "0.5")
    assert (got.frames, got.committed) == (5, 5)
    assert 0.5 <= got.elapsed_s < 2


def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    nta = fake()
    nta.queue(1, [signed(0)])
    assert cli.main(["-i", "lo", "-c", "1", "--stats"], open_device=nta.open) == 0
    out = capsys.readouterr()
    assert "lo seq 0 ethertype 0x0800 length 114" in out.out
    assert "committed: 1" in out.out  # the module's counter
    assert "1 frames captured (" in out.err
    assert "lo: 1 received, 1 captured, 0 not delivered to pysniff\n" in out.err


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysniff", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-i", "lo", "-c", "x"], "argument -c/--count: invalid _positive value: 'x'"),
        (["-i", "lo", "-c", "0"], "must be positive, not 0"),
        (["-i", "lo", "--hold", "-1"], "must not be negative"),
        (["-i", "lo", "--bad-commits", "bogus"], "invalid choice: 'bogus'"),
        ([], "give -i IFACE (or --stats)"),
    ],
)
def test_bad_flags_exit_2(args: list[str], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""


def test_missing_device_is_one_clear_line(tmp_path: Path) -> None:
    done = run_cli("-i", "lo", "--device", str(tmp_path / "nta"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"pysniff: {tmp_path / 'nta'} does not exist: is the nta module loaded? "
        "(modprobe nta, or insmod nta.ko)\n"
    )


def test_unknown_interface_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-i", "nosuch0"], open_device=fake().open) == 1
    assert capsys.readouterr().err == "pysniff: no such interface: nosuch0\n"
