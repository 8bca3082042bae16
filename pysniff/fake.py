"""An in-memory NTA for host-only tests: the module's shared memory and its rules.

``FakeNta`` lays its memory out like the module: per reader, a meta page, a
ring mapping (record ring, commit ring, their indices) and the pools it
bound (meta.pools[]), all in one memfd (``FakeDevice.fd``) at the mmap
offsets the meta page gives, which the Reader maps through the same
``Device`` calls it uses on /dev/nta (and ntadump maps in its host tests).
Its mmap offsets differ from the module's on purpose (a reader must take
them from the meta page).

ABI v3: a device's pool (``_Pool``) is made by its first reader's attach
and shared by every reader attaching it (at most NTA_POOL_READERS, then
EUSERS); a reader binds at most NTA_MAX_POOLS pools in its life (then
ENOSPC), a slot each, kept until it closes. A frame the device receives is
published to every reader of the device: the same chunk, node, offset and
generation, a record in each reader's ring; each reader is admitted on its
own (one at max_shared or with a full ring is not fed, and counts it, the
others are). A chunk goes back to the pool once every reader it was
published to committed it or closed. The module's readers map the same
pages; here each reader's memfd holds its own copy of each pool it bound,
written by the fake wherever the pool is written (a reader's mapping is
read-only, so it cannot tell the difference).

Commits are checked in the order ``nta_commit_check()`` uses (reserved,
pool, node, offset page, state, generation, offset), refusals counted per
reason, a write() stops at the first refused commit, the commit ring is
drained when the reader is at max_shared, when a pool it reads runs empty,
on poll and on write, and NTA_COMMIT_NEED_WAKEUP is raised and cleared as
the module does: tests of batching, the commit ring and malformed commits
check the same arithmetic the kernel does.

``deliver()`` is the producer; ``queue()`` holds frames back until a
reader polls, like traffic arriving while it waits. A frame is published in
one chunk, or (``merged``) copied into chunks as NTA_RECORD_COPY pieces, or
(``chain``) in place in several chunks, a non-COPY piece per chunk at any
offset: how the module publishes a GRO-merged frame (the head's chunk, then
each merged segment's). ``unregister()`` makes a device go away: its readers
see NTA_DEV_GONE, and POLLHUP from poll() once every device they attached is
gone (``hangup=False``: a module that only sets the flag).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pysniff import abi
from pysniff.device import Events

PAGE = mmap.PAGESIZE
HEADROOM = 66  # NET_SKB_PAD + NET_IP_ALIGN: where a driver puts the MAC header
# The ring mapping's first page, as the module lays it out.
RING_PRODUCER, RING_CONSUMER, COMMIT_PRODUCER, COMMIT_CONSUMER, COMMIT_FLAGS = 0, 64, 128, 192, 256
RING_MMAP_OFFSET = 16 * PAGE  # the module's differ: a reader must read them from the meta page
POOL_GAP = 3 * PAGE  # between one pool slot's mapping and the next one's, in a reader's file


@dataclass(eq=False)
class _Chunk:
    pool: _Pool
    node: int
    index: int
    generation: int = 0
    busy: bool = False
    readers: set[FakeDevice] = field(default_factory=set)  # shared with: non-empty
    frame_offset: int = 0


@dataclass(eq=False)
class _Pool:
    """One device's pool, shared by the readers attaching it."""

    ifindex: int
    node_count: int
    node_pages: int
    chunks: list[list[_Chunk]] = field(default_factory=list)
    free: deque[_Chunk] = field(default_factory=deque)
    readers: list[_Attached] = field(default_factory=list)  # attached now, in attach order
    bound: list[FakeDevice] = field(default_factory=list)  # every reader with a slot for it

    def __post_init__(self) -> None:
        self.chunks = [
            [_Chunk(self, i, j) for j in range(self.node_pages)] for i in range(self.node_count)
        ]
        self.free.extend(c for node in self.chunks for c in node)

    @property
    def node_size(self) -> int:
        return self.node_pages * PAGE

    @property
    def size(self) -> int:
        return self.node_count * self.node_size


@dataclass(eq=False)
class _Attached:
    reader: FakeDevice
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(abi.DEV_STATS_COUNTERS, 0))
    flags: int = 0  # NTA_DEV_*


