"""pysniff on frames of every shape, on bad records, when its interfaces go, when its output
fails, and the system calls its loop makes (on the fake module)."""

from __future__ import annotations

import errno
import os
import signal
import time
import types
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pysniff import abi, cli
from pysniff.device import Events, OsDevice
from pysniff.fake import HEADROOM, Arrival, FakeDevice, FakeNta, ethernet
from pysniff.pcap import PcapWriter
from pysniff.reader import Fault, Reader, Rejected
from pysniff.report import SniffReport
from tests.shapes import (
    deliver,
    patch,
    published,
    read_pcap,
    records_of,
    shapes,
    signed,
)


@pytest.fixture
def nta() -> FakeNta:
    return FakeNta(ring_entries=64, node_pages=16)


@pytest.fixture
def reader(nta: FakeNta) -> Iterator[Reader]:
    with Reader(["lo"], nta.open()) as r:
        yield r


def all_back(nta: FakeNta, reader: Reader, records: int) -> None:
    """Every chunk committed, and every commit accepted by the fake's checks."""
    reader.commit()
    reader.kick()
    assert nta.readers[0].outstanding == 0
    assert nta.readers[0].committed == records
    assert nta.bad_commits == [0] * abi.BAD_COMMIT_MAX


# -- every shape, on both paths -------------------------------------------------


def test_every_shape_is_one_frame(nta: FakeNta, reader: Reader) -> None:
    """In one chunk, a stripped tag, COPY pieces, non-COPY pieces in place at any offset:
    one Frame each, its bytes the wire's, each piece committed on its own."""
    frames = shapes() * 2
    for f in frames:
        deliver(nta, 1, f)
    got = list(reader.frames())
    assert [g.wire_bytes() for g in got] == [f.wire for f in frames]
    assert [len(g.pieces) for g in got] == [records_of(f) for f in frames]
    # Frame.flags are the first record's: COPY if the head piece was copied.
    heads = [f.merged or (len(f.chain[0]) == 3 if f.chain else False) for f in frames]
    assert [bool(g.flags & abi.RECORD_COPY) for g in got] == heads
    assert [g.len for g in got] == [len(published(f)) for f in frames]
    all_back(nta, reader, sum(map(records_of, frames)))


def test_every_shape_on_the_bulk_path(nta: FakeNta, reader: Reader) -> None:
    frames = shapes() * 2
    for f in frames:
        deliver(nta, 1, f)
    b = reader.bulk()
    assert (b.count, b.chained) == (len(frames), True)
    assert [b"".join(p) for p in b.frames()] == [published(f) for f in frames]
    assert b.crc_sum() == sum(zlib.crc32(published(f)) for f in frames)
    assert b.bytes == sum(len(published(f)) for f in frames)
    assert list(b.ifindexes()) == [1] * len(frames)
    all_back(nta, reader, sum(map(records_of, frames)))


def test_bulk_with_a_limit_takes_whole_frames(nta: FakeNta, reader: Reader) -> None:
    frames = [f for f in shapes() if f.chain or f.merged] * 2
    for f in frames:
        deliver(nta, 1, f)
    first = reader.bulk(limit=3)
    assert first.count == 3 and len(first.pieces) == sum(map(records_of, frames[:3]))
    rest = reader.bulk()
    assert [b"".join(p) for p in rest.frames()] == [published(f) for f in frames[3:]]


# -- what cannot be read is refused, counted, and committed ---------------------------


