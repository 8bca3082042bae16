"""An in-memory NTA for host-only tests: the module's shared memory and its rules.

``FakeNta`` lays its memory out like the module: per reader, a meta page, a
ring mapping (record ring, commit ring, their indices) and a pool of nodes,
all in one memfd (``FakeDevice.fd``) at the mmap offsets the meta page
gives, which the Reader maps through the same ``Device`` calls it uses on
/dev/nta (and ntadump maps in its host tests). Its mmap offsets differ from
the module's on purpose (a reader must take them from the meta page).
Commits are checked in the order ``nta_commit_check()`` uses, refusals
counted per reason, a write() stops at the first refused commit, the commit
ring is drained when the reader is at max_shared, on poll and on write, and
NTA_COMMIT_NEED_WAKEUP is raised and cleared as the module does: tests of
batching, the commit ring and malformed commits check the same arithmetic
the kernel does.

``deliver()`` is the producer; ``queue()`` holds frames back until the
reader polls, like traffic arriving while it waits. A frame is published in
one chunk, or (``merged``) copied into chunks as NTA_RECORD_COPY pieces, or
(``chain``) in place in several chunks, a non-COPY piece per chunk at any
offset: how the module publishes a GRO-merged frame (the head's chunk, then
each merged segment's). ``unregister()`` makes a device go away: its reader
sees NTA_DEV_GONE, and POLLHUP from poll() once every device it attached is
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
MAX_DEVS = 8
# The ring mapping's first page, as the module lays it out.
RING_PRODUCER, RING_CONSUMER, COMMIT_PRODUCER, COMMIT_CONSUMER, COMMIT_FLAGS = 0, 64, 128, 192, 256
RING_MMAP_OFFSET = 16 * PAGE  # the module's differ: a reader must read them from the meta page


@dataclass
class _Chunk:
    node: int
    index: int
    generation: int = 0
    busy: bool = False
    owner: FakeDevice | None = None
    frame_offset: int = 0


@dataclass
class _Attached:
    reader: FakeDevice
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(abi.DEV_STATS_COUNTERS, 0))
    flags: int = 0  # NTA_DEV_*


# A piece of a chain: (offset in its chunk, length), or (offset, length, copied).
Piece = tuple[int, int] | tuple[int, int, bool]


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
    """The module: counters, attached devices, readers (each with its own pool)."""

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
    ) -> None:
        self.node_count, self.node_pages = node_count, node_pages
        self.node_size = node_pages * PAGE
        self.ring_entries = ring_entries
        self.max_shared = max_shared
        self.max_commit_batch = max_commit_batch
        self.interfaces = dict(interfaces or {1: "lo", 2: "eth0", 3: "eth1"})
        self.burst = burst
        self.meta_override = dict(meta_override or {})
        self.hangup = hangup
        self.stats: dict[str, int] = dict.fromkeys(abi.STATS_COUNTERS, 0)
        self.bad_commits = [0] * abi.BAD_COMMIT_MAX
        self.devs: dict[int, _Attached] = {}
        self.queued: dict[int, deque[Arrival]] = {}
        self.leaving: set[int] = set()  # devices unregistered once their queue is empty
        self.readers: list[FakeDevice] = []
        self.writes: list[int] = []  # commits per write() call, as the module saw them
        self.clock_ns = 1_700_000_000_000_000_000

    def open(self, path: str = "/dev/nta") -> FakeDevice:
        dev = FakeDevice(self)
        self.readers.append(dev)
        return dev

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
        """One frame received on ``ifindex``: its first record's seq if it was published.

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
        a = self.devs.get(ifindex)
        if a is None:
            raise ValueError(f"ifindex {ifindex} is not attached: the module would not see it")
        r = a.reader
        data, tci, tpid = wire, None, 0
        if strip_vlan and wire[12:14] in (b"\x81\x00", b"\x88\xa8"):
            data, tci = wire[:12] + wire[16:], int.from_bytes(wire[14:16], "big")
            tpid = int.from_bytes(wire[12:14], "big")
        a.stats["received"] += 1
        if merged:
            return r.copy_in(a, ifindex, data, tci, tpid)
        if not chain:
            if headroom + len(data) > PAGE:  # the tap: a frame must fit its chunk
                a.stats["skipped"] += 1
                self.stats["skipped"] += 1
                return None
            chain = ((headroom, len(data)),)
        return r.in_place(a, ifindex, data, tci, tpid, chain)

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
        for ifindex, q in self.queued.items():
            if ifindex not in self.devs:
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
        """The device goes (unregistered, or moved to another namespace): its reader, if
        any, sees NTA_DEV_GONE in its dev stats."""
        self.leaving.discard(ifindex)
        self.interfaces.pop(ifindex, None)
        a = self.devs.pop(ifindex, None)
        if a is not None:
            a.flags |= abi.DEV_GONE

    def unregister_after(self, ifindex: int) -> None:
        """The device goes once every frame queued for it has arrived."""
        self.leaving.add(ifindex)

    # -- ioctls ---------------------------------------------------------------

    def stats_bytes(self) -> bytes:
        live = {"committed": 0, "outstanding": 0, "in_use": 0}
        for r in self.readers:
            live["committed"] += r.committed
            live["outstanding"] += r.outstanding
            live["in_use"] += sum(c.busy for node in r.chunks for c in node)
        bad = {f"bad_commits_{i}": n for i, n in enumerate(self.bad_commits)}
        counters = dict(self.stats)
        for key, value in live.items():
            counters[key] += value
        return abi.STATS.pack({**counters, **bad})

    def stats_now(self) -> abi.Stats:
        return abi.Stats.from_raw(self.stats_bytes())

    def attach(self, r: FakeDevice, ifindex: int, abi_version: int) -> None:
        if abi_version != abi.ABI_VERSION:
            raise _oserror(errno.EPROTO)
        if ifindex not in self.interfaces:
            raise _oserror(errno.ENODEV)
        a = self.devs.get(ifindex)
        if a is not None:
            if a.reader is not r:
                raise _oserror(errno.EBUSY)
            return
        if len(r.watched) >= MAX_DEVS:
            raise _oserror(errno.ENOSPC)
        a = _Attached(r)
        self.devs[ifindex] = a
        r.watched[ifindex] = a

    def detach(self, r: FakeDevice, ifindex: int | None) -> None:
        for index, a in list(self.devs.items()):
            if a.reader is r and ifindex in (None, index):
                del self.devs[index]


