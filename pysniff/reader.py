"""The zero-copy reader: map NTA's pools and rings, read frames in place, hand chunks back.

A reader maps the pool of each device it attached (meta.pools[p]: right
after the attach, or when a record first names pool p); every record and
commit names its pool.

A frame is one record, or a chain of them (NTA_RECORD_CONTD: each record
but the last says the frame continues in the next seq), any number of
pieces, each in its own chunk at its own offset, copied there
(NTA_RECORD_COPY) or not: the reader only concatenates them, and commits
each piece's chunk on its own.

Lifetime of a frame's bytes: ``Frame.pieces`` (and the views of a ``Bulk``)
point into the module's chunks, not into a copy. A chunk stays the reader's
until it is committed, so the bytes are valid until the reader commits it:
by default when the caller comes back for more (the next ``wait()``,
``frames()`` or ``bulk()``), or on an explicit ``commit()``. ``hold=N``
keeps the newest N chunks back from every commit; ``commit=False`` never
commits (the module takes everything back when the reader closes).

Commits go into the commit ring (a store, no system call) unless
``via="write"``; a system call is made only when the module says it is due
(NTA_COMMIT_NEED_WAKEUP) or the ring has no room. ``syscalls`` counts every
one the reader makes.

A frame the reader cannot read (a record naming an unbound pool or bytes
outside its pool, a chain that can never end) is refused: counted in ``rejected`` by ``Fault``,
told to ``on_reject``, its chunks committed like any other.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import mmap
import socket
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

from pysniff import abi
from pysniff.bpf import Insn, pack
from pysniff.device import DEFAULT_PATH, Device, Events, OsDevice, is_refusal
from pysniff.errors import AbiMismatch, FilterError, NoSuchInterface, SniffError

__all__ = [
    "AbiMismatch", "Bulk", "Chunk", "CommitResult", "Fault", "Frame", "Reader", "Rejected",
    "SniffError",
]  # fmt: skip

_RECORD = abi.RECORD.struct
_COMMIT = abi.COMMIT.struct
_RSIZE = abi.RECORD.size
_CSIZE = abi.COMMIT.size
_TAG = struct.Struct("!HH")
_CONTD = abi.RECORD_CONTD
# A record as 32-bit words: where its len and ifindex are.
_WORDS = _RSIZE // 4
_LEN, _IFINDEX = abi.RECORD["len"].offset // 4, abi.RECORD["ifindex"].offset // 4
_POOL = abi.RECORD["pool"].offset
# Where a record's bytes are: its first three fields (node, offset, len) and its pool.
_SPAN = struct.Struct(f"<III{_POOL - 12}xI{_RSIZE - _POOL - 4}x")
if [(f.name, f.offset) for f in abi.RECORD.fields[:3]] != [("node", 0), ("offset", 4), ("len", 8)]:
    raise AbiMismatch("struct nta_record no longer starts with node, offset, len")
# The index of pool in a record's unpacked tuple (the frames() loop reads it by index).
_POOL_AT = [f.name for f in abi.RECORD.fields].index("pool")
# The low byte of a record's flags (little endian), where NTA_RECORD_CONTD is.
_FLAGS_LOW = abi.RECORD["flags"].offset
_NOT_CONTD = bytes(b for b in range(256) if not b & _CONTD)


class Frame(NamedTuple):
    """One received frame: its first record's fields, and its bytes in place, piece by piece.

    A NamedTuple rather than a dataclass: one is made per frame, and a tuple is
    the cheapest typed object Python makes."""

    seq: int  # the first record's
    tstamp_ns: int
    ifindex: int
    protocol: int  # network byte order, as skb->protocol
    flags: int
    len: int  # the frame, every piece, without a stripped VLAN tag
    vlan_tci: int | None  # the tag the stack took out of the frame, if it did
    vlan_proto: int  # its TPID (0x8100, 0x88a8), with vlan_tci
    pieces: tuple[memoryview, ...]  # views into the chunks, in order

    @property
    def data(self) -> memoryview:
        """The frame's bytes in place (a frame in one chunk); a copy of them otherwise."""
        if len(self.pieces) == 1:
            return self.pieces[0]
        return memoryview(b"".join(self.pieces))

    def wire_iov(self) -> list[memoryview | bytes]:
        """The frame as it was on the wire, as buffers for writev(): a tag the stack took out
        goes back after the two MAC addresses (the first 12 bytes, whichever pieces hold
        them; a frame shorter than that has no room for it)."""
        if self.vlan_tci is None:
            return list(self.pieces)
        tag = _TAG.pack(self.vlan_proto, self.vlan_tci)
        seen = 0
        for k, piece in enumerate(self.pieces):
            if seen + len(piece) >= 12:
                cut = 12 - seen
                return [*self.pieces[:k], piece[:cut], tag, piece[cut:], *self.pieces[k + 1 :]]
            seen += len(piece)
        return list(self.pieces)

    def wire_bytes(self) -> bytes:
        """The frame as it was on the wire (a copy)."""
        return b"".join(self.wire_iov())


