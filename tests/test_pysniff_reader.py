"""pysniff's Reader on the fake module: mapping, record parsing, the ring, errors, close."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from pysniff import abi
from pysniff.device import OsDevice
from pysniff.errors import AbiMismatch, DeviceMissing, NoSuchInterface, PermissionDenied, SniffError
from pysniff.fake import HEADROOM, PAGE, FakeNta, ethernet
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
        (16 * PAGE, nta.ring_size, True),
        (64 * PAGE, 2 * 16 * PAGE, False),
    ]
    assert reader.meta.ring_entries == 8 and reader.meta.node_size == 16 * PAGE


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"magic": 0x12345678}, "bad magic 0x12345678"),
        ({"abi_version": 2}, "ABI version 2"),
        ({"meta_size": 120}, "meta_size is 120"),
        ({"record_size": 40}, "record_size is 40"),
        ({"commit_size": 24}, "commit_size is 24"),
        ({"ring_entries": 6}, "not a power of two"),
        ({"ring_consumer_offset": 12}, "ring_consumer_offset 12 is misaligned"),
    ],
)
def test_refuses_a_meta_page_it_cannot_read(override: dict[str, int], message: str) -> None:
    nta = FakeNta(meta_override=override)
    with pytest.raises(AbiMismatch, match=message):
        Reader([], nta.open())
    assert nta.readers == []  # the device was closed on the way out


def test_record_fields_and_bytes_in_place(nta: FakeNta, reader: Reader) -> None:
    wire = [frame(1), ethernet(b"v" * 50, vlan_tci=0x2064), frame(3, 1400)]
    nta.deliver(1, wire[0])
    nta.deliver(1, wire[1], strip_vlan=True)
    nta.deliver(1, wire[2])
    got = list(reader.frames())
    assert [f.seq for f in got] == [0, 1, 2]
    first, tagged, big = got
    assert (first.node, first.chunk, first.offset) == (0, 0, HEADROOM)
    assert (tagged.node, tagged.chunk, tagged.offset) == (0, 1, PAGE + HEADROOM)
    assert (first.len, tagged.len, big.len) == (74, 64, 1414)
    assert first.generation == 1 and first.ifindex == 1
    assert first.protocol.to_bytes(2, "little") == b"\x08\x00"  # network byte order
    assert (first.flags, first.vlan_tci) == (0, None)
    assert (tagged.flags, tagged.vlan_tci) == (abi.RECORD_VLAN_STRIPPED, 0x2064)
    assert bytes(tagged.data) == wire[1][:12] + wire[1][16:]
    assert [f.wire_bytes() for f in got] == wire
    assert tagged.tstamp_ns - first.tstamp_ns == 1000


def test_frames_are_views_not_copies(nta: FakeNta, reader: Reader) -> None:
    nta.deliver(1, frame(7))
    (f,) = reader.frames()
    assert f.data.obj is reader.nodes and f.data.readonly
    nta.nodes[HEADROOM + 20] = 0xEE  # the module's memory changes: the view shows it
    assert f.data[20] == 0xEE
    with pytest.raises(TypeError):
        f.data[0] = 1  # the nodes are mapped read-only


def test_ring_wraps_around(nta: FakeNta, reader: Reader) -> None:
    for i in range(5):
        nta.deliver(1, frame(i))
    assert [f.seq for f in reader.frames()] == list(range(5))
    for i in range(5, 13):  # 8 records: slots 5, 6, 7, 0, ..., 4
        nta.deliver(1, frame(i))
    assert reader.ready() == 8
    got = [(f.seq, f.data[-1]) for f in reader.frames()]
    assert got == [(i, i) for i in range(5, 13)]
    assert nta.readers[0].index(64) == 13  # the consumer index, published
    assert nta.stats["ring_full"] == 0


def test_ring_full_when_the_reader_lags(nta: FakeNta, reader: Reader) -> None:
    for i in range(10):
        nta.deliver(1, frame(i))
    assert nta.stats["ring_full"] == 2 and nta.stats["published"] == 8
    assert reader.ready() == 8


def test_bulk_reads_across_the_wrap(nta: FakeNta, reader: Reader) -> None:
    for i in range(6):
        nta.deliver(1, frame(i))
    assert reader.bulk().count == 6
    for i in range(6, 14):  # slots 6, 7, 0 .. 5
        nta.deliver(1, frame(i, 60 + i))
    b = reader.bulk()
    assert b.count == 8
    assert list(b.lengths()) == [74 + i for i in range(6, 14)]
    assert [v[-1] for v in b.views()] == list(range(6, 14))
    assert list(b.ifindexes()) == [1] * 8
    assert reader.consumer == 14 and nta.readers[0].index(64) == 14


def test_bulk_commits_equal_the_records(nta: FakeNta, reader: Reader) -> None:
    for i in range(5):
        nta.deliver(1, frame(i))
    b = reader.bulk()
    expect = b"".join(
        abi.COMMIT.pack(node=n, offset=o, generation=g)
        for n, o, _, g, *_ in abi.RECORD.struct.iter_unpack(b.records)
    )
    assert commits_of(b.records) == expect
    assert reader.commit().accepted == 5 and nta.stats["committed"] == 5


def test_limit_and_abandoned_iteration(nta: FakeNta, reader: Reader) -> None:
    for i in range(6):
        nta.deliver(1, frame(i))
    assert [f.seq for f in reader.frames(limit=2)] == [0, 1]
    for f in reader.frames():
        if f.seq == 3:
            break
    assert reader.consumer == 4 and nta.readers[0].index(64) == 4
    assert reader.pending == 2  # seqs 2 and 3; 0 and 1 were committed on the way in
    assert [f.seq for f in reader.frames()] == [4, 5]


def test_wait_polls_and_commits_first() -> None:
    nta = FakeNta(ring_entries=64, burst=16)
    with Reader(["lo"], nta.open()) as reader:
        assert reader.wait(0) is False
        nta.queue(1, [frame(i) for i in range(20)])
        assert reader.wait(1.0) is True and reader.ready() == 16
        list(reader.frames())
        assert reader.wait(0) is True  # committed the 16, then the next burst arrived
        assert nta.stats["committed"] == 16 and reader.ready() == 4


def test_attach_errors(nta: FakeNta, reader: Reader) -> None:
    with pytest.raises(NoSuchInterface, match="no such interface: nosuch0"):
        reader.attach("nosuch0")
    with pytest.raises(NoSuchInterface, match="no such interface: 77"):
        reader.attach(77)
    with Reader([], nta.open()) as other, pytest.raises(SniffError, match="another reader"):
        other.attach("lo")
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
    stats = reader.stats()
    assert stats == nta.stats_now()
    assert (stats.published, stats.committed, stats.in_use) == (3, 3, 0)
    assert reader.dev_stats("lo") == abi.DevStats(1, allocated=3, received=3, published=3)
    with pytest.raises(NoSuchInterface):
        reader.dev_stats(3)


def test_close_returns_what_is_held(nta: FakeNta) -> None:
    r = Reader(["lo"], nta.open(), commit=False)
    for i in range(4):
        nta.deliver(1, frame(i))
    kept = list(r.frames())
    r.close()
    assert nta.stats["returned_on_close"] == 4 and nta.stats["outstanding"] == 0
    assert nta.readers == [] and nta.devs == {}
    assert bytes(kept[0].data) == frame(0)  # a kept frame still maps its bytes
    r.close()  # twice is harmless


def test_max_shared_stops_sharing() -> None:
    nta = FakeNta(max_shared=3)
    with Reader(["lo"], nta.open(), commit=False) as r:
        for i in range(5):
            nta.deliver(1, frame(i))
        assert r.ready() == 3 and nta.stats["not_shared"] == 2
