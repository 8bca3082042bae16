"""pysniff's Reader on the fake module: mapping, frames, the rings, errors, close."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from pysniff import abi
from pysniff.device import OsDevice
from pysniff.errors import AbiMismatch, DeviceMissing, NoSuchInterface, PermissionDenied, SniffError
from pysniff.fake import COMMIT_PRODUCER, HEADROOM, PAGE, RING_CONSUMER, FakeNta, ethernet
from pysniff.reader import Reader, commits_of


def frame(i: int, size: int = 60) -> bytes:
    return ethernet(bytes([i & 0xFF]) * size)


@pytest.fixture
def nta() -> FakeNta:
    return FakeNta(ring_entries=8, node_count=2, node_pages=16)


@pytest.fixture
def reader(nta: FakeNta) -> Iterator[Reader]:
    with Reader(["lo"], nta.open()) as r:
        yield r


def test_maps_what_the_meta_page_says(nta: FakeNta, reader: Reader) -> None:
    dev = nta.readers[0]
    assert dev.maps_made == [
        (0, PAGE, False),
        (16 * PAGE, dev.ring_size, True),
        (64 * PAGE, 2 * 16 * PAGE, False),
    ]
    assert reader.meta.ring_entries == 8
    assert reader.pools[0] == abi.PoolInfo(64 * PAGE, 2 * 16 * PAGE, 2, 16 * PAGE, 1)
    assert reader.pools[1:] == [None] * (abi.MAX_POOLS - 1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"magic": 0x12345678}, "bad magic 0x12345678"),
        ({"abi_version": 1}, "ABI version 1"),
        ({"meta_size": 120}, "meta_size is 120"),
        ({"record_size": 40}, "record_size is 40"),
        ({"commit_size": 24}, "commit_size is 24"),
        ({"ring_entries": 6}, "ring_entries 6 is not a power of two"),
        ({"commit_entries": 12}, "commit_entries 12 is not a power of two"),
        ({"ring_consumer_offset": 12}, "ring_consumer_offset 12 is misaligned"),
        ({"commit_producer_offset": 9}, "commit_producer_offset 9 is misaligned"),
        ({"commit_entries_offset": 1 << 30}, "the commit ring runs past"),
        ({"max_pools": 4}, "max_pools is 4"),
        ({"pool_info_size": 24}, "pool_info_size is 24"),
        (
            {"pools_0_mmap_size": PAGE, "pools_0_node_count": 2, "pools_0_node_size": PAGE},
            "pool 0's mmap_size is not node_count",
        ),
        (
            {"pools_7_mmap_size": 100, "pools_7_node_count": 1, "pools_7_node_size": 100},
            "pool 7's node_size 100 is not a page multiple",
        ),
    ],
)
def test_refuses_a_meta_page_it_cannot_read(override: dict[str, int], message: str) -> None:
    nta = FakeNta(meta_override=override)
    with pytest.raises(AbiMismatch, match=message):
        Reader([], nta.open())


def test_an_old_reader_is_refused_by_the_module(nta: FakeNta) -> None:
    """A reader speaking another ABI gets EPROTO at attach, never wrong frames."""
    dev = nta.open()
    with pytest.raises(OSError) as err:
        dev.ioctl(abi.IOC_ATTACH, bytearray(abi.ATTACH.pack(ifindex=1, abi_version=1)))
    assert err.value.errno == errno.EPROTO


def test_frame_fields_and_bytes_in_place(nta: FakeNta, reader: Reader) -> None:
    wire = [frame(1), ethernet(b"v" * 50, vlan_tci=0x2064), frame(3, 1400)]
    nta.deliver(1, wire[0])
    nta.deliver(1, wire[1], strip_vlan=True)
    nta.deliver(1, wire[2])
    got = list(reader.frames())
    assert [f.seq for f in got] == [0, 1, 2]
    first, tagged, big = got
    assert (first.len, tagged.len, big.len) == (74, 64, 1414)
    assert first.ifindex == 1
    assert first.protocol.to_bytes(2, "little") == b"\x08\x00"  # network byte order
    assert (first.flags, first.vlan_tci) == (0, None)
    assert (tagged.flags, tagged.vlan_tci, tagged.vlan_proto) == (abi.RECORD_VLAN, 0x2064, 0x8100)
    assert bytes(tagged.data) == wire[1][:12] + wire[1][16:]
    assert [f.wire_bytes() for f in got] == wire
    assert tagged.tstamp_ns - first.tstamp_ns == 1000
    chunks = reader.pending_chunks()
    assert [(c.node, c.offset, c.generation) for c in chunks] == [
        (0, HEADROOM, 1), (0, PAGE + HEADROOM, 1), (0, 2 * PAGE + HEADROOM, 1)
    ]  # fmt: skip


def test_an_802_1ad_tag_goes_back_with_its_own_tpid(nta: FakeNta, reader: Reader) -> None:
    """Stacked tags: the stack takes the outer (0x88a8) out, the inner stays in the data."""
    inner = ethernet(b"q" * 46, vlan_tci=0x0005)  # an 802.1Q frame ...
    wire = inner[:12] + b"\x88\xa8\x00\x07" + inner[12:]  # ... inside an 802.1ad tag
    nta.deliver(1, wire, strip_vlan=True)
    (f,) = reader.frames()
    assert (f.vlan_proto, f.vlan_tci) == (0x88A8, 0x0007)
    assert f.wire_bytes() == wire


def test_a_frame_of_several_records_is_one_frame(nta: FakeNta, reader: Reader) -> None:
    """A merged frame copied into chunks: CONTD records, read back whole and in order."""
    big = ethernet(bytes(range(256)) * 40)  # 10254 bytes: three chunks
    nta.deliver(1, frame(1))
    nta.deliver(1, big, merged=True)
    nta.deliver(1, frame(2))
    got = list(reader.frames())
    assert [f.seq for f in got] == [0, 1, 4]  # the big frame took records 1, 2 and 3
    assert [len(f.pieces) for f in got] == [1, 3, 1]
    assert got[1].flags & abi.RECORD_COPY and got[1].len == len(big)
    assert got[1].wire_bytes() == big
    assert reader.pending == 5  # a chunk each to commit
    assert reader.commit().accepted == 5 and nta.readers[0].outstanding == 5  # in the ring
    reader.wait(0)
    assert nta.readers[0].outstanding == 0


def test_frames_are_views_not_copies(nta: FakeNta, reader: Reader) -> None:
    nta.deliver(1, frame(7))
    (f,) = reader.frames()
    assert f.data.obj is reader.pool_maps[0] and f.data.readonly
    nta.readers[0].pool_maps[0][HEADROOM + 20] = 0xEE  # the module writes: the view shows it
    assert f.data[20] == 0xEE
    with pytest.raises(TypeError):
        f.data[0] = 1  # the pool is mapped read-only


def test_ring_wraps_around(nta: FakeNta, reader: Reader) -> None:
    for i in range(5):
        nta.deliver(1, frame(i))
    assert [f.seq for f in reader.frames()] == list(range(5))
    for i in range(5, 13):  # 8 records: slots 5, 6, 7, 0, ..., 4
        nta.deliver(1, frame(i))
    assert reader.ready() == 8
    got = [(f.seq, f.data[-1]) for f in reader.frames()]
    assert got == [(i, i) for i in range(5, 13)]
    assert nta.readers[0].index(RING_CONSUMER) == 13  # the consumer index, published
    assert nta.stats["ring_full"] == 0


def test_ring_full_when_the_reader_lags(nta: FakeNta, reader: Reader) -> None:
    for i in range(10):
        nta.deliver(1, frame(i))
    assert nta.stats["ring_full"] == 2 and nta.stats["published"] == 8
    assert reader.ready() == 8
    assert reader.dev_stats("lo").ring_full == 2


def test_bulk_reads_across_the_wrap(nta: FakeNta, reader: Reader) -> None:
    for i in range(6):
        nta.deliver(1, frame(i))
    assert reader.bulk().count == 6
    for i in range(6, 14):  # slots 6, 7, 0 .. 5
        nta.deliver(1, frame(i, 60 + i))
    b = reader.bulk()
    assert b.count == 8
    assert list(b.lengths()) == [74 + i for i in range(6, 14)]
    assert [v[-1] for v in b.pieces] == list(range(6, 14))
    assert list(b.ifindexes()) == [1] * 8
    assert reader.consumer == 14 and nta.readers[0].index(RING_CONSUMER) == 14


def test_bulk_commits_equal_the_records(nta: FakeNta, reader: Reader) -> None:
    for i in range(5):
        nta.deliver(1, frame(i))
    b = reader.bulk()
    records = [abi.RECORD.unpack(b.records, at) for at in range(0, len(b.records), abi.RECORD.size)]
    expect = b"".join(
        abi.COMMIT.pack({k: r[k] for k in ("node", "offset", "generation", "pool")})
        for r in records
    )
    assert commits_of(b.records) == expect
    reader.commit()
    reader.wait(0)
    assert nta.readers[0].committed == 5


def test_limit_and_abandoned_iteration(nta: FakeNta, reader: Reader) -> None:
    for i in range(6):
        nta.deliver(1, frame(i))
    assert [f.seq for f in reader.frames(limit=2)] == [0, 1]
    for f in reader.frames():
        if f.seq == 3:
            break
    assert reader.consumer == 4 and nta.readers[0].index(RING_CONSUMER) == 4
    assert reader.pending == 2  # seqs 2 and 3; 0 and 1 were committed on the way in
    assert [f.seq for f in reader.frames()] == [4, 5]


def test_commits_go_in_the_ring_without_a_system_call(nta: FakeNta, reader: Reader) -> None:
    for i in range(6):
        nta.deliver(1, frame(i))
    list(reader.frames())
    calls = reader.syscalls
    reader.commit()
    assert reader.syscalls == calls  # a store in the ring, not a write()
    assert nta.readers[0].index(COMMIT_PRODUCER) == 6 and nta.writes == []
    assert nta.readers[0].outstanding == 6  # the module has not looked yet
    reader.wait(0)  # poll: the module takes the ring
    assert nta.readers[0].outstanding == 0 and nta.readers[0].counters["ring_commits"] == 6


def test_need_wakeup_is_set_while_starved_and_cleared_once_chunks_come_back() -> None:
    nta = FakeNta(max_shared=4)
    with Reader(["lo"], nta.open(), commit=False) as r:
        for i in range(6):
            nta.deliver(1, frame(i))  # the fifth finds the reader at its limit
        assert r.need_wakeup() and nta.stats["not_shared"] == 2
        list(r.frames())
        r.commit()  # into the ring; the flag asks for a system call, and gets it
        assert not r.need_wakeup() and nta.readers[0].outstanding == 0
        assert nta.readers[0].counters["need_wakeup"] == 1


def test_at_its_limit_the_module_takes_the_ring_before_refusing(nta: FakeNta) -> None:
    """No system call needed: the next frame drains the commits already in the ring."""
    nta = FakeNta(max_shared=4)
    with Reader(["lo"], nta.open(), commit=False) as r:
        for i in range(4):
            nta.deliver(1, frame(i))
        list(r.frames())
        r.ring_commits(bytes(r._pending))  # in the ring, no poll
        r.forget_pending(4)
        assert nta.deliver(1, frame(4)) == 4 and nta.stats["not_shared"] == 0


def test_a_full_commit_ring_is_drained_with_a_poll(nta: FakeNta, reader: Reader) -> None:
    stale = abi.COMMIT.pack(node=0, offset=HEADROOM, generation=99)
    reader.ring_commits(stale * 8)  # fills the 8-entry ring
    calls = reader.syscalls
    reader.ring_commits(stale * 3)  # no room: a poll lets the module take it
    assert reader.syscalls > calls
    assert nta.bad_commits[abi.BadCommit.STATE] >= 8


def test_wait_polls_and_commits_first() -> None:
    nta = FakeNta(ring_entries=64, burst=16)
    with Reader(["lo"], nta.open()) as reader:
        assert reader.wait(0) is False
        nta.queue(1, [frame(i) for i in range(20)])
        assert reader.wait(1.0) is True and reader.ready() == 16
        list(reader.frames())
        assert reader.wait(0) is True  # committed the 16, then the next burst arrived
        assert nta.readers[0].committed == 16 and reader.ready() == 4


def test_the_wakeup_policy_holds_poll_until_records_are_due() -> None:
    nta = FakeNta(ring_entries=64, burst=4)
    with Reader(["lo"], nta.open()) as reader:
        reader.set_wakeup(frames=8, usecs=10_000_000)
        nta.queue(1, [frame(i) for i in range(8)])
        assert reader.wait(0) is False and reader.ready() == 4  # 4 pending: not due
        assert reader.wait(0) is True and reader.ready() == 8
        with pytest.raises(SniffError, match="wakeup policy 0 frames"):
            reader.set_wakeup(frames=0, usecs=0)


def test_attach_errors(nta: FakeNta, reader: Reader) -> None:
    with pytest.raises(NoSuchInterface, match="no such interface: nosuch0"):
        reader.attach("nosuch0")
    with pytest.raises(NoSuchInterface, match="no such interface: 77"):
        reader.attach(77)
    assert reader.attach("2") == 2 and set(reader.attached) == {1, 2}
    reader.detach(2)
    assert set(nta.devs) == {1}


def test_device_missing_says_load_the_module(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(DeviceMissing, match=r"modprobe nta, or insmod nta.ko"):
        Reader([], f"{tmp_path}/nta")


def test_permission_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str, flags: int) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionDenied, match="run as root"):
        OsDevice("/dev/nta")


def test_stats(nta: FakeNta, reader: Reader) -> None:
    for i in range(3):
        nta.deliver(1, frame(i))
    list(reader.frames())
    reader.commit()
    reader.wait(0)
    stats = reader.stats()
    assert stats == nta.stats_now()
    assert (stats.published, stats.committed, stats.in_use) == (3, 3, 0)
    assert reader.dev_stats("lo") == abi.DevStats(1, received=3, published=3, allocated=3)
    assert reader.reader_stats().records == 3
    with pytest.raises(NoSuchInterface):
        reader.dev_stats(3)


def test_close_returns_what_is_held(nta: FakeNta) -> None:
    r = Reader(["lo"], nta.open(), commit=False)
    for i in range(4):
        nta.deliver(1, frame(i))
    kept = list(r.frames())
    dev = nta.readers[0]
    r.close()
    assert nta.stats["returned_on_close"] == 4 and dev.outstanding == 0
    assert nta.readers == [] and nta.devs == {}
    assert bytes(kept[0].data) == frame(0)  # a kept frame still maps its bytes
    r.close()  # twice is harmless


def test_max_shared_stops_sharing() -> None:
    nta = FakeNta(max_shared=3)
    with Reader(["lo"], nta.open(), commit=False) as r:
        for i in range(5):
            nta.deliver(1, frame(i))
        assert r.ready() == 3 and nta.stats["not_shared"] == 2
        assert r.dev_stats("lo").missed == {
            "unserved": 0, "not_shared": 2, "ring_full": 0, "skipped": 0, "fault_dropped": 0
        }  # fmt: skip
