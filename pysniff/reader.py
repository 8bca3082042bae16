"""The zero-copy reader: map NTA's pool and rings, read frames in place, hand chunks back.

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
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

from pysniff import abi
from pysniff.device import DEFAULT_PATH, Device, Events, OsDevice, is_refusal
from pysniff.errors import AbiMismatch, NoSuchInterface, SniffError

__all__ = ["AbiMismatch", "Bulk", "Chunk", "CommitResult", "Frame", "Reader", "SniffError"]

_RECORD = abi.RECORD.struct
_COMMIT = abi.COMMIT.struct
_RSIZE = abi.RECORD.size
_CSIZE = abi.COMMIT.size
_TAG = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class Frame:
    """One received frame: its first record's fields, and its bytes in place, piece by piece."""

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
        """The frame as it was on the wire, as buffers for writev(): a tag taken out goes back."""
        if self.vlan_tci is None:
            return list(self.pieces)
        first = self.pieces[0]
        tag = _TAG.pack(self.vlan_proto, self.vlan_tci)
        return [first[:12], tag, first[12:], *self.pieces[1:]]

    def wire_bytes(self) -> bytes:
        """The frame as it was on the wire (a copy)."""
        return b"".join(self.wire_iov())


class Chunk(NamedTuple):
    """What a commit names: the chunk's node, the record's offset, the generation."""

    node: int
    offset: int
    generation: int


@dataclass(frozen=True, slots=True)
class CommitResult:
    accepted: int
    refused: int