@pytest.mark.parametrize("path", ["frames", "bulk"])
def test_a_frame_naming_bytes_outside_the_pool_is_refused(
    nta: FakeNta, reader: Reader, path: str
) -> None:
    """A piece whose offset + len wraps a u32, then (another batch) a node out of range:
    the whole frame refused, told, counted, its chunks committed; the others read."""
    told: list[Rejected] = []
    reader.on_reject = told.append
    dev = nta.readers[0]

    def take() -> list[bytes]:
        if path == "frames":
            return [bytes(f.data) for f in reader.frames()]
        return [b"".join(p) for p in reader.bulk().frames()]

    chain = Arrival(signed(9, 300), chain=((HEADROOM, 100), (0, 200)))
    for f in (Arrival(signed(0, 60)), chain, Arrival(signed(2, 60))):
        deliver(nta, 1, f)
    patch(dev, 2, offset=0xFFFFF000, len=0x2000)  # the chain's second piece
    assert take() == [signed(0, 60), signed(2, 60)]
    for i in (3, 4):
        nta.deliver(1, signed(i, 60))
    patch(dev, 4, node=nta.node_count)
    assert take() == [signed(4, 60)]  # signed(3) is record 4
    assert told == [Rejected(1, 2, Fault.OUTSIDE), Rejected(4, 1, Fault.OUTSIDE)]
    assert reader.rejected == {Fault.OUTSIDE: 2}
    reader.commit()
    reader.kick()
    assert dev.committed == 4  # the three good frames, and the chain's first piece
    assert (nta.bad_commits[abi.BadCommit.OFFSET], nta.bad_commits[abi.BadCommit.NODE]) == (1, 1)


@pytest.mark.parametrize("path", ["frames", "bulk"])
def test_a_frame_that_fills_the_ring_and_never_ends_is_refused(path: str) -> None:
    nta = FakeNta(ring_entries=8)
    with Reader(["lo"], nta.open()) as reader:
        for i in range(8):
            nta.deliver(1, signed(i, 60))
            patch(nta.readers[0], i, flags=abi.RECORD_CONTD)
        if path == "frames":
            assert not list(reader.frames())
        else:
            assert reader.bulk().count == 0
        assert reader.rejected == {Fault.OPEN: 1} and reader.consumer == 8
        for i in (8, 9):
            nta.deliver(1, signed(i, 60))
        assert len(list(reader.frames())) == 2
        all_back(nta, reader, 10)


@pytest.mark.parametrize("path", ["frames", "bulk"])
def test_a_frame_open_at_the_producer_waits_for_the_rest(path: str) -> None:
    """Slots past the producer index (stale, here marked CONTD) are never read; the frame
    is taken whole once its last record comes, or refused once nothing can follow."""
    nta = FakeNta(ring_entries=8)
    with Reader(["lo"], nta.open()) as reader:
        for i in range(3):
            nta.deliver(1, signed(i, 60))
        dev = nta.readers[0]
        patch(dev, 2, flags=abi.RECORD_CONTD, frame_len=120)
        for seq in range(3, 8):
            patch(dev, seq, flags=abi.RECORD_CONTD)
        if path == "frames":
            assert [bytes(f.data) for f in reader.frames()] == [signed(0, 60), signed(1, 60)]
        else:
            assert reader.bulk().count == 2
        assert reader.consumer == 2
        nta.deliver(1, signed(3, 60))
        got = [f.wire_bytes() for f in reader.frames()]
        assert got == [signed(2, 60) + signed(3, 60)]
        nta.deliver(1, signed(4, 60))
        patch(dev, 4, flags=abi.RECORD_CONTD)
        assert not list(reader.frames(last=True))  # the interfaces are gone: it never ends
        assert reader.rejected == {Fault.OPEN: 1}
        all_back(nta, reader, 5)


# -- the pcap: lengths from the bytes written -------------------------------------


