"""Several readers of one device, and a reader of several devices (ABI v3), on the fake.

A device's pool is shared by every reader attaching it: each frame is
published to each of them (the same chunk, node, offset and generation, a
record in each ring), each admitted on its own, and a chunk goes back to the
pool only once every reader it was published to let go of it. A reader maps
one pool per device it attached, a slot of meta.pools[] each.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from pysniff import abi
from pysniff.errors import SniffError
from pysniff.fake import HEADROOM, PAGE, FakeNta
from pysniff.reader import Chunk, Reader
from tests.shapes import deliver as deliver_shape
from tests.shapes import patch, records_of, shapes, signed


def free_chunks(nta: FakeNta, ifindex: int) -> int:
    return len(nta.pools[ifindex].free)


@pytest.fixture
def nta() -> FakeNta:
    return FakeNta(ring_entries=64, node_count=2, node_pages=16)


@pytest.fixture
def two(nta: FakeNta) -> Iterator[tuple[Reader, Reader]]:
    """Two readers of lo, committing only when told."""
    with (
        Reader(["lo"], nta.open(), commit=False) as a,
        Reader(["lo"], nta.open(), commit=False) as b,
    ):
        yield a, b


def test_two_readers_of_a_device_each_get_every_frame_in_place(
    nta: FakeNta, two: tuple[Reader, Reader]
) -> None:
    """Every shape, to both: the same bytes, the same chunks (node, offset, generation,
    pool); a chunk goes back to the pool once both committed it, not before."""
    a, b = two
    frames = shapes()
    for f in frames:
        deliver_shape(nta, 1, f)
    got_a = [f.wire_bytes() for f in a.frames()]
    got_b = [f.wire_bytes() for f in b.frames()]
    assert got_a == got_b == [f.wire for f in frames]
    held = a.pending_chunks()
    assert held == b.pending_chunks() and len(held) == sum(map(records_of, frames))
    total = nta.node_count * nta.node_pages
    assert free_chunks(nta, 1) == total - len(held)
    assert a.commit().accepted == len(held)
    a.kick()
    assert nta.readers[0].committed == len(held)
    assert free_chunks(nta, 1) == total - len(held)  # b still holds every one
    stats = a.stats()
    assert (stats.outstanding, stats.published, stats.in_use) == (
        len(held),
        2 * len(held),
        len(held),
    )
    b.commit()
    b.kick()
    assert free_chunks(nta, 1) == total
    assert a.stats().in_use == 0 and nta.bad_commits == [0] * abi.BAD_COMMIT_MAX


def test_a_chunk_committed_twice_by_one_reader_is_refused_while_the_other_holds_it(
    nta: FakeNta, two: tuple[Reader, Reader]
) -> None:
    """One reader's commit releases its share only: its second is refused (state), and
    the chunk stays out of the pool for the other."""
    a, b = two
    nta.deliver(1, signed(0, 60))
    list(a.frames())
    list(b.frames())
    (c,) = a.pending_chunks()
    one = abi.COMMIT.pack(c._asdict())
    assert a.write_commits(one) == 1 and a.write_commits(one) == 0
    assert nta.bad_commits[abi.BadCommit.STATE] == 1 and free_chunks(nta, 1) == 31
    assert b.write_commits(one) == 1 and free_chunks(nta, 1) == 32


def test_a_stalled_reader_misses_frames_the_other_still_gets() -> None:
    """A reader at max_shared is not fed and counts not_shared; the other gets every frame."""
    nta = FakeNta(ring_entries=64, node_count=4, node_pages=16, max_shared=4)
    with (
        Reader(["lo"], nta.open(), commit=False) as stalled,
        Reader(["lo"], nta.open()) as live,
    ):
        got: list[bytes] = []
        for i in range(10):
            nta.deliver(1, signed(i, 60))
            got += [bytes(f.data) for f in live.frames()]
        assert got == [signed(i, 60) for i in range(10)]
        assert live.dev_stats("lo").published == 10 and live.dev_stats("lo").not_shared == 0
        lagging = stalled.dev_stats("lo")
        assert (lagging.received, lagging.published, lagging.not_shared) == (10, 4, 6)
        assert [bytes(f.data) for f in stalled.frames()] == [signed(i, 60) for i in range(4)]
        assert stalled.need_wakeup() and not live.need_wakeup()
        assert nta.stats["not_shared"] == 6


def test_a_full_ring_is_one_readers_miss() -> None:
    nta = FakeNta(ring_entries=8, node_count=2, node_pages=16)
    with Reader(["lo"], nta.open()) as full, Reader(["lo"], nta.open()) as live:
        for i in range(12):
            nta.deliver(1, signed(i, 60))
            list(live.frames())
        assert (full.dev_stats("lo").ring_full, live.dev_stats("lo").ring_full) == (4, 0)
        assert live.dev_stats("lo").published == 12 and full.ready() == 8


def test_closing_a_reader_frees_its_share_only(nta: FakeNta, two: tuple[Reader, Reader]) -> None:
    a, b = two
    for i in range(5):
        nta.deliver(1, signed(i, 60))
    kept = [bytes(f.data) for f in b.frames()]
    list(a.frames())
    a.close()
    assert nta.stats["returned_on_close"] == 5 and free_chunks(nta, 1) == 32 - 5
    assert kept == [signed(i, 60) for i in range(5)]
    nta.deliver(1, signed(5, 60))  # the device goes on, for b alone
    assert [bytes(f.data) for f in b.frames()] == [signed(5, 60)]
    assert b.commit().accepted == 6
    b.kick()
    assert free_chunks(nta, 1) == 32 and nta.bad_commits == [0] * abi.BAD_COMMIT_MAX


@pytest.mark.parametrize("via", ["write", "ring"])
@pytest.mark.parametrize("pool", [1, abi.MAX_POOLS, 0xFFFF])
def test_a_commit_naming_an_unbound_pool_is_refused_and_changes_nothing(
    nta: FakeNta, two: tuple[Reader, Reader], via: str, pool: int
) -> None:
    """Slot 1 unbound, slot 8 past the table: NTA_BAD_POOL, checked before the node (a
    node that would be good in pool 0 is named), nothing freed, the chunk still good."""
    a, _ = two
    nta.deliver(1, signed(0, 60))
    list(a.frames())
    (c,) = a.pending_chunks()
    bad = abi.COMMIT.pack(c._asdict(), pool=pool)
    if via == "write":
        assert a.write_commits(bad) == 0
    else:
        a.ring_commits(bad)
        a.kick()
    assert nta.bad_commits[abi.BadCommit.POOL] == 1 and sum(nta.bad_commits) == 1
    assert nta.readers[0].outstanding == 1 and free_chunks(nta, 1) == 31
    assert a.commit().accepted == 1
    a.kick()
    assert nta.readers[0].committed == 1 and sum(nta.bad_commits) == 1


def test_reserved_is_checked_before_the_pool(nta: FakeNta, two: tuple[Reader, Reader]) -> None:
    a, _ = two
    nta.deliver(1, signed(0, 60))
    list(a.frames())
    (c,) = a.pending_chunks()
    assert a.write_commits(abi.COMMIT.pack(c._asdict(), pool=5, reserved=1)) == 0
    assert nta.bad_commits[abi.BadCommit.RESERVED] == 1 and sum(nta.bad_commits) == 1


def test_a_reader_of_two_devices_maps_two_pools() -> None:
    """Pools of another size each (a reader reading pool 1 with pool 0's geometry reads
    the wrong bytes); each device's frames come from its own pool, committed to it."""
    nta = FakeNta(ring_entries=64, node_count=2, node_pages=16, pool_shapes={2: (3, 8)})
    with Reader(["lo", 2], nta.open()) as r:
        assert [p.ifindex if p else None for p in r.pools[:3]] == [1, 2, None]
        assert r.pools[1] is not None
        assert r.pools[1] == abi.PoolInfo(r.pools[1].mmap_offset, 3 * 8 * PAGE, 3, 8 * PAGE, 2)
        for i in range(40):
            nta.deliver(1 + i % 2, signed(i, 60 + i))
        got = [(f.ifindex, bytes(f.data)) for f in r.frames()]
        assert got == [(1 + i % 2, signed(i, 60 + i)) for i in range(40)]
        assert {c.pool for c in r.pending_chunks()} == {0, 1}
        assert [c.pool for c in r.pending_chunks()] == [i % 2 for i in range(40)]
        r.commit()
        r.kick()
        assert free_chunks(nta, 1) == 32 and free_chunks(nta, 2) == 24
        assert nta.readers[0].committed == 40 and nta.bad_commits == [0] * abi.BAD_COMMIT_MAX