# A piece of a chain: (offset in its chunk, length), or (offset, length, copied).
Piece = tuple[int, int] | tuple[int, int, bool]
# A frame's piece as published: its chunk, offset in the node, length, NTA_RECORD_* of its own.
Published = tuple[_Chunk, int, int, int]


@dataclass(frozen=True)
class Arrival:
    """A frame as the stack hands it to the module (see ``FakeNta.deliver``)."""

    wire: bytes
    strip_vlan: bool = False
    merged: bool = False
    chain: tuple[Piece, ...] = ()


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


class FakeNta:
    """The module: counters, devices and their pools, readers.

    ``node_count`` and ``node_pages`` shape every device's pool;
    ``pool_shapes`` gives some devices (by ifindex) another: (node_count, node_pages).
    """

    def __init__(
        self,
        *,
        node_count: int = 4,
        node_pages: int = 8,
        ring_entries: int = 64,
        max_shared: int = 1024,
        max_commit_batch: int = 1024,
        interfaces: Mapping[int, str] | None = None,
        burst: int = 16,
        meta_override: Mapping[str, int] | None = None,
        hangup: bool = True,
        pool_shapes: Mapping[int, tuple[int, int]] | None = None,
    ) -> None:
        self.node_count, self.node_pages = node_count, node_pages
        self.node_size = node_pages * PAGE
        self.pool_shapes = dict(pool_shapes or {})
        self.ring_entries = ring_entries
        self.max_shared = max_shared
        self.max_commit_batch = max_commit_batch
        self.interfaces = dict(interfaces or {1: "lo", 2: "eth0", 3: "eth1"})
        self.burst = burst
        self.meta_override = dict(meta_override or {})
        self.hangup = hangup
        self.stats: dict[str, int] = dict.fromkeys(abi.STATS_COUNTERS, 0)
        self.bad_commits = [0] * abi.BAD_COMMIT_MAX
        self.pools: dict[int, _Pool] = {}  # by ifindex: made by the first attach
        self.queued: dict[int, deque[Arrival]] = {}
        self.leaving: set[int] = set()  # devices unregistered once their queue is empty
        self.readers: list[FakeDevice] = []
        self.writes: list[int] = []  # commits per write() call, as the module saw them
        self.clock_ns = 1_700_000_000_000_000_000

    def open(self, path: str = "/dev/nta") -> FakeDevice:
        dev = FakeDevice(self)
        self.readers.append(dev)
        return dev

    @property
    def devs(self) -> dict[int, list[_Attached]]:
        """The attached devices: each one's readers, in attach order."""
        return {i: p.readers for i, p in self.pools.items() if p.readers}

    # -- the pools -----------------------------------------------------------------

    def take(self, pool: _Pool) -> _Chunk | None:
        """nta_pool_take_locked(): an empty pool takes its readers' commit rings first."""
        if not pool.free:
            for b in list(pool.bound):
                b.drain()
        if not pool.free:
            self.stats["pool_empty"] += 1
            return None
        c = pool.free.popleft()
        c.busy = True
        c.generation = (c.generation + 1) & 0xFFFFFFFF
        self.stats["allocated"] += 1
        return c

    def free_chunk(self, pool: _Pool, c: _Chunk) -> None:
        c.readers.clear()
        c.busy = False
        pool.free.append(c)
        self.stats["freed"] += 1

    def put(self, pool: _Pool, c: _Chunk, offset: int, data: bytes) -> None:
        """The pool's memory written: in every copy of it (a copy per reader that bound it)."""
        at = c.node * pool.node_size + offset
        for r in pool.bound:
            if not r.closed:
                r.pool_memory(pool)[at : at + len(data)] = data

    # -- the producer ---------------------------------------------------------

    def deliver(
        self,
        ifindex: int,
        wire: bytes,
        *,
        strip_vlan: bool = False,
        headroom: int = HEADROOM,
        merged: bool = False,
        chain: Sequence[Piece] = (),
    ) -> int | None:
        """One frame received on ``ifindex``, for every reader of it: the first record's
        seq in the first reader fed (its first attached that took it), None if none was.

        ``strip_vlan``: the stack took the outer tag out (802.1Q or 802.1ad).
        ``merged``: the stack held it in several buffers (GRO), so the module
        copies it into chunks, a record per chunk (NTA_RECORD_COPY).
        ``chain``: the stack holds it in place in several chunks (GRO merged
        its segments), published as is: (offset in its chunk, length) per
        piece, the head first, a chunk each, the lengths adding up to the
        frame (after ``strip_vlan``); (offset, length, True) is a piece the
        module copied into its chunk (NTA_RECORD_COPY), as it does the pieces
        of a merged frame that lie outside the pool.
        """
        pool = self.pools.get(ifindex)
        if pool is None or not pool.readers:
            raise ValueError(f"ifindex {ifindex} is not attached: the module would not see it")
        data, tci, tpid = wire, None, 0
        if strip_vlan and wire[12:14] in (b"\x81\x00", b"\x88\xa8"):
            data, tci = wire[:12] + wire[16:], int.from_bytes(wire[14:16], "big")
            tpid = int.from_bytes(wire[12:14], "big")
        for a in pool.readers:
            a.stats["received"] += 1
        if merged:
            return self.copy_in(pool, data, tci, tpid)
        if not chain:
            if headroom + len(data) > PAGE:  # the tap: a frame must fit its chunk
                self._count(pool, "skipped")
                return None
            chain = ((headroom, len(data)),)
        return self.in_place(pool, data, tci, tpid, chain)

    def _count(self, pool: _Pool, name: str) -> None:
        """A frame none of the device's readers got: counted for each, once module-wide."""
        for a in pool.readers:
            a.stats[name] += 1
        self.stats[name] += 1

    def queue(
        self,
        ifindex: int,
        frames: Iterable[bytes | Arrival],
        *,
        strip_vlan: bool = False,
        merged: bool = False,
    ) -> None:
        """Frames that arrive ``burst`` at a time while a reader polls (bytes: shaped by the
        keywords)."""
        q = self.queued.setdefault(ifindex, deque())
        q.extend(
            f if isinstance(f, Arrival) else Arrival(f, strip_vlan=strip_vlan, merged=merged)
            for f in frames
        )

    def arrive(self) -> int:
        """Deliver the next burst of queued frames on every attached interface; a device
        leaving (``unregister_after``) goes once its queue is empty."""
        n = 0
        devs = self.devs
        for ifindex, q in self.queued.items():
            if ifindex not in devs:
                continue
            for _ in range(min(self.burst, len(q))):
                f = q.popleft()
                self.deliver(
                    ifindex, f.wire, strip_vlan=f.strip_vlan, merged=f.merged, chain=f.chain
                )
                n += 1
        for ifindex in [i for i in self.leaving if not self.queued.get(i)]:
            self.unregister(ifindex)
        return n

    def unregister(self, ifindex: int) -> None:
        """The device goes (unregistered, or moved to another namespace): its readers see
        NTA_DEV_GONE in their dev stats. Its pool stays until its chunks come back."""
        self.leaving.discard(ifindex)
        self.interfaces.pop(ifindex, None)
        pool = self.pools.get(ifindex)
        if pool is not None:
            for a in pool.readers:
                a.flags |= abi.DEV_GONE
            pool.readers = []

    def unregister_after(self, ifindex: int) -> None:
        """The device goes once every frame queued for it has arrived."""
        self.leaving.add(ifindex)

    def publish(
        self, pool: _Pool, pieces: list[Published], data: bytes, tci: int | None, tpid: int
    ) -> int | None:
        """One frame's pieces to every reader of the pool that admits them, each its own
        records; the chunks shared with those. The first fed reader's first seq, or None
        (nobody took it: the caller frees the chunks)."""
        fed = [a for a in pool.readers if a.reader.admit(a, len(pieces))]
        if not fed:
            return None
        self.clock_ns += 1000
        seqs = [a.reader.publish(a, pool, pieces, data, tci, tpid, self.clock_ns) for a in fed]
        for c, offset, _, _ in pieces:
            c.readers = {a.reader for a in fed}
            c.frame_offset = offset
        return seqs[0]

    def in_place(
        self, pool: _Pool, data: bytes, tci: int | None, tpid: int, chain: Sequence[Piece]
    ) -> int | None:
        """nta_capture_linear(), and a GRO-merged frame published in place: each piece in
        the chunk the driver received it in, at its offset there, a record each (or, a
        piece marked copied, in a chunk the module copied it into: NTA_RECORD_COPY)."""
        if sum(piece[1] for piece in chain) != len(data):
            raise ValueError(f"pieces {chain} do not add up to the frame's {len(data)} bytes")
        if any(piece[0] < 0 or piece[0] + piece[1] > PAGE for piece in chain):
            raise ValueError(f"pieces {chain} do not fit their chunks")
        taken: list[_Chunk] = []
        for _ in chain:
            c = self.take(pool)
            if c is None:  # the pool was empty at refill: a buffer from elsewhere
                for a in pool.readers:
                    for name in ("fallback", "pool_empty", "unserved"):
                        a.stats[name] += 1
                self.stats["unserved"] += 1
                for t in taken:
                    self.free_chunk(pool, t)
                return None
            for a in pool.readers:
                a.stats["allocated"] += 1
            taken.append(c)
        pieces: list[Published] = []
        at = 0
        for c, (offset, length, *copied) in zip(taken, chain, strict=True):
            self.put(pool, c, c.index * PAGE + offset, data[at : at + length])
            flags = abi.RECORD_COPY if copied and copied[0] else 0
            pieces.append((c, c.index * PAGE + offset, length, flags))
            at += length
        seq = self.publish(pool, pieces, data, tci, tpid)
        if seq is None:  # the stack is done with them, nobody holds them: back to the pool
            for c in taken:
                self.free_chunk(pool, c)
        return seq

    def copy_in(self, pool: _Pool, data: bytes, tci: int | None, tpid: int) -> int | None:
        """nta_capture_copy(): a frame the stack holds in several buffers, into chunks."""
        taken: list[_Chunk] = []
        for _ in range(-(-len(data) // PAGE)):
            c = self.take(pool)
            if c is None:
                break
            taken.append(c)
        pieces: list[Published] = []
        for k, c in enumerate(taken):
            part = data[k * PAGE : (k + 1) * PAGE]
            self.put(pool, c, c.index * PAGE, part)
            pieces.append((c, c.index * PAGE, len(part), abi.RECORD_COPY))
        seq = None
        if len(taken) * PAGE >= len(data):
            seq = self.publish(pool, pieces, data, tci, tpid)
            if seq is not None:  # else counted by admit
                self.stats["copied"] += 1
        else:
            self._count(pool, "skipped")
        if seq is None:
            for c in taken:
                self.free_chunk(pool, c)
        return seq

    # -- ioctls ---------------------------------------------------------------

    def stats_bytes(self) -> bytes:
        live = {"committed": 0, "outstanding": 0, "in_use": 0}
        for r in self.readers:
            live["committed"] += r.committed
            live["outstanding"] += r.outstanding
        for pool in self.pools.values():
            live["in_use"] += sum(c.busy for node in pool.chunks for c in node)
        bad = {f"bad_commits_{i}": n for i, n in enumerate(self.bad_commits)}
        counters = dict(self.stats)
        for key, value in live.items():
            counters[key] += value
        return abi.STATS.pack({**counters, **bad})

    def stats_now(self) -> abi.Stats:
        return abi.Stats.from_raw(self.stats_bytes())

    def attach(self, r: FakeDevice, ifindex: int, abi_version: int) -> None:
        """nta_attach(): the device's pool made if it has none, a slot of the reader bound
        to it if it has none (ENOSPC past NTA_MAX_POOLS), the reader one of the pool's
        (EUSERS past NTA_POOL_READERS)."""
        if abi_version != abi.ABI_VERSION:
            raise _oserror(errno.EPROTO)
        if ifindex not in self.interfaces:
            raise _oserror(errno.ENODEV)
        pool = self.pools.get(ifindex)
        if pool is not None and any(a.reader is r for a in pool.readers):
            return
        if pool is not None and len(pool.readers) >= abi.POOL_READERS:
            raise _oserror(errno.EUSERS)
        if (pool is None or pool not in r.slots) and None not in r.slots:
            raise _oserror(errno.ENOSPC)
        if pool is None:
            nodes, pages = self.pool_shapes.get(ifindex, (self.node_count, self.node_pages))
            pool = self.pools[ifindex] = _Pool(ifindex, nodes, pages)
        if pool not in r.slots:
            r.bind(pool)
        a = r.watched.get(ifindex)
        if a is None or a.flags & abi.DEV_GONE:
            a = r.watched[ifindex] = _Attached(r)
        pool.readers.append(a)

    def detach(self, r: FakeDevice, ifindex: int | None) -> None:
        for index, pool in self.pools.items():
            if ifindex in (None, index):
                pool.readers = [a for a in pool.readers if a.reader is not r]


class FakeDevice:
    """One open file of the fake module: a reader with its rings and its pool slots."""

    def __init__(self, nta: FakeNta) -> None:
        self.nta = nta
        n = nta
        records = _pages(n.ring_entries * abi.RECORD.size)
        commits = _pages(n.ring_entries * abi.COMMIT.size)
        self.ring_size = PAGE + records + commits
        self.commit_at = PAGE + records
        self.next_pool_offset = RING_MMAP_OFFSET + max(48 * PAGE, _pages(self.ring_size))
        self.meta_values = {
            "magic": abi.MAGIC, "abi_version": abi.ABI_VERSION, "meta_size": abi.META.size,
            "record_size": abi.RECORD.size, "commit_size": abi.COMMIT.size, "page_size": PAGE,
            "max_pools": abi.MAX_POOLS, "pool_info_size": abi.POOL_INFO.size,
            "chunk_size": PAGE, "ring_entries": n.ring_entries, "commit_entries": n.ring_entries,
            "max_shared": n.max_shared, "max_commit_batch": n.max_commit_batch,
            "ring_mmap_offset": RING_MMAP_OFFSET, "ring_mmap_size": self.ring_size,
            "ring_producer_offset": RING_PRODUCER, "ring_consumer_offset": RING_CONSUMER,
            "ring_records_offset": PAGE, "commit_producer_offset": COMMIT_PRODUCER,
            "commit_consumer_offset": COMMIT_CONSUMER, "commit_flags_offset": COMMIT_FLAGS,
            "commit_entries_offset": self.commit_at,
            **n.meta_override,
        }  # fmt: skip
        # The mappings in one file, each at its mmap offset (as one /dev/nta is).
        self.fd = os.memfd_create("nta", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.next_pool_offset)
        os.pwrite(self.fd, abi.META.pack(self.meta_values), 0)
        self.ring = mmap.mmap(self.fd, self.ring_size, offset=RING_MMAP_OFFSET)
        # Pool slots, as meta.pools[] says: the pool, and its mmap offset in this file.
        self.slots: list[_Pool | None] = [None] * abi.MAX_POOLS
        self.pool_offsets: list[int] = [0] * abi.MAX_POOLS
        self.pool_maps: dict[int, mmap.mmap] = {}  # by slot: this file's copy of the pool
        self.watched: dict[int, _Attached] = {}
        self.seq = 0
        self.commit_cons = 0
        self.outstanding = 0
        self.committed = 0
        self.stamps: dict[int, float] = {}  # record index -> publish time (monotonic)
        self.wakeup = (1, 0)  # frames, usecs: every record is due at once
        # What the reader chose: kept and checked as the module checks them. The fake
        # publishes what a test hands it, so it runs no filter and sends no frame.
        self.direction = abi.Direction.IN
        self.filter: list[tuple[int, int, int, int]] | None = None
        self.counters = dict.fromkeys(abi.READER_STATS_COUNTERS, 0)
        self.closed = False
        self.maps_made: list[tuple[int, int, bool]] = []
        self.ioctls: Counter[int] = Counter()  # by request

    # -- the pool slots -----------------------------------------------------------

    def bind(self, pool: _Pool) -> int:
        """The next free slot bound to ``pool``: its memory in this file, meta.pools[] told."""
        p = self.slots.index(None)
        offset = self.next_pool_offset
        self.next_pool_offset = offset + _pages(pool.size) + POOL_GAP
        os.ftruncate(self.fd, self.next_pool_offset)
        self.slots[p], self.pool_offsets[p] = pool, offset
        self.pool_maps[p] = mmap.mmap(self.fd, pool.size, offset=offset)
        pool.bound.append(self)
        info = abi.POOL_INFO.pack(
            mmap_offset=offset, mmap_size=pool.size, node_count=pool.node_count,
            node_size=pool.node_size, ifindex=pool.ifindex,
        )  # fmt: skip
        os.pwrite(self.fd, info, abi.META["pools"].offset + p * abi.POOL_INFO.size)
        return p

    def slot_of(self, pool: _Pool) -> int:
        return self.slots.index(pool)

    def pool_memory(self, pool: _Pool) -> mmap.mmap:
        """This file's copy of ``pool`` (writable: the module's side)."""
        return self.pool_maps[self.slot_of(pool)]

    # -- the rings --------------------------------------------------------------

    def index(self, at: int) -> int:
        return int.from_bytes(self.ring[at : at + 8], "little")

    def set_index(self, at: int, value: int) -> None:
        self.ring[at : at + 8] = value.to_bytes(8, "little")

    def pending(self) -> int:
        used = self.seq - self.index(RING_CONSUMER)
        return 0 if used < 0 or used > self.nta.ring_entries else used

    def room(self) -> int:
        """nta_ring_room(): a consumer index that makes no sense leaves no room."""
        used = self.seq - self.index(RING_CONSUMER)
        return 0 if used < 0 or used > self.nta.ring_entries else self.nta.ring_entries - used

    def set_need_wakeup(self, on: bool) -> None:
        was = self.index(COMMIT_FLAGS) & abi.COMMIT_NEED_WAKEUP
        self.ring[COMMIT_FLAGS : COMMIT_FLAGS + 4] = (abi.COMMIT_NEED_WAKEUP if on else 0).to_bytes(
            4, "little"
        )
        self.counters["need_wakeup"] += on and not was

    def drain(self) -> None:
        """nta_drain_locked(): every entry of the commit ring, each checked once."""
        if self.closed:
            return
        producer = self.index(COMMIT_PRODUCER)
        avail = producer - self.commit_cons
        if not avail:
            return
        if avail < 0 or avail > self.nta.ring_entries:
            self.nta.bad_commits[abi.BadCommit.RING] += 1
            return
        mask = self.nta.ring_entries - 1
        while self.commit_cons != producer:
            at = self.commit_at + (self.commit_cons & mask) * abi.COMMIT.size
            entry = abi.COMMIT.struct.unpack_from(self.ring, at)
            self.counters["ring_commits"] += self.commit_one(*entry)
            self.commit_cons += 1
        self.set_index(COMMIT_CONSUMER, self.commit_cons)
        if self.outstanding < self.nta.max_shared:
            self.set_need_wakeup(False)

    def admit(self, a: _Attached, n: int) -> bool:
        """Whether this reader takes a frame of ``n`` records; if not, counted as its miss."""
        if self.outstanding + n > self.nta.max_shared:
            self.drain()
            if self.outstanding + n > self.nta.max_shared:
                self.set_need_wakeup(True)
                a.stats["not_shared"] += 1
                self.nta.stats["not_shared"] += 1
                return False
        if self.room() < n:
            a.stats["ring_full"] += 1
            self.nta.stats["ring_full"] += 1
            return False
        return True

    def publish(
        self,
        a: _Attached,
        pool: _Pool,
        pieces: list[Published],
        data: bytes,
        tci: int | None,
        tpid: int,
        tstamp_ns: int,
    ) -> int:
        """The records of one frame in this reader's ring, made visible at once; the first's
        seq. Each piece: its chunk, offset, length, and flags of its own (NTA_RECORD_COPY)."""
        first = self.seq
        slot = self.slot_of(pool)
        for k, (c, offset, length, flags) in enumerate(pieces):
            contd = abi.RECORD_CONTD if k + 1 < len(pieces) else 0
            record = abi.RECORD.pack(
                node=c.node, offset=offset, len=length, generation=c.generation, seq=self.seq,
                tstamp_ns=tstamp_ns, ifindex=pool.ifindex,
                protocol=int.from_bytes(data[12:14], "little"),  # raw network-order bytes
                flags=flags | contd | (abi.RECORD_VLAN if tci is not None else 0),
                frame_len=len(data), vlan_tci=tci or 0,
                vlan_proto=int.from_bytes(tpid.to_bytes(2, "big"), "little"), pool=slot,
            )  # fmt: skip
            at = PAGE + (self.seq & (self.nta.ring_entries - 1)) * abi.RECORD.size
            self.ring[at : at + len(record)] = record
            self.stamps[self.seq] = time.monotonic()
            self.outstanding += 1
            self.seq += 1
            self.counters["records"] += 1
            self.nta.stats["published"] += 1
        self.set_index(RING_PRODUCER, self.seq)  # after the records, all at once
        a.stats["published"] += 1
        return first

    # -- commits ------------------------------------------------------------------

    def check(self, node: int, offset: int, gen: int, pool: int, res: int) -> int | _Chunk:
        """nta_commit_check(), in the same order: a reason, or the chunk to release."""
        if res:
            return abi.BadCommit.RESERVED
        p = self.slots[pool] if pool < abi.MAX_POOLS else None
        if p is None:
            return abi.BadCommit.POOL
        if node >= p.node_count:
            return abi.BadCommit.NODE
        if offset // PAGE >= p.node_pages:
            return abi.BadCommit.OFFSET
        c = p.chunks[node][offset // PAGE]
        if self not in c.readers:
            return abi.BadCommit.STATE
        if c.generation != gen:
            return abi.BadCommit.GENERATION
        if c.frame_offset != offset:
            return abi.BadCommit.OFFSET
        return c

    def commit_one(self, node: int, offset: int, gen: int, pool: int, res: int) -> bool:
        got = self.check(node, offset, gen, pool, res)
        if isinstance(got, int):
            self.nta.bad_commits[got] += 1
            return False
        self.release(got)
        self.committed += 1
        return True

    def release(self, c: _Chunk) -> None:
        """This reader lets go of ``c``: back to its pool once no reader holds it."""
        c.readers.discard(self)
        self.outstanding -= 1
        if not c.readers:
            self.nta.free_chunk(c.pool, c)

    # -- the Device protocol -------------------------------------------------

    def map(self, offset: int, size: int, writable: bool) -> mmap.mmap:
        """nta_mmap(): only the mappings the meta page names, at their exact sizes; a pool
        slot only once bound."""
        m = self.meta_values
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.maps_made.append((offset, size, writable))
        ring = offset == m["ring_mmap_offset"] and size == self.ring_size
        meta = offset == abi.MMAP_META_OFFSET and size == PAGE
        pool = any(
            s is not None and offset == self.pool_offsets[p] and size == s.size
            for p, s in enumerate(self.slots)
        )
        if not (ring or meta or pool) or (writable and not ring):
            raise _oserror(errno.EINVAL)
        return mmap.mmap(self.fd, size, mmap.MAP_SHARED, prot, offset=offset)

    def due(self) -> bool:
        """struct nta_wakeup's rule, on the oldest pending record's age."""
        pending = self.pending()
        if not pending:
            return False
        frames, usecs = self.wakeup
        oldest = self.stamps.get(self.seq - pending, 0.0)
        return not usecs or pending >= frames or time.monotonic() - oldest >= usecs / 1e6

    def hung_up(self) -> bool:
        """Every device this reader attached is gone: poll() says POLLHUP."""
        return (
            self.nta.hangup
            and bool(self.watched)
            and all(a.flags & abi.DEV_GONE for a in self.watched.values())
        )

    def poll(self, timeout_ms: int | None) -> Events:
        self.nta.arrive()
        self.drain()
        if not self.due() and not self.hung_up() and timeout_ms:
            time.sleep(min(timeout_ms, 5) / 1000)  # as if blocked a while: no busy loop
        ready = self.due()
        self.counters["wakeups"] += ready
        return (Events.IN if ready else Events.NONE) | (
            Events.HUP if self.hung_up() else Events.NONE
        )

    def ioctl(self, request: int, arg: bytearray) -> None:
        self.ioctls[request] += 1
        if request in (abi.IOC_ATTACH, abi.IOC_DETACH):
            req = abi.ATTACH.unpack(arg)
            if request == abi.IOC_ATTACH:
                self.nta.attach(self, req["ifindex"], req["abi_version"])
            elif req["abi_version"] != abi.ABI_VERSION:
                raise _oserror(errno.EPROTO)
            else:
                self.nta.detach(self, req["ifindex"])
        elif request == abi.IOC_STATS:
            arg[:] = self.nta.stats_bytes()
        elif request == abi.IOC_DEV_STATS:
            req = abi.DEV_STATS.unpack(arg)
            if req["flags"]:
                raise _oserror(errno.EINVAL)
            a = self.watched.get(req["ifindex"])
            if a is None:
                raise _oserror(errno.ENODEV)
            arg[:] = abi.DEV_STATS.pack(a.stats, ifindex=req["ifindex"], flags=a.flags)
        elif request == abi.IOC_SET_WAKEUP:
            req = abi.WAKEUP.unpack(arg)
            if not 1 <= req["frames"] <= self.nta.ring_entries or req["usecs"] > 10_000_000:
                raise _oserror(errno.EINVAL)
            self.wakeup = (req["frames"], req["usecs"])
        elif request == abi.IOC_SET_DIRECTION:
            req = abi.DIRECTION.unpack(arg)
            if req["reserved"] or req["direction"] not in (1, 2, 3):
                raise _oserror(errno.EINVAL)
            self.direction = abi.Direction(req["direction"])
        elif request == abi.IOC_SET_FILTER:
            req = abi.FILTER.unpack(arg)
            if req["reserved"] or not 1 <= req["len"] <= abi.BPF_MAXINSNS:
                raise _oserror(errno.EINVAL)
            if not req["insns"]:
                raise _oserror(errno.EFAULT)
            raw = ctypes.string_at(req["insns"], req["len"] * abi.SOCK_FILTER.size)
            self.filter = list(abi.SOCK_FILTER.iter_unpack(raw))
        elif request == abi.IOC_DETACH_FILTER:
            self.filter = None
        elif request == abi.IOC_READER_STATS:
            values = {**self.counters, "committed": self.committed, "outstanding": self.outstanding}
            arg[:] = abi.READER_STATS.pack(values)
        else:
            raise _oserror(errno.ENOTTY)

    def write(self, data: bytes | bytearray) -> int:
        """nta_write(): checked in order, the first refused commit ends it."""
        size = abi.COMMIT.size
        data = bytes(data)
        self.nta.writes.append(len(data) // size)
        if not data or len(data) % size or len(data) // size > self.nta.max_commit_batch:
            self.nta.bad_commits[abi.BadCommit.LENGTH] += 1
            raise _oserror(errno.EINVAL)
        self.drain()
        accepted = 0
        for entry in abi.COMMIT.struct.iter_unpack(data):
            if not self.commit_one(*entry):
                break
            accepted += 1
        if self.outstanding < self.nta.max_shared:
            self.set_need_wakeup(False)
        if not accepted:
            raise _oserror(errno.EINVAL)
        return accepted * size

    def close(self) -> None:
        """nta_release(): detach, then take back what the reader still holds (its share of
        each chunk: one other readers hold stays theirs)."""
        if self.closed:
            return
        self.nta.detach(self, None)
        for pool in self.slots:
            if pool is None:
                continue
            for node in pool.chunks:
                for c in node:
                    if self in c.readers:
                        self.nta.stats["returned_on_close"] += 1
                        self.release(c)
            pool.bound.remove(self)
        self.closed = True
        self.nta.stats["committed"] += self.committed
        self.nta.readers.remove(self)
        for m in (self.ring, *self.pool_maps.values()):
            m.close()
        os.close(self.fd)


def ethernet(
    payload: bytes, *, ethertype: int = 0x0800, vlan_tci: int | None = None, tpid: int = 0x8100
) -> bytes:
    """A frame as on the wire, for the fake's producer: broadcast, from 02:..:02."""
    head = b"\xff" * 6 + b"\x02" * 6
    if vlan_tci is not None:
        head += tpid.to_bytes(2, "big") + vlan_tci.to_bytes(2, "big")
    return head + ethertype.to_bytes(2, "big") + payload