class FakeDevice:
    """One open file of the fake module: a reader with its own pool and rings."""

    def __init__(self, nta: FakeNta) -> None:
        self.nta = nta
        n = nta
        records = _pages(n.ring_entries * abi.RECORD.size)
        commits = _pages(n.ring_entries * abi.COMMIT.size)
        self.ring_size = PAGE + records + commits
        self.commit_at = PAGE + records
        nodes_offset = RING_MMAP_OFFSET + max(48 * PAGE, _pages(self.ring_size))
        nodes_size = n.node_count * n.node_size
        self.meta_values = {
            "magic": abi.MAGIC, "abi_version": abi.ABI_VERSION, "meta_size": abi.META.size,
            "record_size": abi.RECORD.size, "commit_size": abi.COMMIT.size, "page_size": PAGE,
            "node_count": n.node_count, "node_size": n.node_size, "chunk_size": PAGE,
            "ring_entries": n.ring_entries, "commit_entries": n.ring_entries,
            "max_shared": n.max_shared, "max_commit_batch": n.max_commit_batch,
            "ring_mmap_offset": RING_MMAP_OFFSET, "ring_mmap_size": self.ring_size,
            "nodes_mmap_offset": nodes_offset, "nodes_mmap_size": nodes_size,
            "ring_producer_offset": RING_PRODUCER, "ring_consumer_offset": RING_CONSUMER,
            "ring_records_offset": PAGE, "commit_producer_offset": COMMIT_PRODUCER,
            "commit_consumer_offset": COMMIT_CONSUMER, "commit_flags_offset": COMMIT_FLAGS,
            "commit_entries_offset": self.commit_at,
            **n.meta_override,
        }  # fmt: skip
        # The three mappings in one file, each at its mmap offset (as one /dev/nta is).
        self.fd = os.memfd_create("nta", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, nodes_offset + nodes_size)
        os.pwrite(self.fd, abi.META.pack(self.meta_values), 0)
        self.ring = mmap.mmap(self.fd, self.ring_size, offset=RING_MMAP_OFFSET)
        self.nodes = mmap.mmap(self.fd, nodes_size, offset=nodes_offset)
        self.chunks = [[_Chunk(i, j) for j in range(n.node_pages)] for i in range(n.node_count)]
        self.free: deque[_Chunk] = deque(c for node in self.chunks for c in node)
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

    # -- the pool ---------------------------------------------------------------

    def take(self) -> _Chunk | None:
        """nta_pool_take_locked(): an empty pool takes the commit ring first."""
        if not self.free:
            self.drain()
        if not self.free:
            self.nta.stats["pool_empty"] += 1
            return None
        c = self.free.popleft()
        c.busy = True
        c.generation = (c.generation + 1) & 0xFFFFFFFF
        self.nta.stats["allocated"] += 1
        return c

    def free_chunk(self, c: _Chunk) -> None:
        c.owner = None
        c.busy = False
        self.free.append(c)
        self.nta.stats["freed"] += 1

    def put(self, c: _Chunk, offset: int, data: bytes) -> None:
        at = c.node * self.nta.node_size + offset
        self.nodes[at : at + len(data)] = data

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
        pieces: list[tuple[_Chunk, int, int, int]],
        ifindex: int,
        data: bytes,
        tci: int | None,
        tpid: int,
    ) -> int | None:
        """The records of one frame, made visible at once; the first's seq, or None.
        Each piece: its chunk, offset, length, and flags of its own (NTA_RECORD_COPY)."""
        if not self.admit(a, len(pieces)):
            return None
        self.nta.clock_ns += 1000
        first = self.seq
        for k, (c, offset, length, flags) in enumerate(pieces):
            contd = abi.RECORD_CONTD if k + 1 < len(pieces) else 0
            record = abi.RECORD.pack(
                node=c.node, offset=offset, len=length, generation=c.generation, seq=self.seq,
                tstamp_ns=self.nta.clock_ns, ifindex=ifindex,
                protocol=int.from_bytes(data[12:14], "little"),  # raw network-order bytes
                flags=flags | contd | (abi.RECORD_VLAN if tci is not None else 0),
                frame_len=len(data), vlan_tci=tci or 0,
                vlan_proto=int.from_bytes(tpid.to_bytes(2, "big"), "little"),
            )  # fmt: skip
            slot = PAGE + (self.seq & (self.nta.ring_entries - 1)) * abi.RECORD.size
            self.ring[slot : slot + len(record)] = record
            self.stamps[self.seq] = time.monotonic()
            c.owner, c.frame_offset = self, offset
            self.outstanding += 1
            self.seq += 1
            self.counters["records"] += 1
            self.nta.stats["published"] += 1
        self.set_index(RING_PRODUCER, self.seq)  # after the records, all at once
        a.stats["published"] += 1
        return first

    def in_place(
        self,
        a: _Attached,
        ifindex: int,
        data: bytes,
        tci: int | None,
        tpid: int,
        chain: Sequence[Piece],
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
            c = self.take()
            if c is None:  # the pool was empty at refill: a buffer from elsewhere
                a.stats["fallback"] += 1
                a.stats["pool_empty"] += 1
                a.stats["unserved"] += 1
                self.nta.stats["unserved"] += 1
                for t in taken:
                    self.free_chunk(t)
                return None
            a.stats["allocated"] += 1
            taken.append(c)
        pieces, at = [], 0
        for c, (offset, length, *copied) in zip(taken, chain, strict=True):
            self.put(c, c.index * PAGE + offset, data[at : at + length])
            flags = abi.RECORD_COPY if copied and copied[0] else 0
            pieces.append((c, c.index * PAGE + offset, length, flags))
            at += length
        seq = self.publish(a, pieces, ifindex, data, tci, tpid)
        if seq is None:  # the stack is done with them, nobody holds them: back to the pool
            for c in taken:
                self.free_chunk(c)
        return seq

    def copy_in(
        self, a: _Attached, ifindex: int, data: bytes, tci: int | None, tpid: int
    ) -> int | None:
        """nta_capture_copy(): a frame the stack holds in several buffers, into chunks."""
        taken: list[_Chunk] = []
        for _ in range(-(-len(data) // PAGE)):
            c = self.take()
            if c is None:
                break
            taken.append(c)
        pieces = []
        for k, c in enumerate(taken):
            part = data[k * PAGE : (k + 1) * PAGE]
            self.put(c, c.index * PAGE, part)
            pieces.append((c, c.index * PAGE, len(part), abi.RECORD_COPY))
        seq = None
        if len(taken) * PAGE >= len(data):
            seq = self.publish(a, pieces, ifindex, data, tci, tpid)
            if seq is None:
                pass  # counted by admit
            else:
                self.nta.stats["copied"] += 1
        else:
            a.stats["skipped"] += 1
            self.nta.stats["skipped"] += 1
        if seq is None:
            for c in taken:
                self.free_chunk(c)
        return seq

    # -- commits ------------------------------------------------------------------

    def check(self, node: int, offset: int, gen: int, res: int) -> int | _Chunk:
        """nta_commit_check(), in the same order: a reason, or the chunk to release."""
        if res:
            return abi.BadCommit.RESERVED
        if node >= self.nta.node_count:
            return abi.BadCommit.NODE
        if offset >= self.nta.node_pages * PAGE:
            return abi.BadCommit.OFFSET
        c = self.chunks[node][offset // PAGE]
        if c.owner is not self:
            return abi.BadCommit.STATE
        if c.generation != gen:
            return abi.BadCommit.GENERATION
        if c.frame_offset != offset:
            return abi.BadCommit.OFFSET
        return c

    def commit_one(self, node: int, offset: int, gen: int, res: int) -> bool:
        got = self.check(node, offset, gen, res)
        if isinstance(got, int):
            self.nta.bad_commits[got] += 1
            return False
        self.outstanding -= 1
        self.committed += 1
        self.free_chunk(got)
        return True

    # -- the Device protocol -------------------------------------------------

    def map(self, offset: int, size: int, writable: bool) -> mmap.mmap:
        """nta_mmap(): only the three mappings the meta page names, at their exact sizes."""
        m = self.meta_values
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.maps_made.append((offset, size, writable))
        ring = offset == m["ring_mmap_offset"] and size == self.ring_size
        meta = offset == abi.MMAP_META_OFFSET and size == PAGE
        nodes = offset == m["nodes_mmap_offset"] and size == m["nodes_mmap_size"]
        if not (ring or meta or nodes) or (writable and not ring):
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
        """nta_release(): detach, then take back what the reader still holds."""
        if self.closed:
            return
        self.closed = True
        self.nta.detach(self, None)
        for node in self.chunks:
            for c in node:
                if c.owner is self:
                    self.nta.stats["returned_on_close"] += 1
                    self.outstanding -= 1
                    self.free_chunk(c)
        self.nta.stats["committed"] += self.committed
        self.nta.readers.remove(self)
        for m in (self.ring, self.nodes):
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