@pytest.mark.parametrize("path", ["frames", "bulk"])
def test_a_pool_is_mapped_when_a_record_first_names_it(nta: FakeNta, path: str) -> None:
    """Attached behind the Reader's back (no mapping after the attach): the first record
    naming the pool maps it, as the header allows."""
    with Reader([], nta.open()) as r:
        r.dev.ioctl(abi.IOC_ATTACH, bytearray(abi.ATTACH.pack(ifindex=2, abi_version=3)))
        assert r.pools == [None] * abi.MAX_POOLS
        for i in range(3):
            nta.deliver(2, signed(i, 60))
        if path == "frames":
            got = [bytes(f.data) for f in r.frames()]
        else:
            got = [b"".join(p) for p in r.bulk().frames()]
        assert got == [signed(i, 60) for i in range(3)] and not r.rejected
        assert r.pools[0] is not None and r.pools[0].ifindex == 2


@pytest.mark.parametrize("path", ["frames", "bulk"])
@pytest.mark.parametrize(
    ("pool", "refused"), [(3, abi.BadCommit.POOL), (1 << 16, abi.BadCommit.RESERVED)]
)
def test_a_record_naming_an_unbound_pool_is_outside(
    nta: FakeNta, path: str, pool: int, refused: abi.BadCommit
) -> None:
    """Refused as outside, the others read; its commit names the pool as the record did
    (its high half, past a u16, in reserved): refused, never another pool's chunk."""
    with Reader(["lo"], nta.open()) as r:
        for i in range(3):
            nta.deliver(1, signed(i, 60))
        patch(nta.readers[0], 1, pool=pool)
        if path == "frames":
            got = [bytes(f.data) for f in r.frames()]
        else:
            got = [b"".join(p) for p in r.bulk().frames()]
        assert got == [signed(0, 60), signed(2, 60)] and sum(r.rejected.values()) == 1
        r.commit()
        r.kick()
        assert nta.bad_commits[refused] == 1 and sum(nta.bad_commits) == 1
        assert nta.readers[0].committed == 2