class Chunk(NamedTuple):
    """What a commit names: the chunk's node, the record's offset, the generation, its pool."""

    node: int
    offset: int
    generation: int
    pool: int = 0


@dataclass(frozen=True, slots=True)
class CommitResult:
    accepted: int
    refused: int


class Fault(enum.Enum):
    """Why a frame was refused."""

    OUTSIDE = "names an unbound pool or bytes outside its pool"
    OPEN = "never got its last record"  # a chain still open when nothing can follow it


@dataclass(frozen=True)
class Rejected:
    """A frame the reader refused: its first record, how many it took, why."""

    seq: int
    records: int
    fault: Fault


@dataclass(frozen=True)
class Bulk:
    """Every whole frame ready at once, as packed ``struct nta_record``s: no object per frame.

    ``records`` is a copy of the ring slots (56 bytes a record), whole frames
    only; ``pieces`` each record's bytes in place; ``count`` the frames,
    ``bytes`` their length. A frame is one record, or a CONTD chain of them.
    """

    records: bytes
    pieces: list[memoryview]
    count: int
    bytes: int

    @property
    def chained(self) -> bool:
        return self.count != len(self.pieces)

    def lengths(self) -> memoryview[int]:
        """The records' lengths, a strided view of the records (no copy, no list)."""
        return memoryview(self.records).cast("I")[_LEN::_WORDS]

    def ifindexes(self) -> Sequence[int]:
        """Each frame's interface."""
        column = memoryview(self.records).cast("i")[_IFINDEX::_WORDS]
        if not self.chained:
            return column
        flags = self.records[_FLAGS_LOW::_RSIZE]
        return [i for i, f in zip(column, flags, strict=True) if not f & _CONTD]

    def frames(self) -> Iterator[list[memoryview]]:
        """Each frame's pieces, in place."""
        pieces: list[memoryview] = []
        for piece, flags in zip(self.pieces, self.records[_FLAGS_LOW::_RSIZE], strict=True):
            pieces.append(piece)
            if not flags & _CONTD:
                yield pieces
                pieces = []

    def crc_sum(self) -> int:
        """The sum of each frame's CRC32 (over its pieces, in order)."""
        if not self.chained:
            return sum(map(zlib.crc32, self.pieces))
        total = 0
        for pieces in self.frames():
            crc = 0
            for piece in pieces:
                crc = zlib.crc32(piece, crc)
            total += crc
        return total