@dataclass(frozen=True)
class Bulk:
    """Every record ready at once, as packed ``struct nta_record``s: no object per record.

    ``records`` is a copy of the ring slots (48 bytes a record); the frames'
    bytes stay in place, reachable through ``nodes``.
    """

    records: bytes
    nodes: memoryview
    node_size: int

    @property
    def count(self) -> int:
        return len(self.records) // _RSIZE

    def lengths(self) -> memoryview:
        """The pieces' lengths, a strided view of the records (no copy, no list)."""
        return memoryview(self.records).cast("I")[abi.RECORD["len"].offset // 4 :: _RSIZE // 4]

    def ifindexes(self) -> memoryview:
        return memoryview(self.records).cast("i")[abi.RECORD["ifindex"].offset // 4 :: _RSIZE // 4]

    def views(self) -> Iterator[memoryview]:
        """Each record's bytes, in place (a frame of several records gives several)."""
        for node, offset, length, *_ in _RECORD.iter_unpack(self.records):
            start = node * self.node_size + offset
            yield self.nodes[start : start + length]


def commits_of(records: bytes) -> bytes:
    """The commits for packed records: node, offset, generation, zero; built by strided
    byte copies (C speed), not one Python object per record."""
    n = len(records) // _RSIZE
    out = bytearray(n * _CSIZE)
    for name in ("node", "offset", "generation"):
        src, dst = abi.RECORD[name].offset, abi.COMMIT[name].offset
        for k in range(4):
            out[dst + k :: _CSIZE] = records[src + k :: _RSIZE]
    return bytes(out)


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
        self._pending = bytearray()  # packed struct nta_commit, oldest first
        self._maps: list[mmap.mmap] = []
        self.attached: dict[int, str] = {}  # ifindex -> name
        self.dev: Device = OsDevice(device) if isinstance(device, str) else device
        try:
            self._map()
            for iface in interfaces:
                self.attach(iface)
        except BaseException:
            self.close()
            raise

    # -- setup --------------------------------------------------------------

    def _map(self) -> None:
        # The meta page is one page at a fixed offset; everything else comes from it.
        meta_map = self.dev.map(abi.MMAP_META_OFFSET, mmap.PAGESIZE, writable=False)
        try:
            self.meta = abi.Meta.parse(meta_map[: abi.META.size])
        finally:
            meta_map.close()
        m = self.meta
        self.ring = self.dev.map(m.ring_mmap_offset, m.ring_mmap_size, writable=True)
        self._maps.append(self.ring)
        self.nodes = self.dev.map(m.nodes_mmap_offset, m.nodes_mmap_size, writable=False)
        self._maps.append(self.nodes)
        self.view = memoryview(self.nodes)
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

    def attach(self, iface: str | int) -> int:
        """Start receiving what ``iface`` (name or index) receives; its index."""
        index = resolve(iface)
        self._ioctl_attach(abi.IOC_ATTACH, iface, index)
        named = isinstance(iface, str) and not iface.isdecimal()
        self.attached[index] = str(iface) if named else _name_of(index)
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
                errno.EBUSY: f"{iface} is attached to another reader",
                errno.ENOSPC: f"cannot attach {iface}: a reader attaches at most 8 devices",
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

    def _publish_consumer(self) -> None:
        # Records are unpacked (copied) before this store, which hands their
        # slots back to the module: the release the header asks for.
        self._index[self._consumer_at] = self.consumer

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

    def _record(self, index: int) -> tuple[int, ...]:
        return _RECORD.unpack_from(self.ring, self._records + (index & self._mask) * _RSIZE)

    def frames(self, limit: int | None = None) -> Iterator[Frame]:
        """The frames ready now (at most ``limit``), in order, one ``Frame`` each.

        A frame of several records (NTA_RECORD_CONTD) is one Frame. The
        consumer index moves past each frame as it is yielded, and is
        published when the iteration ends (or is abandoned).
        """
        self._auto_commit()
        end = self.producer()
        m, view, pending = self.meta, self.view, self._pending
        taken = 0
        try:
            while self.consumer < end and (limit is None or taken < limit):
                at, pieces = self.consumer, []
                while True:
                    if at == end:  # a frame the module has not finished publishing
                        return
                    node, off, length, gen, seq, _, _, _, flags, *_ = self._record(at)
                    if node >= m.node_count or off + length > m.node_size:
                        raise SniffError(f"record {seq} names bytes outside the pool")
                    start = node * m.node_size + off
                    pieces.append((view[start : start + length], node, off, gen))
                    at += 1
                    if not flags & abi.RECORD_CONTD:
                        break
                first = self._record(self.consumer)
                for _, node, off, gen in pieces:
                    pending += _COMMIT.pack(node, off, gen, 0)
                self.consumer = at
                taken += 1
                tagged = first[8] & abi.RECORD_VLAN
                yield Frame(
                    seq=first[4], tstamp_ns=first[5], ifindex=first[6], protocol=first[7],
                    flags=first[8], len=first[9], vlan_tci=first[10] if tagged else None,
                    vlan_proto=socket.ntohs(first[11]) if tagged else 0,
                    pieces=tuple(p[0] for p in pieces),
                )  # fmt: skip
        finally:
            self._publish_consumer()

    def bulk(self, limit: int | None = None) -> Bulk:
        """All records ready now (at most ``limit``) in one copy of their ring slots."""
        self._auto_commit()
        n = self.producer() - self.consumer
        if limit is not None:
            n = min(n, limit)
        first = self.consumer & self._mask
        head = min(n, self.meta.ring_entries - first)  # the ring may wrap once
        base = self._records
        records = self.ring[base + first * _RSIZE : base + (first + head) * _RSIZE]
        if n > head:
            records += self.ring[base : base + (n - head) * _RSIZE]
        self._pending += commits_of(records)
        self.consumer += n
        self._publish_consumer()
        return Bulk(records, self.view, self.meta.node_size)

    # -- commits ------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Chunks read and not committed yet."""
        return len(self._pending) // _CSIZE

    def pending_chunks(self) -> list[Chunk]:
        """Each pending chunk, oldest first."""
        return [Chunk(n, o, g) for n, o, g, _ in _COMMIT.iter_unpack(self._pending)]

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
        todo = bytes(self._pending[: count * _CSIZE])
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

    def ring_commits(self, data: bytes) -> None:
        """Packed commits as they are, into the commit ring; a system call only when due.

        When the ring is full, poll() makes the module take what it holds.
        This is also how malformed commits are put in the ring on purpose.
        """
        entries = self.meta.commit_entries
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

    def write_commits(self, data: bytes) -> int:
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

    # -- teardown -----------------------------------------------------------

    def close(self) -> None:
        """Unmap and close: the module takes back every chunk still held.

        A mapping whose bytes the caller still references (a Frame kept
        alive) cannot be unmapped yet; it goes when the last view does, and
        the module's release runs then.
        """
        for name in ("_index", "_flags", "view"):
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
