"""ntadump's capture on the host, against pysniff's fake module (tests/fakenta.py).

Every frame shape the module publishes (one chunk, a stripped VLAN tag, a
GRO-merged frame copied into chunks or held in place in several at any
offset) comes out of ntadump's pcap as it was on the wire, each record's
length equal to its bytes; every chunk goes back, and the fake's commit
checks accept each commit. Each check is shown to fail on a planted bug.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

from pysniff import abi
from pysniff.fake import HEADROOM, PAGE, Arrival, FakeNta, ethernet
from tests.fakenta import (
    Check,
    Finished,
    Ntadump,
    Planted,
    planted_bugs_caught,
)
from tests.shapes import Record, patch, read_pcap, shapes, signed

CLOCK0 = 1_700_000_000_000_000_000  # the fake's first timestamp, less 1 us


def capture(
    program: Path, preload: Path, nta: FakeNta, tmp_path: Path, *args: str
) -> tuple[Finished, list[Record], Ntadump]:
    out = tmp_path / "out.pcap"
    with Ntadump(program, preload, nta, ["-i", "1", "-w", str(out), *args]) as run:
        done = run.wait()
    return done, read_pcap(out), run


def all_back(run: Ntadump, records: int) -> None:
    """Every chunk committed, and every commit accepted by the fake's checks."""
    run.dev.drain()  # the commits ntadump left in the ring when it closed
    assert run.dev.outstanding == 0
    assert run.dev.committed == records
    assert run.dev.nta.bad_commits == [0] * abi.BAD_COMMIT_MAX


# Each check runs ntadump (the clean build, or one with a bug planted) and fails if it errs.