def commits_of(records: bytes) -> bytearray:
    """The commits for packed records: node, offset, generation, pool; strided copies (C
    speed), not one Python object per record.

    The record's pool is 32 bits, the commit's 16 and a reserved 16 after
    it: the pool's high half goes into reserved, so a record naming a pool
    past 0xffff makes a commit the module refuses (NTA_BAD_RESERVED) rather
    than one naming another pool."""
    out = bytearray(len(records) // _RSIZE * _CSIZE)
    src, dst = memoryview(records).cast("I"), memoryview(out).cast("I")
    for name in ("node", "offset", "generation"):
        dst[abi.COMMIT[name].offset // 4 :: _CSIZE // 4] = src[
            abi.RECORD[name].offset // 4 :: _WORDS
        ]
    src16, dst16 = src.cast("B").cast("H"), dst.cast("B").cast("H")
    at = abi.COMMIT["pool"].offset // 2
    dst16[at :: _CSIZE // 2] = src16[_POOL // 2 :: _RSIZE // 2]
    dst16[at + 1 :: _CSIZE // 2] = src16[_POOL // 2 + 1 :: _RSIZE // 2]
    dst16.release()
    dst.release()  # the caller may grow out
    return out


def resolve(iface: str | int) -> int:
    """An interface index from a name, a decimal string, or an int."""
    if isinstance(iface, int):
        return iface
    if iface.isdecimal():
        return int(iface)
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise NoSuchInterface(f"no such interface: {iface}") from None


class Reader:
    """Open /dev/nta, attach interfaces, and read what they receive.

    ``device`` is a path or an already open ``Device`` (such as the fake's).
    ``commit_every=N`` commits in batches of N chunks (default: everything
    read so far, whenever the caller comes back for more); ``hold=N`` keeps
    the newest N chunks uncommitted; ``commit=False`` turns automatic commits
    off (explicit ``commit()`` still works). ``via`` is how commits go to the
    module: ``"ring"`` (default) or ``"write"``.
    """

    def __init__(
        self,
        interfaces: Sequence[str | int] = (),
        device: str | Device = DEFAULT_PATH,
        *,
        commit: bool = True,
        commit_every: int | None = None,
        hold: int = 0,
        via: str = "ring",
        direction: abi.Direction | None = None,
        program: Sequence[Insn] | None = None,
    ) -> None:
        if commit_every is not None and commit_every <= 0:
            raise ValueError("commit_every must be positive")
        if hold < 0:
            raise ValueError("hold must not be negative")
        if via not in ("ring", "write"):
            raise ValueError("via is 'ring' or 'write'")
        self.auto_commit = commit
        self.commit_every = commit_every
        self.hold = hold
        self.via = via
        self.committed = 0  # commits the module accepted
        self.refused = 0  # ... and refused (on the normal path: should stay 0)
        self.syscalls = 0  # poll, write and ioctl calls made since open
        self.hung_up = False  # poll() said POLLHUP or POLLERR: every attached device is gone
        self.rejected: Counter[Fault] = Counter()  # frames refused, by why
        self.on_reject: Callable[[Rejected], object] | None = None  # told of each
        self._pending = bytearray()  # packed struct nta_commit, oldest first
        self._maps: list[mmap.mmap] = []
        self.attached: dict[int, str] = {}  # ifindex -> name
        self.dev: Device = OsDevice(device) if isinstance(device, str) else device
        try:
            self._map()
            # Both before the first attach: the first frame is already the one asked for.
            if direction is not None:
                self.set_direction(direction)
            if program is not None:
                self.set_filter(program)
            for iface in interfaces:
                self.attach(iface)
        except BaseException:
            self.close()
            raise

    # -- setup --------------------------------------------------------------

    def _map(self) -> None:
        # The meta page is one page at a fixed offset; everything else comes from it. It
        # stays mapped: an attach binds a pool slot in it later.
        self._meta_page = self.dev.map(abi.MMAP_META_OFFSET, mmap.PAGESIZE, writable=False)
        self._maps.append(self._meta_page)
        self.meta = abi.Meta.parse(self._meta_page[: abi.META.size])
        m = self.meta
        self.ring = self.dev.map(m.ring_mmap_offset, m.ring_mmap_size, writable=True)
        self._maps.append(self.ring)
        # Per pool slot: its mapping and slot as mapped (None: not mapped), and a view per
        # node (empty: not mapped), a record's bytes being a slice of its node's. A list
        # indexed by the record's pool: the hot loops' lookup is one index.
        self.pools: list[abi.PoolInfo | None] = [None] * abi.MAX_POOLS
        self.pool_maps: list[mmap.mmap | None] = [None] * abi.MAX_POOLS
        self._pool_nodes: list[list[memoryview]] = [[] for _ in range(abi.MAX_POOLS)]
        self.map_pools()
        # The indices as 64-bit words: one aligned 8-byte load or store each
        # (memoryview item access is a fixed-size memcpy, compiled to one mov),
        # so the module never sees a torn index.
        self._index = memoryview(self.ring).cast("Q")
        self._flags = memoryview(self.ring).cast("I")
        self._producer_at = m.ring_producer_offset // 8
        self._consumer_at = m.ring_consumer_offset // 8
        self._cprod_at = m.commit_producer_offset // 8
        self._ccons_at = m.commit_consumer_offset // 8
        self._flags_at = m.commit_flags_offset // 4
        self._mask = m.ring_entries - 1
        self._records = m.ring_records_offset
        self._commits = m.commit_entries_offset
        self.consumer: int = self._index[self._consumer_at]
        self.commit_producer: int = self._index[self._cprod_at]

    def pool_slots(self) -> list[abi.PoolInfo]:
        """meta.pools[] as it is now (slots bound since the reader mapped it included)."""
        page = memoryview(self._meta_page)
        try:
            return [abi.PoolInfo.parse(page, p) for p in range(abi.MAX_POOLS)]
        finally:
            page.release()

    def map_pools(self) -> None:
        """Map every pool slot bound and not mapped yet (after an attach)."""
        for p in range(abi.MAX_POOLS):
            self._map_pool(p)

    def _map_pool(self, p: int) -> list[memoryview]:
        """Pool ``p``'s node views, mapping it first if its slot is bound and it is not
        mapped yet; empty if ``p`` is no slot or is unbound (its records are outside)."""
        if not 0 <= p < abi.MAX_POOLS:
            return []
        if self.pools[p] is not None:
            return self._pool_nodes[p]
        page = memoryview(self._meta_page)
        info = abi.PoolInfo.parse(page, p)
        page.release()
        if not info.bound:
            return []
        problems = info.problems(p, self.meta.page_size)
        if problems:
            raise AbiMismatch("inconsistent meta page: " + "; ".join(problems))
        pool = self.dev.map(info.mmap_offset, info.mmap_size, writable=False)
        self._maps.append(pool)
        view = memoryview(pool)
        size = info.node_size
        self._pool_nodes[p] = [view[n * size : (n + 1) * size] for n in range(info.node_count)]
        view.release()  # the node views hold the mapping's buffer on their own
        self.pools[p], self.pool_maps[p] = info, pool
        return self._pool_nodes[p]

    def attach(self, iface: str | int) -> int:
        """Start receiving what ``iface`` (name or index) receives; its index."""
        index = resolve(iface)
        self._ioctl_attach(abi.IOC_ATTACH, iface, index)
        named = isinstance(iface, str) and not iface.isdecimal()
        self.attached[index] = str(iface) if named else _name_of(index)
        self.map_pools()
        return index

    def detach(self, iface: str | int) -> None:
        index = resolve(iface)
        self._ioctl_attach(abi.IOC_DETACH, iface, index)
        self.attached.pop(index, None)

    def _ioctl(self, request: int, arg: bytearray) -> None:
        self.syscalls += 1
        self.dev.ioctl(request, arg)

    def _ioctl_attach(self, request: int, iface: str | int, index: int) -> None:
        arg = bytearray(abi.ATTACH.pack(ifindex=index, abi_version=abi.ABI_VERSION))
        try:
            self._ioctl(request, arg)
        except OSError as e:
            why = {
                errno.ENODEV: f"no such interface: {iface}",
                errno.EUSERS: f"cannot attach {iface}: it already has {abi.POOL_READERS} "
                "readers, the most a device's pool has at once",
                errno.ENOSPC: f"cannot attach {iface}: this reader has bound {abi.MAX_POOLS} "
                "pools, the most one reader binds in its life (open another reader)",
                errno.EPERM: f"cannot attach {iface}: CAP_NET_RAW is needed in its namespace",
                errno.EPROTO: f"the module does not speak pysniff's ABI {abi.ABI_VERSION}",
            }.get(e.errno or 0, f"cannot attach {iface}: {e.strerror}")
            if e.errno == errno.ENODEV:
                raise NoSuchInterface(why) from None
            raise SniffError(why) from None

    def set_wakeup(self, frames: int, usecs: int) -> None:
        """When the module wakes this reader (struct nta_wakeup): usecs 0 is every record."""
        try:
            self._ioctl(abi.IOC_SET_WAKEUP, bytearray(abi.WAKEUP.pack(frames=frames, usecs=usecs)))
        except OSError as e:
            why = f"wakeup policy {frames} frames / {usecs} us refused: {e.strerror}"
            raise SniffError(why) from None

    def set_direction(self, direction: abi.Direction) -> None:
        """Which frames of its devices this reader gets (NTA_IOC_SET_DIRECTION); a reader
        that never says gets what its devices receive (Direction.IN)."""
        arg = bytearray(abi.DIRECTION.pack(direction=direction))
        try:
            self._ioctl(abi.IOC_SET_DIRECTION, arg)
        except OSError as e:
            raise SniffError(f"direction {direction.name} refused: {e.strerror}") from None

    def set_filter(self, program: Sequence[Insn]) -> None:
        """A classic BPF program for this reader's taps (NTA_IOC_SET_FILTER), in place of any
        before it; the module's checker refuses a bad one (EINVAL) and keeps the old."""
        insns = ctypes.create_string_buffer(pack(program), len(program) * abi.SOCK_FILTER.size)
        arg = bytearray(abi.FILTER.pack(len=len(program), insns=ctypes.addressof(insns)))
        try:
            self._ioctl(abi.IOC_SET_FILTER, arg)
        except OSError as e:
            raise FilterError(f"the module refused the filter program: {e.strerror}") from None

    def detach_filter(self) -> None:
        """Every frame again (NTA_IOC_DETACH_FILTER)."""
        self._ioctl(abi.IOC_DETACH_FILTER, bytearray())

    # -- the ring -------------------------------------------------------------

    def producer(self) -> int:
        # On x86 (TSO) a load is never reordered with later loads, so reading
        # the producer before the records is the acquire the header asks for.
        # CPython has no fences: on weakly ordered CPUs the poll() syscall
        # between publication and this load is what orders them.
        producer: int = self._index[self._producer_at]
        if producer - self.consumer > self.meta.ring_entries or producer < self.consumer:
            raise SniffError(
                f"ring indices make no sense: producer {producer}, consumer {self.consumer}"
            )
        return producer

    def ready(self) -> int:
        """Records between the consumer and the producer index."""
        return self.producer() - self.consumer

    def wait(self, timeout: float | None) -> bool:
        """Commit what is due, then block until the module says records are due (True), or
        for ``timeout`` seconds. A hang-up (every attached device gone) sets ``hung_up``."""
        self._auto_commit()
        return self._poll(None if timeout is None else max(0, int(timeout * 1000)))

    def kick(self) -> bool:
        """A poll(0) and nothing else: the module takes the commit ring now."""
        return self._poll(0)

    def _poll(self, timeout_ms: int | None) -> bool:
        self.syscalls += 1
        events = self.dev.poll(timeout_ms)
        if events & (Events.HUP | Events.ERR):
            self.hung_up = True
        return bool(events & Events.IN)

    def _slots(self, n: int) -> bytes:
        """A copy of the ``n`` record slots from the consumer index (the ring may wrap once)."""
        first = self.consumer & self._mask
        head = min(n, self.meta.ring_entries - first)
        base = self._records
        records = self.ring[base + first * _RSIZE : base + (first + head) * _RSIZE]
        if n > head:
            records += self.ring[base : base + (n - head) * _RSIZE]
        return records

    def _consume(self, records: bytes) -> None:
        """Records taken (read or refused): their chunks to commit, their slots handed back."""
        self._pending += commits_of(records)
        self.consumer += len(records) // _RSIZE
        # Records are copied before this store, which hands their slots back to the
        # module: the release the header asks for.
        self._index[self._consumer_at] = self.consumer

    def _reject(self, seq: int, records: int, fault: Fault) -> None:
        self.rejected[fault] += 1
        if self.on_reject is not None:
            self.on_reject(Rejected(seq, records, fault))

    def _never_ends(self, first: int, end: int, last: bool) -> bool:
        """A frame from record ``first`` still open at the producer index ``end`` can never
        end: the module publishes a frame's records at once, so only a full ring (of it) or
        the end of the capture (``last``: the interfaces are gone) leaves one open."""
        return last or end - first >= self.meta.ring_entries

    def frames(self, limit: int | None = None, *, last: bool = False) -> Iterator[Frame]:
        """The frames ready now (at most ``limit``), in order, one ``Frame`` each.

        A frame of several records (NTA_RECORD_CONTD) is one Frame; one still open at
        the producer index is left for later, or refused if it can never end (see
        ``last``). The ready records are read in one copy; the consumer index moves
        past the frames yielded when the iteration ends (or is abandoned).
        """
        self._auto_commit()
        end = self.producer()
        records = self._slots(end - self.consumer)
        pools = self._pool_nodes
        taken = used = begin = 0  # frames yielded; records taken; the frame's first record
        first: tuple[int, ...] = ()
        pieces: list[memoryview] = []
        outside = False
        try:
            for k, rec in enumerate(_RECORD.iter_unpack(records)):
                if k == begin:  # a frame starts
                    if limit is not None and taken >= limit:
                        break
                    first, pieces, outside = rec, [], False
                offset, length = rec[1], rec[2]
                # A slice past the node's end comes back short: the bytes are not all there.
                try:
                    piece = pools[rec[_POOL_AT]][rec[0]][offset : offset + length]
                except IndexError:  # no such pool or node: maybe a pool not mapped yet
                    piece = self._late_piece(rec)
                if piece is not None and len(piece) == length:
                    pieces.append(piece)
                else:
                    outside = True
                if rec[8] & _CONTD:
                    continue
                if outside:
                    self._reject(first[4], k + 1 - begin, Fault.OUTSIDE)
                used = begin = k + 1
                if outside:
                    continue
                taken += 1
                tagged = first[8] & abi.RECORD_VLAN
                yield Frame(
                    first[4], first[5], first[6], first[7], first[8], first[9],
                    first[10] if tagged else None, socket.ntohs(first[11]) if tagged else 0,
                    tuple(pieces),
                )  # fmt: skip
            else:
                n = len(records) // _RSIZE
                if begin < n and self._never_ends(self.consumer + begin, end, last):
                    self._reject(first[4], n - begin, Fault.OPEN)
                    used = n
        finally:
            self._consume(records[: used * _RSIZE])

    def _late_piece(self, rec: tuple[int, ...]) -> memoryview | None:
        """A record's bytes once its pool is mapped (a pool no record named before), or None:
        the pool is unbound, or has no such node."""
        nodes = self._map_pool(rec[_POOL_AT])
        node, offset, length = rec[0], rec[1], rec[2]
        return nodes[node][offset : offset + length] if node < len(nodes) else None

    def bulk(self, limit: int | None = None, *, last: bool = False) -> Bulk:
        """Every whole frame ready now (at most ``limit``), in one copy of their ring slots;
        a frame left open or refused as by ``frames()``."""
        self._auto_commit()
        end = self.producer()
        n = end - self.consumer
        records = self._slots(n)
        flags = records[_FLAGS_LOW::_RSIZE]
        if flags.translate(None, _NOT_CONTD):  # some frame has several records
            ends = [k + 1 for k, f in enumerate(flags) if not f & _CONTD]
            frames = len(ends) if limit is None else min(len(ends), limit)
            whole = taken = ends[frames - 1] if frames else 0
            if (
                frames == len(ends)
                and whole < n
                and self._never_ends(self.consumer + whole, end, last)
            ):
                self._reject(_RECORD.unpack_from(records, whole * _RSIZE)[4], n - whole, Fault.OPEN)
                taken = n
        else:
            frames = whole = taken = n if limit is None else min(n, limit)
        good = records[: whole * _RSIZE]
        pieces = self._pieces(good)
        if pieces is None and self._map_named(good):  # a pool seen for the first time
            pieces = self._pieces(good)
        if pieces is None:  # some record names an unbound pool or bytes outside its pool
            good, frames = self._refuse_outside(good)
            pieces = self._pieces(good) or []
        self._consume(records[: taken * _RSIZE])
        return Bulk(good, pieces, frames, sum(map(len, pieces)))

    def _pieces(self, records: bytes) -> list[memoryview] | None:
        """Each record's bytes, in place, or None if one names an unmapped pool or bytes
        outside its pool: no such pool or node view, or the slice of it comes back short
        (so one sum checks the whole batch)."""
        pools = self._pool_nodes
        try:
            pieces = [pools[p][i][at : at + n] for i, at, n, p in _SPAN.iter_unpack(records)]
        except IndexError:
            return None
        want = sum(memoryview(records).cast("I")[_LEN::_WORDS])
        return pieces if sum(map(len, pieces)) == want else None

    def _map_named(self, records: bytes) -> bool:
        """Map the pools ``records`` name that are bound and not mapped yet; whether any was."""
        named = set(memoryview(records).cast("I")[_POOL // 4 :: _WORDS])
        return any(self.pools[p] is None and self._map_pool(p) for p in named if p < abi.MAX_POOLS)

    def _refuse_outside(self, records: bytes) -> tuple[bytes, int]:
        """The frames of ``records`` whose bytes are all in their pools, and how many; the
        others refused (the slow path, for a batch that has such a frame)."""
        good, frames, begin, seq, outside = bytearray(), 0, 0, 0, False
        for k, rec in enumerate(_RECORD.iter_unpack(records)):
            if k == begin:
                seq, outside = rec[4], False
            pool = self.pools[rec[_POOL_AT]] if rec[_POOL_AT] < abi.MAX_POOLS else None
            outside = (
                outside
                or pool is None
                or rec[0] >= pool.node_count
                or rec[1] + rec[2] > pool.node_size
            )
            if rec[8] & _CONTD:
                continue
            if outside:
                self._reject(seq, k + 1 - begin, Fault.OUTSIDE)
            else:
                good += records[begin * _RSIZE : (k + 1) * _RSIZE]
                frames += 1
            begin = k + 1
        return bytes(good), frames

    # -- commits ------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Chunks read and not committed yet."""
        return len(self._pending) // _CSIZE

    def pending_chunks(self) -> list[Chunk]:
        """Each pending chunk, oldest first."""
        return [Chunk(n, o, g, p) for n, o, g, p, _ in _COMMIT.iter_unpack(self._pending)]

    def _auto_commit(self) -> None:
        if not self.auto_commit:
            return
        ready = self.pending - self.hold
        if self.commit_every is not None:
            ready -= ready % self.commit_every
        if ready > 0:
            self.commit(keep=self.pending - ready)

    def commit(self, keep: int | None = None) -> CommitResult:
        """Hand back every pending chunk but the newest ``keep`` (default: ``hold``).

        Through the commit ring the module checks each later: ``accepted``
        counts them as handed over, and refusals show in its counters only.
        """
        keep = self.hold if keep is None else keep
        count = max(0, self.pending - keep)
        if not keep:  # all of it, the usual case: handed over, not copied
            todo, self._pending = self._pending, bytearray()
        else:
            todo = self._pending[: count * _CSIZE]
            del self._pending[: count * _CSIZE]
        if self.via == "ring":
            self.ring_commits(todo)
            self.committed += count
            return CommitResult(count, 0)
        step = (self.commit_every or self.meta.max_commit_batch) * _CSIZE
        step = min(step, self.meta.max_commit_batch * _CSIZE)
        accepted = sum(self.write_commits(todo[at : at + step]) for at in range(0, len(todo), step))
        self.committed += accepted
        self.refused += count - accepted
        return CommitResult(accepted, count - accepted)

    def commit_room(self) -> int:
        """Free slots in the commit ring (the module's consumer index read once)."""
        consumer: int = self._index[self._ccons_at]
        used = self.commit_producer - consumer
        return max(0, self.meta.commit_entries - used)

    def need_wakeup(self) -> bool:
        return bool(self._flags[self._flags_at] & abi.COMMIT_NEED_WAKEUP)

    def ring_commits(self, commits: bytes | bytearray) -> None:
        """Packed commits as they are, into the commit ring; a system call only when due.

        When the ring is full, poll() makes the module take what it holds.
        This is also how malformed commits are put in the ring on purpose.
        """
        entries = self.meta.commit_entries
        data = memoryview(commits)  # slices of it are not copies
        at = 0
        while at < len(data):
            room = self.commit_room()
            if not room:
                self.kick()
                if not self.commit_room():
                    raise SniffError("the commit ring stays full: the module takes no commits")
                continue
            n = min(room, (len(data) - at) // _CSIZE)
            first = self.commit_producer % entries
            head = min(n, entries - first)
            base = self._commits
            self.ring[base + first * _CSIZE : base + (first + head) * _CSIZE] = data[
                at : at + head * _CSIZE
            ]
            if n > head:
                self.ring[base : base + (n - head) * _CSIZE] = data[
                    at + head * _CSIZE : at + n * _CSIZE
                ]
            # The entries are written before the module can see the new producer.
            self.commit_producer += n
            self._index[self._cprod_at] = self.commit_producer
            at += n * _CSIZE
        if data and self.need_wakeup():
            self.kick()

    def set_commit_producer(self, value: int) -> None:
        """The commit producer index as given (bad-commit tests put nonsense there)."""
        self.commit_producer = value
        self._index[self._cprod_at] = value

    def write_commits(self, data: bytes | bytearray) -> int:
        """One write() of packed commits as is; how many the module accepted.

        The module checks them in order and stops at the first refused one
        (see struct nta_commit): the caller owns the accounting. This is also
        how malformed commits are sent on purpose.
        """
        self.syscalls += 1
        try:
            return self.dev.write(data) // _CSIZE
        except OSError as e:
            if is_refusal(e):
                return 0
            raise SniffError(f"commit write failed: {e.strerror}") from None

    def forget_pending(self, count: int) -> None:
        """Drop the oldest ``count`` pending chunks (the caller committed them itself)."""
        del self._pending[: count * _CSIZE]

    # -- counters -------------------------------------------------------------

    def stats(self) -> abi.Stats:
        """The module-wide counters (NTA_IOC_STATS)."""
        buf = bytearray(abi.STATS.size)
        self._ioctl(abi.IOC_STATS, buf)
        return abi.Stats.from_raw(buf)

    def dev_stats(self, iface: str | int) -> abi.DevStats:
        """This reader's counters for one of its devices (NTA_IOC_DEV_STATS)."""
        buf = bytearray(abi.DEV_STATS.pack(ifindex=resolve(iface)))
        try:
            self._ioctl(abi.IOC_DEV_STATS, buf)
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise NoSuchInterface(f"{iface} is not attached to this reader") from None
            raise
        return abi.DevStats.from_raw(buf)

    def reader_stats(self) -> abi.ReaderStats:
        buf = bytearray(abi.READER_STATS.size)
        self._ioctl(abi.IOC_READER_STATS, buf)
        return abi.ReaderStats.from_raw(buf)

    def devices_gone(self) -> bool:
        """Every attached device is gone (NTA_DEV_GONE in its dev stats: an ioctl each), what
        a module that does not say POLLHUP tells."""
        return bool(self.attached) and all(self.dev_stats(i).gone for i in self.attached)

    # -- teardown -----------------------------------------------------------

    def close(self) -> None:
        """Unmap and close: the module takes back every chunk still held.

        A mapping whose bytes the caller still references (a Frame kept
        alive) cannot be unmapped yet; it goes when the last view does, and
        the module's release runs then.
        """
        for nodes in self.__dict__.pop("_pool_nodes", []):
            for mv in nodes:
                mv.release()
        for name in ("_index", "_flags"):
            mv = self.__dict__.pop(name, None)
            if isinstance(mv, memoryview):
                mv.release()
        for m in self._maps:
            # BufferError: a Frame the caller kept still views it; it unmaps with that view.
            with contextlib.suppress(BufferError):
                m.close()
        self._maps = []
        self.dev.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _name_of(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)