def test_pcap_lengths_follow_the_bytes(nta: FakeNta, tmp_path: Path) -> None:
    """A stripped tag goes back at byte 12 whichever pieces hold it; caplen is the bytes
    written, len the frame on the wire; past the snapshot length a frame is cut."""
    nta = FakeNta(ring_entries=128, node_count=4, node_pages=32)
    tagged = ethernet(signed(1, 96)[14:], vlan_tci=0x123)
    huge = signed(7, 70 * 4000)
    want: list[tuple[bytes, int]] = []
    with Reader(["lo"], nta.open()) as reader:
        dev = nta.readers[0]
        for chain in (
            ((HEADROOM, 6), (300, 90)),
            ((HEADROOM, 12), (0, 0), (200, 84)),
            ((10, 2),) * 7 + ((0, 82),),
        ):
            nta.deliver(1, tagged, strip_vlan=True, chain=chain)
            want.append((tagged, 100))
        seq = nta.deliver(1, b"0123456789")
        assert seq is not None
        patch(dev, seq, flags=abi.RECORD_VLAN, vlan_tci=5, vlan_proto=0x0081)
        want.append((b"0123456789", 10))
        for frame_len, length in ((100, 100), (20, 60)):
            seq = nta.deliver(1, signed(5, 60))
            assert seq is not None
            patch(dev, seq, frame_len=frame_len)
            want.append((signed(5, 60), length))
        nta.deliver(1, huge, chain=((0, 4000),) * 70)
        want.append((huge[:262144], len(huge)))
        out = tmp_path / "out.pcap"
        with out.open("wb") as f:
            writer = PcapWriter(f)
            cli.Capture({1: "lo"}, None, writer, print_frames=False).take_frames(reader, None)
        assert [(r.data, r.length) for r in read_pcap(out)] == want


# -- the interfaces go ----------------------------------------------------------------


def run_cli(nta: FakeNta, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = cli.main([*args], open_device=nta.open)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("hangup", [True, False])
@pytest.mark.parametrize("bulk", [True, False])
def test_it_ends_once_its_interfaces_are_gone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, hangup: bool, bulk: bool
) -> None:
    """Frames still in the ring are taken and committed, then the report, 'the interfaces
    are gone', exit 1. ``hangup``: POLLHUP comes with the last frames; otherwise only
    NTA_DEV_GONE says it."""
    nta = FakeNta(interfaces={1: "lo"}, ring_entries=64, burst=16, hangup=hangup)
    frames = [signed(i, 60 + i) for i in range(40)]
    nta.queue(1, frames)
    nta.unregister_after(1)
    out = tmp_path / "out.pcap"
    how = ["--bulk"] if bulk else ["-w", str(out)]
    opened: list[FakeDevice] = []

    def open_device(path: str) -> FakeDevice:
        opened.append(nta.open(path))
        return opened[-1]

    # --duration: a build that never sees them go ends all the same, and fails below.
    rc = cli.main(["-i", "lo", "--json", "--duration", "10", *how], open_device=open_device)
    stdout, stderr = capsys.readouterr()
    assert rc == 1, stderr
    # POLLHUP ends it by itself; without it, the devices' flags are asked after idle waits.
    looks = opened[0].ioctls[abi.IOC_DEV_STATS] - 1  # one is the report's
    assert looks == 0 if hangup else looks > 0
    got = SniffReport.from_json(stdout)
    assert (got.frames, got.committed, got.gone) == (40, 40, True)
    assert got.stats_after.outstanding == 0 and got.dev_stats["lo"].gone
    assert got.crc_sum == (sum(map(zlib.crc32, frames)) if bulk else 0)
    if not bulk:
        assert [r.data for r in read_pcap(out)] == frames
    assert stderr.endswith("pysniff: the interfaces are gone\n")


def test_one_interface_of_two_gone_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    nta = FakeNta(interfaces={1: "lo", 9001: "x"}, burst=4, hangup=False)
    nta.queue(1, [signed(i, 60) for i in range(4)])
    nta.unregister_after(1)
    nta.queue(9001, [signed(i, 60) for i in range(12)])
    rc, stdout, stderr = run_cli(nta, capsys, "-i", "lo", "-i", "9001", "--json", "--idle", "0.3")
    assert rc == 0, stderr
    got = SniffReport.from_json(stdout)
    assert (got.frames, got.gone) == (16, False)
    assert got.dev_stats["lo"].gone and not got.dev_stats["9001"].gone


def test_text_summary_says_the_device_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    nta = FakeNta(interfaces={1: "lo"})
    nta.queue(1, [signed(0, 60)])
    nta.unregister_after(1)
    rc, _, stderr = run_cli(nta, capsys, "-i", "lo", "-q", "--duration", "10")
    assert rc == 1
    assert stderr.endswith(
        "lo: 1 received, 1 captured, 0 not delivered to pysniff; the device is gone\n"
        "pysniff: the interfaces are gone\n"
    )


