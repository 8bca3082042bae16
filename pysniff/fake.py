"""An in-memory NTA for host-only tests: the module's shared memory and its rules.

``FakeNta`` lays its memory out like the module: a meta page, one record
ring per open reader and the nodes, each in a memfd the Reader maps through
the same ``Device`` calls it uses on /dev/nta. Its mmap offsets differ from
the module's on purpose (the reader must take them from the meta page).
Commits are validated in the order ``nta_check_commit()`` uses and refusals
counted per reason, so tests of batching and malformed commits check the
same arithmetic the kernel does. ``deliver()`` is the producer: it puts a
frame in a fresh chunk and publishes a record the way ``nta_publish_locked()``
does; ``queue()`` holds frames back until the reader polls, like traffic
arriving while it waits.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pysniff import abi

PAGE = mmap.PAGESIZE
HEADROOM = 66  # NET_SKB_PAD + NET_IP_ALIGN: where a driver puts the MAC header
MAX_DEVS = 8


@dataclass
class _Chunk:
    node: int
    index: int
    generation: int = 0
    owner: FakeDevice | None = None
    frame_offset: int = 0


@dataclass
class _Attached:
    reader: FakeDevice | None
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(abi.DEV_STATS_COUNTERS, 0))


def _memfd(name: str, size: int) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class FakeNta:
    """The module: pool, counters, attached devices, readers."""

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
    ) -> None:
        self.node_count, self.node_pages = node_count, node_pages
        self.node_size = node_pages * PAGE
        self.ring_entries = ring_entries
        self.max_shared = max_shared
        self.max_commit_batch = max_commit_batch
        self.interfaces = dict(interfaces or {1: "lo", 2: "eth0", 3: "eth1"})
        self.burst = burst
        records = ring_entries * abi.RECORD.size
        self.ring_size = PAGE + -(-records // PAGE) * PAGE
        self.meta_values = {
            "magic": abi.MAGIC, "abi_version": abi.ABI_VERSION, "meta_size": abi.META.size,
            "record_size": abi.RECORD.size, "commit_size": abi.COMMIT.size, "page_size": PAGE,
            "node_count": node_count, "node_size": self.node_size, "chunk_size": PAGE,
            "ring_entries": ring_entries, "max_shared": max_shared,
            "max_commit_batch": max_commit_batch,
            "ring_mmap_offset": 16 * PAGE, "ring_mmap_size": self.ring_size,
            "nodes_mmap_offset": 64 * PAGE, "nodes_mmap_size": node_count * self.node_size,
            "ring_producer_offset": 0, "ring_consumer_offset": 64,
            "ring_records_offset": PAGE,
            **(meta_override or {}),
        }  # fmt: skip
        self.meta_fd = _memfd("nta-meta", PAGE)
        os.pwrite(self.meta_fd, abi.META.pack(self.meta_values), 0)
        self.nodes_fd = _memfd("nta-nodes", node_count * self.node_size)
        self.nodes = mmap.mmap(self.nodes_fd, node_count * self.node_size)
        self.chunks = [[_Chunk(n, i) for i in range(node_pages)] for n in range(node_count)]
        self.free: deque[_Chunk] = deque(c for node in self.chunks for c in node)
        self.stats: dict[str, int] = dict.fromkeys(abi.STATS_COUNTERS, 0)
        self.bad_commits = [0] * abi.BAD_COMMIT_MAX
        self.devs: dict[int, _Attached] = {}
        self.queued: dict[int, deque[tuple[bytes, bool]]] = {}
        self.readers: list[FakeDevice] = []
        self.writes: list[int] = []  # commits per write() call, as the module saw them
        self.clock_ns = 1_700_000_000_000_000_000

    def open(self, path: str = "/dev/nta") -> FakeDevice:
        dev = FakeDevice(self)
        self.readers.append(dev)
        return dev

    # -- the pool -------------------------------------------------------------

    def _alloc(self) -> _Chunk | None:
        if not self.free:
            self.stats["fallback"] += 1
            self.stats["pool_empty"] += 1
            return None
        c = self.free.popleft()
        c.generation = (c.generation + 1) & 0xFFFFFFFF
        self.stats["allocated"] += 1
        self.stats["in_use"] += 1
        return c

    def _release(self, c: _Chunk) -> None:
        c.owner = None
        self.free.append(c)
        self.stats["freed"] += 1
        self.stats["in_use"] -= 1

    # -- the producer ---------------------------------------------------------

    def deliver(
        self, ifindex: int, wire: bytes, *, strip_vlan: bool = False, headroom: int = HEADROOM
    ) -> int | None:
        """One frame received on ``ifindex``: the record's seq if it was published."""
        a = self.devs.get(ifindex)
        if a is None:
            raise ValueError(f"ifindex {ifindex} is not attached: the module would not see it")
        data, tci = wire, None
        if strip_vlan and wire[12:14] == b"\x81\x00":
            data, tci = wire[:12] + wire[16:], int.from_bytes(wire[14:16], "big")
        c = self._alloc()
        if c is None:
            a.stats["fallback"] += 1
            return None
        a.stats["allocated"] += 1
        a.stats["received"] += 1
        offset = c.index * PAGE + headroom
        if headroom + len(data) > PAGE:  # as the tap: a frame must fit its chunk
            self._release(c)
            return None
        at = c.node * self.node_size + offset
        self.nodes[at : at + len(data)] = data
        seq = self._publish(a, c, ifindex, offset, data, tci) if a.reader else None
        if a.reader is None:
            self.stats["no_reader"] += 1
        if seq is None:  # the stack is done with it, nobody holds it: back to the pool
            self._release(c)
        return seq

    def _publish(
        self, a: _Attached, c: _Chunk, ifindex: int, offset: int, data: bytes, tci: int | None
    ) -> int | None:
        r = a.reader
        assert r is not None
        if r.outstanding >= self.max_shared:
            self.stats["not_shared"] += 1
            a.stats["not_shared"] += 1
            return None
        if r.room() == 0:
            self.stats["ring_full"] += 1
            a.stats["not_shared"] += 1
            return None
        self.clock_ns += 1000
        record = abi.RECORD.pack(
            node=c.node, offset=offset, len=len(data), generation=c.generation, seq=r.seq,
            tstamp_ns=self.clock_ns, ifindex=ifindex,
            protocol=int.from_bytes(data[12:14], "little"),  # raw network-order bytes
            flags=abi.RECORD_VLAN_STRIPPED if tci is not None else 0, chunk=c.index,
            vlan_tci=tci or 0,
        )  # fmt: skip
        slot = PAGE + (r.seq & (self.ring_entries - 1)) * abi.RECORD.size
        r.ring[slot : slot + len(record)] = record
        c.owner, c.frame_offset = r, offset
        r.outstanding += 1
        r.seq += 1
        r.set_index(0, r.seq)  # the producer index, after the record
        self.stats["published"] += 1
        self.stats["outstanding"] += 1
        a.stats["published"] += 1
        return r.seq - 1

    def queue(self, ifindex: int, frames: Iterable[bytes], *, strip_vlan: bool = False) -> None:
        """Frames that arrive ``burst`` at a time while a reader polls."""
        q = self.queued.setdefault(ifindex, deque())
        q.extend((f, strip_vlan) for f in frames)

    def arrive(self) -> int:
        """Deliver the next burst of queued frames on every attached interface."""
        n = 0
        for ifindex, q in self.queued.items():
            if ifindex not in self.devs:
                continue
            for _ in range(min(self.burst, len(q))):
                wire, strip = q.popleft()
                self.deliver(ifindex, wire, strip_vlan=strip)
                n += 1
        return n

    # -- commits --------------------------------------------------------------

    def _check(self, r: FakeDevice, node: int, offset: int, gen: int, res: int) -> int | _Chunk:
        """nta_check_commit(), in the same order: a reason, or the chunk to release."""
        if res:
            return abi.BadCommit.RESERVED
        if node >= self.node_count:
            return abi.BadCommit.NODE
        if offset >= self.node_pages * PAGE:
            return abi.BadCommit.OFFSET
        c = self.chunks[node][offset // PAGE]
        if c.owner is None:
            return abi.BadCommit.STATE
        if c.owner is not r:
            return abi.BadCommit.OWNER
        if c.generation != gen:
            return abi.BadCommit.GENERATION
        if c.frame_offset != offset:
            return abi.BadCommit.OFFSET
        return c

    def write(self, r: FakeDevice, data: bytes) -> int:
        size = abi.COMMIT.size
        self.writes.append(len(data) // size)
        if not data or len(data) % size or len(data) // size > self.max_commit_batch:
            self.bad_commits[abi.BadCommit.LENGTH] += 1
            raise _oserror(errno.EINVAL)
        accepted = 0
        for node, offset, gen, res in abi.COMMIT.struct.iter_unpack(data):
            got = self._check(r, node, offset, gen, res)
            if isinstance(got, int):
                self.bad_commits[got] += 1
                continue
            r.outstanding -= 1
            self.stats["outstanding"] -= 1
            self.stats["committed"] += 1
            self._release(got)
            accepted += 1
        if not accepted:
            raise _oserror(errno.EINVAL)
        return accepted * size

    # -- ioctls -----------------------------------------------------------------

    def stats_bytes(self) -> bytes:
        bad = {f"bad_commits_{i}": n for i, n in enumerate(self.bad_commits)}
        return abi.STATS.pack({**self.stats, **bad})

    def stats_now(self) -> abi.Stats:
        return abi.Stats.from_raw(self.stats_bytes())

    def attach(self, r: FakeDevice | None, ifindex: int, flags: int) -> None:
        if flags:
            raise _oserror(errno.EINVAL)
        if ifindex not in self.interfaces:
            raise _oserror(errno.ENODEV)
        a = self.devs.get(ifindex)
        if a is not None:
            if a.reader is not None and a.reader is not r:
                raise _oserror(errno.EBUSY)
            a.reader = r
            return
        if len(self.devs) >= MAX_DEVS:
            raise _oserror(errno.ENOSPC)
        self.devs[ifindex] = _Attached(r)

    def detach(self, r: FakeDevice, ifindex: int | None) -> None:
        for index, a in list(self.devs.items()):
            if a.reader is r and ifindex in (None, index):
                del self.devs[index]

    def release(self, r: FakeDevice) -> None:
        """nta_release(): detach, then take back what the reader still holds."""
        self.detach(r, None)
        for node in self.chunks:
            for c in node:
                if c.owner is r:
                    self.stats["returned_on_close"] += 1
                    self.stats["outstanding"] -= 1
                    self._release(c)
        self.readers.remove(r)


class FakeDevice:
    """One open file of the fake module, with its own record ring."""

    def __init__(self, nta: FakeNta) -> None:
        self.nta = nta
        self.ring_fd = _memfd("nta-ring", nta.ring_size)
        self.ring = mmap.mmap(self.ring_fd, nta.ring_size)
        self.seq = 0
        self.outstanding = 0
        self.closed = False
        self.maps_made: list[tuple[int, int, bool]] = []

    def index(self, at: int) -> int:
        return int.from_bytes(self.ring[at : at + 8], "little")

    def set_index(self, at: int, value: int) -> None:
        self.ring[at : at + 8] = value.to_bytes(8, "little")

    def room(self) -> int:
        """nta_ring_room(): a consumer index that makes no sense leaves no room."""
        used = self.seq - self.index(64)
        return 0 if used < 0 or used > self.nta.ring_entries else self.nta.ring_entries - used

    # -- the Device protocol -------------------------------------------------

    def map(self, offset: int, size: int, writable: bool) -> mmap.mmap:
        """nta_mmap(): only the three mappings the meta page names, at their exact sizes."""
        m = self.nta.meta_values
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.maps_made.append((offset, size, writable))
        if offset == m["ring_mmap_offset"] and size == self.nta.ring_size:
            return mmap.mmap(self.ring_fd, size, mmap.MAP_SHARED, prot)
        if writable:
            raise _oserror(errno.EINVAL)
        if offset == abi.MMAP_META_OFFSET and size == PAGE:
            return mmap.mmap(self.nta.meta_fd, size, mmap.MAP_SHARED, prot)
        if offset == m["nodes_mmap_offset"] and size == m["nodes_mmap_size"]:
            return mmap.mmap(self.nta.nodes_fd, size, mmap.MAP_SHARED, prot)
        raise _oserror(errno.EINVAL)

    def poll(self, timeout_ms: int | None) -> bool:
        self.nta.arrive()
        ready = self.index(0) != self.index(64)
        if not ready and timeout_ms:
            time.sleep(min(timeout_ms, 5) / 1000)  # as if blocked a while: no busy loop
        return ready

    def ioctl(self, request: int, arg: bytearray) -> None:
        if request in (abi.IOC_ATTACH, abi.IOC_DETACH):
            req = abi.ATTACH.unpack(arg)
            if request == abi.IOC_ATTACH:
                self.nta.attach(self, req["ifindex"], req["flags"])
            else:
                self.nta.detach(self, req["ifindex"])
        elif request == abi.IOC_STATS:
            arg[:] = self.nta.stats_bytes()
        elif request == abi.IOC_DEV_STATS:
            req = abi.DEV_STATS.unpack(arg)
            if req["reserved"]:
                raise _oserror(errno.EINVAL)
            a = self.nta.devs.get(req["ifindex"])
            if a is None:
                raise _oserror(errno.ENODEV)
            arg[:] = abi.DEV_STATS.pack(a.stats, ifindex=req["ifindex"])
        else:
            raise _oserror(errno.ENOTTY)

    def write(self, data: bytes) -> int:
        return self.nta.write(self, bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.nta.release(self)
            self.ring.close()
            os.close(self.ring_fd)


def ethernet(payload: bytes, *, ethertype: int = 0x0800, vlan_tci: int | None = None) -> bytes:
    """A frame as on the wire, for the fake's producer: broadcast, from 02:..:02."""
    head = b"\xff" * 6 + b"\x02" * 6
    if vlan_tci is not None:
        head += b"\x81\x00" + vlan_tci.to_bytes(2, "big")
    return head + ethertype.to_bytes(2, "big") + payload