def test_the_seventeenth_reader_of_a_device_is_refused(nta: FakeNta) -> None:
    readers = [Reader(["lo"], nta.open()) for _ in range(abi.POOL_READERS)]
    try:
        with Reader([], nta.open()) as late:
            with pytest.raises(OSError) as err:
                late.dev.ioctl(abi.IOC_ATTACH, bytearray(abi.ATTACH.pack(ifindex=1, abi_version=3)))
            assert err.value.errno == errno.EUSERS
            with pytest.raises(SniffError, match="lo: it already has 16 readers"):
                late.attach("lo")
            late.attach(2)  # another device is another pool
            readers[0].close()
            late.attach("lo")  # a reader left: room again
            nta.deliver(1, signed(0, 60))
            assert [bytes(f.data) for f in late.frames()] == [signed(0, 60)]
    finally:
        for r in readers:
            r.close()


def test_a_readers_ninth_pool_is_refused() -> None:
    """Eight slots in a reader's life: detaching keeps the slot, re-attaching reuses it."""
    nta = FakeNta(interfaces={i: f"veth{i}" for i in range(1, 11)}, node_count=1, node_pages=1)
    with Reader([], nta.open()) as r:
        for i in range(1, 9):
            for _ in range(2):  # the second attach is the same slot's
                r.attach(i)
                r.detach(i)
        assert [p.ifindex if p else None for p in r.pools] == list(range(1, 9))
        with pytest.raises(SniffError, match="this reader has bound 8 pools"):
            r.attach(9)
        r.attach(3)  # its slot is still bound
        nta.deliver(3, signed(0, 60))
        assert [(f.ifindex, bytes(f.data)) for f in r.frames()] == [(3, signed(0, 60))]
        assert r.pending_chunks() == [Chunk(0, HEADROOM, 1, 2)]