# -- the output fails --------------------------------------------------------------------


def test_an_output_that_fails_ends_the_capture(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader of -w goes (EPIPE): the report, why, exit 1, every chunk back."""
    nta = FakeNta(interfaces={1: "lo"}, burst=8)
    nta.queue(1, [signed(i, 60) for i in range(20)])
    out = tmp_path / "out.pcap"

    real, calls = os.writev, []

    def broken_after_the_header(fd: int, buffers: list[bytes]) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real(fd, buffers)
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    monkeypatch.setattr(os, "writev", broken_after_the_header)
    rc, stdout, stderr = run_cli(nta, capsys, "-i", "lo", "-c", "20", "--json", "-w", str(out))
    assert rc == 1
    got = SniffReport.from_json(stdout)
    assert got.output_error == f"cannot write {out}: Broken pipe"
    # What it read went back; what came after stays in the ring, for close to return.
    assert (got.frames, got.committed, got.pending, got.stats_after.committed) == (8, 8, 0, 8)
    assert stderr.endswith(f"pysniff: cannot write {out}: Broken pipe\n")


def test_a_filesystem_that_cannot_pin_the_pool_gets_a_copy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """writev() from the pool fails with EFAULT on 9p: the frames go through a copy."""
    nta = FakeNta(interfaces={1: "lo"}, burst=8)
    frames = [signed(i, 60 + i) for i in range(20)]
    nta.queue(1, frames)
    out = tmp_path / "out.pcap"
    calls: list[int] = []

    def no_pinning(fd: int, buffers: object) -> int:
        calls.append(fd)
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))

    monkeypatch.setattr(os, "writev", no_pinning)
    rc, _, stderr = run_cli(nta, capsys, "-i", "lo", "-c", "20", "-w", str(out))
    assert rc == 0, stderr
    assert [r.data for r in read_pcap(out)] == frames
    assert len(calls) == 1  # copies from then on


# -- system calls ----------------------------------------------------------------------


def counted_clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the CLI's clock reads (in a TCG guest each is a system call)."""
    reads = [0]

    def monotonic() -> float:
        reads[0] += 1
        return time.monotonic()

    fake_time = types.SimpleNamespace(monotonic=monotonic, time_ns=time.time_ns)
    monkeypatch.setattr(cli, "time", fake_time)
    return reads


def test_the_loop_reads_no_clock_without_a_time_limit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = counted_clock(monkeypatch)
    nta = FakeNta(interfaces={1: "lo"}, burst=8)
    nta.queue(1, [signed(i, 60) for i in range(200)])
    rc, stdout, _ = run_cli(nta, capsys, "-i", "lo", "-c", "200", "--bulk", "--json")
    assert rc == 0 and SniffReport.from_json(stdout).frames == 200
    assert reads == [2]  # the run's start and end, for elapsed_s: none per wakeup
    reads[0] = 0
    nta.queue(1, [signed(i, 60) for i in range(200)])
    run_cli(nta, capsys, "-i", "lo", "-c", "200", "--bulk", "--json", "--idle", "5")
    assert reads[0] > 25  # a time limit reads it every wakeup (25 of them)


def test_the_device_poll_is_one_system_call(tmp_path: Path) -> None:
    """libc's poll(): records, a timeout, and a signal, which ends the wait at once."""
    fifo = tmp_path / "nta"
    os.mkfifo(fifo)
    dev = OsDevice(str(fifo))
    try:
        assert dev.poll(0) == Events.NONE
        start = time.monotonic()
        assert dev.poll(50) == Events.NONE and time.monotonic() - start >= 0.045
        os.write(dev.fd, b"x")
        assert dev.poll(1000) == Events.IN
        os.read(dev.fd, 1)
        old = signal.signal(signal.SIGALRM, lambda *_: None)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            start = time.monotonic()
            assert dev.poll(5000) == Events.NONE and time.monotonic() - start < 2
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    finally:
        dev.close()