def check_every_shape(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    nta = FakeNta(ring_entries=64, burst=3)
    frames = shapes() * 3
    nta.queue(1, frames)
    done, got, run = capture(ntadump, preload, nta, tmp_path, "-c", str(len(frames)))
    assert done.returncode == 0, done.stderr
    assert done.closed
    assert [r.data for r in got] == [f.wire for f in frames]
    assert [r.length for r in got] == [len(f.wire) for f in frames]
    assert [r.tstamp_ns - CLOCK0 for r in got] == [1000 * (k + 1) for k in range(len(frames))]
    all_back(run, nta.stats["published"])
    assert f"{len(frames)} frames captured" in done.stderr
    assert f"1: {len(frames)} received, {len(frames)} captured, 0 not delivered" in done.stderr


def check_wrapping_record(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """offset + len past 4 GiB wraps a u32 to a small number: the bounds check must not."""
    nta = FakeNta()
    out = tmp_path / "out.pcap"
    with Ntadump(ntadump, preload, nta, ["-i", "1", "-w", str(out), "-c", "2"]) as run:

        def plant() -> None:
            for i in range(3):
                nta.deliver(1, signed(i, 60))
            patch(run.dev, 1, offset=0xFFFFF000, len=0x2000)

        run.soon(plant)
        done = run.wait()
    assert done.returncode == 0, done
    assert [r.data for r in read_pcap(out)] == [signed(0, 60), signed(2, 60)]
    assert (
        "ntadump: the frame at record 1 names an unbound pool or bytes outside its pool: "
        "not written\n"
        "2 frames captured"
    ) in done.stderr
    assert done.stderr.endswith("1 frames not written (see above)\n"), done.stderr
    run.dev.drain()
    assert run.dev.committed == 2 and run.dev.outstanding == 1  # its commit names that offset
    assert nta.bad_commits[abi.BadCommit.OFFSET] == 1


def check_open_chain_filling_the_ring(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """A ring full of one frame that never ends: nothing can follow it, so it is given up,
    its chunks back, and the capture goes on (no endless scan around the ring)."""
    nta = FakeNta(ring_entries=8)
    out = tmp_path / "out.pcap"
    with Ntadump(ntadump, preload, nta, ["-i", "1", "-w", str(out), "-c", "2"]) as run:

        def plant() -> None:
            for i in range(8):
                nta.deliver(1, signed(i, 60))
                patch(run.dev, i, flags=abi.RECORD_CONTD)

        run.soon(plant)
        run.soon(lambda: [nta.deliver(1, signed(i, 60)) for i in (8, 9)])
        done = run.wait()
    assert done.returncode == 0, done
    assert [r.data for r in read_pcap(out)] == [signed(8, 60), signed(9, 60)]
    assert "the frame at record 0 never got its last record: not written\n" in done.stderr
    assert "1 frames not written (see above)\n" in done.stderr
    all_back(run, 10)


def check_chain_scan_stops_at_the_producer(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """A frame whose records are not all published yet is left for later: the slots past
    the producer index (stale records, here marked CONTD) are never read."""
    nta = FakeNta(ring_entries=8)
    out = tmp_path / "out.pcap"
    with Ntadump(ntadump, preload, nta, ["-i", "1", "-w", str(out), "-c", "3"]) as run:

        def plant() -> None:
            for i in range(3):
                nta.deliver(1, signed(i, 60))
            patch(run.dev, 2, flags=abi.RECORD_CONTD, frame_len=120)  # continues in seq 3
            stale = abi.RECORD.unpack(memoryview(run.dev.ring), PAGE)  # record 0, published
            for seq in range(3, 8):
                slot = PAGE + seq * abi.RECORD.size
                record = abi.RECORD.pack({**stale, "flags": abi.RECORD_CONTD, "seq": seq})
                run.dev.ring[slot : slot + abi.RECORD.size] = record

        run.soon(plant)
        run.soon(lambda: nta.deliver(1, signed(3, 60)))  # the rest, in seq 3
        done = run.wait()
    assert done.returncode == 0, done
    want = [signed(0, 60), signed(1, 60), signed(2, 60) + signed(3, 60)]
    assert [r.data for r in read_pcap(out)] == want
    all_back(run, 4)


def check_lengths_follow_the_bytes(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """A stripped tag goes back at byte 12 of the frame, whichever pieces hold it; each
    record's caplen is the bytes written (so the next record starts where it should), its
    len the frame's on the wire; a frame past the snapshot length is cut there."""
    nta = FakeNta(ring_entries=128, node_count=4, node_pages=32)
    out = tmp_path / "out.pcap"
    tagged = ethernet(signed(1, 96)[14:], vlan_tci=0x123)  # 100 bytes on the wire
    huge = signed(7, 70 * 4000)
    want: list[tuple[bytes, int]] = []
    with Ntadump(ntadump, preload, nta, ["-i", "1", "-w", str(out), "-c", "7"]) as run:

        def plant() -> None:
            for chain in (
                ((HEADROOM, 6), (300, 90)),  # the tag's place is in the second piece
                ((HEADROOM, 12), (0, 0), (200, 84)),  # between pieces, an empty one too
                ((10, 2),) * 7 + ((0, 82),),
            ):
                nta.deliver(1, tagged, strip_vlan=True, chain=chain)
                want.append((tagged, 100))
            seq = nta.deliver(1, b"0123456789")  # 10 bytes said to be tagged: no room for it
            assert seq is not None
            patch(run.dev, seq, flags=abi.RECORD_VLAN, vlan_tci=5, vlan_proto=0x0081)
            want.append((b"0123456789", 10))
            for frame_len, length in ((100, 100), (20, 60)):  # the record's frame_len is off
                seq = nta.deliver(1, signed(5, 60))
                assert seq is not None
                patch(run.dev, seq, frame_len=frame_len)
                want.append((signed(5, 60), length))
            nta.deliver(1, huge, chain=((0, 4000),) * 70)
            want.append((huge[:262144], len(huge)))

        run.soon(plant)
        done = run.wait()
    assert done.returncode == 0, done
    assert [(r.data, r.length) for r in read_pcap(out)] == want
    all_back(run, 2 + 3 + 8 + 1 + 1 + 1 + 70)


def check_output_reader_gone(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """-w to a FIFO whose reader goes: write() fails (EPIPE, not SIGPIPE), and ntadump
    ends with its summary, says why, exits 1, and hands its chunks back."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    nta = FakeNta()
    with Ntadump(ntadump, preload, nta, ["-i", "1", "-w", str(fifo)]) as run:
        try:
            assert select.select([reader], [], [], run.wait_s)[0], "no pcap header"
            assert len(os.read(reader, 24)) == 24
        finally:
            os.close(reader)
        run.soon(lambda: [nta.deliver(1, signed(i, 60)) for i in range(3)])
        done = run.wait()
    assert done.returncode == 1, done
    assert "3 frames captured" in done.stderr
    assert done.stderr.endswith(f"ntadump: cannot write {fifo}: Broken pipe\n"), done.stderr
    all_back(run, 3)


def check_stdout_reader_gone(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """A line per frame into a pipe nobody reads (ntadump | head): it ends as with -w."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    nta = FakeNta(ring_entries=256, node_pages=64)
    try:
        with Ntadump(ntadump, preload, nta, ["-i", "1"], stdout=write_end) as run:
            run.soon(lambda: [nta.deliver(1, signed(i, 60)) for i in range(200)])
            done = run.wait()
    finally:
        os.close(write_end)
    assert done.returncode == 1, done
    assert done.stderr.endswith("ntadump: cannot write standard output: Broken pipe\n")
    all_back(run, 200)


def check_gone(ntadump: Path, preload: Path, tmp_path: Path, *, hangup: bool) -> None:
    """The device goes with frames still in the ring: every one is written and committed,
    then the summary, 'the interfaces are gone', exit 1. ``hangup``: the module says so
    with POLLHUP (the last frames come with it); otherwise only in NTA_DEV_GONE."""
    nta = FakeNta(ring_entries=64, burst=16, hangup=hangup)
    frames = [signed(i, 60 + i) for i in range(40)]
    nta.queue(1, frames)
    nta.unregister_after(1)  # with the last burst of 8
    done, got, run = capture(ntadump, preload, nta, tmp_path)
    assert done.returncode == 1, done
    assert [r.data for r in got] == frames
    assert "1: 40 received, 40 captured, 0 not delivered to ntadump; the device is gone\n" in (
        done.stderr
    )
    assert done.stderr.endswith("ntadump: the interfaces are gone\n"), done.stderr
    all_back(run, 40)


def check_gone_by_hangup(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    check_gone(ntadump, preload, tmp_path, hangup=True)


def check_gone_by_flag(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    check_gone(ntadump, preload, tmp_path, hangup=False)


def check_one_of_two_gone(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """One interface of two gone, and idle a while: the capture goes on with the other."""
    nta = FakeNta(hangup=False)
    out = tmp_path / "out.pcap"
    with Ntadump(ntadump, preload, nta, ["-i", "1", "-i", "2", "-w", str(out), "-c", "3"]) as run:

        def first() -> None:
            nta.deliver(1, signed(0, 60))
            nta.unregister(1)

        run.soon(first)
        for _ in range(6):  # idle polls: enough for a few looks at the flags
            run.soon(lambda: None)
        run.soon(lambda: [nta.deliver(2, signed(i, 60)) for i in (1, 2)])
        done = run.wait()
    assert done.returncode == 0, done
    assert [r.data for r in read_pcap(out)] == [signed(i, 60) for i in range(3)]
    assert "1: 1 received, 1 captured, 0 not delivered to ntadump; the device is gone\n" in (
        done.stderr
    )
    assert "gone\n" not in done.stderr.split("the device is gone\n")[1]


def check_two_pools(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """Two devices, a pool each (of other sizes): each frame read from its own pool, every
    shape, each commit naming its pool (the fake refuses a commit naming the other).
    Device 2's 30 frames reach past its pool's first node (12 chunks)."""
    nta = FakeNta(ring_entries=64, burst=4, node_count=3, node_pages=16, pool_shapes={2: (5, 12)})
    ones, twos = shapes() * 2, [Arrival(signed(i, 60 + 40 * i)) for i in range(30)]
    nta.queue(1, ones)
    nta.queue(2, twos)
    # arrive(): a burst of device 1's, then one of device 2's, at each poll.
    order: list[Arrival] = []
    for at in range(0, max(len(ones), len(twos)), 4):
        order += ones[at : at + 4] + twos[at : at + 4]
    out = tmp_path / "out.pcap"
    args = ["-i", "1", "-i", "2", "-w", str(out), "-c", str(len(order))]
    with Ntadump(ntadump, preload, nta, args) as run:
        done = run.wait()
    assert done.returncode == 0, done.stderr
    assert [r.data for r in read_pcap(out)] == [f.wire for f in order]
    assert [p.ifindex if p else None for p in run.dev.slots[:3]] == [1, 2, None]
    all_back(run, nta.stats["published"])


def check_pool_named_first_by_a_record(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """A slot bound after ntadump's attach (behind its back): the first record naming the
    pool maps it."""
    nta = FakeNta(ring_entries=64, node_count=2, node_pages=16, pool_shapes={2: (3, 8)})
    out = tmp_path / "out.pcap"
    with Ntadump(ntadump, preload, nta, ["-i", "1", "-w", str(out), "-c", "3"]) as run:

        def later() -> None:
            nta.attach(run.dev, 2, abi.ABI_VERSION)
            for i in range(3):
                nta.deliver(1 + i % 2, signed(i, 60))

        run.soon(later)
        done = run.wait()
    assert done.returncode == 0, done.stderr
    assert [r.data for r in read_pcap(out)] == [signed(i, 60) for i in range(3)]
    all_back(run, 3)


def long_chain(i: int, pieces: int, tagged: bool = False) -> Arrival:
    """A frame in ``pieces`` chunks, 16 bytes each, at offsets 0, 16, 32, ... into them."""
    size = 16 * pieces
    if not tagged:
        return Arrival(signed(i, size), chain=tuple((16 * (k % 200), 16) for k in range(pieces)))
    wire = ethernet(signed(i, size)[14:], vlan_tci=3)
    return Arrival(wire, strip_vlan=True, chain=tuple((0, 16) for _ in range(pieces)))


def check_frames_too_long_for_a_batch(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    """1100 pieces cannot go in one writev(): refused whole, chunks back, no overrun; the
    longest that fits (1021, a tag put back splitting its first piece) is written."""
    nta = FakeNta(ring_entries=2048, node_count=2, node_pages=1024, max_shared=2048)
    out = tmp_path / "out.pcap"
    fits = long_chain(2, 1021, tagged=True)
    with Ntadump(ntadump, preload, nta, ["-i", "1", "-w", str(out), "-c", "3"]) as run:

        def first() -> None:
            nta.deliver(1, signed(0, 60))
            f = long_chain(1, 1100)
            nta.deliver(1, f.wire, chain=f.chain)

        def second() -> None:
            nta.deliver(1, fits.wire, strip_vlan=True, chain=fits.chain)
            nta.deliver(1, signed(3, 60))

        run.soon(first)
        run.soon(second)
        done = run.wait()
    assert done.returncode == 0, done
    assert [r.data for r in read_pcap(out)] == [signed(0, 60), fits.wire, signed(3, 60)]
    assert (
        "ntadump: the frame at record 1 has 1100 pieces, more than 1021 fit one writev(): "
        "not written\n"
    ) in done.stderr
    all_back(run, 1 + 1100 + 1021 + 1)


def test_every_shape_comes_out_as_it_was_on_the_wire(
    ntadump: Path, preload: Path, tmp_path: Path
) -> None:
    check_every_shape(ntadump, preload, tmp_path)


@pytest.mark.parametrize("check", [check_output_reader_gone, check_stdout_reader_gone])
def test_a_reader_of_its_output_that_goes_ends_it_with_a_summary(
    check: Check, ntadump: Path, preload: Path, tmp_path: Path
) -> None:
    check(ntadump, preload, tmp_path)


@pytest.mark.parametrize("check", [check_gone_by_hangup, check_gone_by_flag, check_one_of_two_gone])
def test_it_ends_once_its_interfaces_are_gone(
    check: Check, ntadump: Path, preload: Path, tmp_path: Path
) -> None:
    check(ntadump, preload, tmp_path)


@pytest.mark.parametrize("check", [check_two_pools, check_pool_named_first_by_a_record])
def test_each_frame_comes_from_its_own_pool(
    check: Check, ntadump: Path, preload: Path, tmp_path: Path
) -> None:
    check(ntadump, preload, tmp_path)


def test_pcap_lengths_follow_the_bytes(ntadump: Path, preload: Path, tmp_path: Path) -> None:
    check_lengths_follow_the_bytes(ntadump, preload, tmp_path)


@pytest.mark.parametrize(
    "check",
    [
        check_wrapping_record,
        check_open_chain_filling_the_ring,
        check_chain_scan_stops_at_the_producer,
        check_frames_too_long_for_a_batch,
    ],
)
def test_a_frame_it_cannot_write_is_refused_counted_and_handed_back(
    check: Check, ntadump: Path, preload: Path, tmp_path: Path
) -> None:
    check(ntadump, preload, tmp_path)


PLANTED: list[Planted] = [
    (
        "v3: every record read from pool 0",
        ("const u8 *data = r->pools[rec->pool] +", "const u8 *data = r->pools[0] +"),
        check_two_pools,
    ),
    (
        "v3: pool 0's geometry for every pool",
        ("(u64)rec->node * r->pool_node_size[rec->pool]", "(u64)rec->node * r->pool_node_size[0]"),
        check_two_pools,
    ),
    (
        "v3: commits without their pool",
        ("			.pool = (u16)rec->pool,\n", ""),
        check_two_pools,
    ),
    (
        "v3: no pool mapped when a record first names it",
        ("if (!pool_map(r, p) ||", "if (!r->pools[p] ||"),
        check_pool_named_first_by_a_record,
    ),
    (
        "N3: offset + len summed in 32 bits",
        ("(u64)rec->offset + rec->len", "rec->offset + rec->len"),
        check_wrapping_record,
    ),
    (
        "N1: caplen from the record, not from what is written",
        (".caplen = SNAPLEN - room,", ".caplen = first->frame_len + (tagged ? 4 : 0),"),
        check_lengths_follow_the_bytes,
    ),
    (
        "N1: the tag put back only in a first piece of 12 bytes or more",
        ("whole + rec->len >= 12", "k == 0 && rec->len >= 12"),
        check_lengths_follow_the_bytes,
    ),
    (
        "N5: SIGPIPE kills it silently",
        ("	signal(SIGPIPE, SIG_IGN);\n", ""),
        check_output_reader_gone,
    ),
    (
        "N5: a failed line to stdout ignored",
        ("b->hdr[b->nhdr - 1].len) < 0)", "b->hdr[b->nhdr - 1].len) < -1)"),
        check_stdout_reader_gone,
    ),
    (
        "L11: POLLHUP not looked at (it spins)",
        ("revents & (POLLHUP | POLLERR)", "revents & 0"),
        check_gone_by_hangup,
    ),
    (
        "L11: gone, and the ring not emptied first",
        (
            "gone = interfaces_gone(&r, polled, pfd.revents, ifs, nifs);",
            "gone = interfaces_gone(&r, polled, pfd.revents, ifs, nifs);\n\t\tif (gone)\n"
            "\t\t\tbreak;",
        ),
        check_gone_by_hangup,
    ),
    (
        "N4: NTA_DEV_GONE never asked",
        ("++r->idle_polls % GONE_CHECK_POLLS", "++r->idle_polls % GONE_CHECK_POLLS || 1"),
        check_gone_by_flag,
    ),
    (
        "N4: one device gone taken for all",
        ("|| !(d.flags & NTA_DEV_GONE)", "&& !(d.flags & NTA_DEV_GONE)"),
        check_one_of_two_gone,
    ),
    (
        "N2: the CONTD scan runs past the producer index",
        ("for (at = r->cons; at < end; at++)", "for (at = r->cons; at < end || at >= end; at++)"),
        check_chain_scan_stops_at_the_producer,
    ),
    (
        "N2: a ring full of one open frame waits for ever",
        ("if (!pieces && !last && end - r->cons < entries)", "if (!pieces && (!last || last))"),
        check_open_chain_filling_the_ring,
    ),
    (
        "N2: no limit on a frame's pieces",
        ("	if (pieces > MAX_PIECES)\n		return FRAME_TOO_LONG;\n", ""),
        check_frames_too_long_for_a_batch,
    ),
]


test_a_planted_bug_is_caught = planted_bugs_caught(PLANTED)
