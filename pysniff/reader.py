"""The zero-copy reader: map NTA's nodes and ring, read frames in place, commit them back.

Lifetime of a frame's bytes: ``Frame.data`` (and the views of a ``Bulk``)
point into the module's chunk, not into a copy. The chunk stays the reader's
until it is committed, so the bytes are valid until the reader commits it:
by default when the caller comes back for more (the next ``wait()``,
``frames()`` or ``bulk()``), or on an explicit ``commit()``. ``hold=N``
keeps the newest N chunks back from every commit; ``commit=False`` never
commits (the module takes everything back when the reader closes).
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
from pysniff.device import DEFAULT_PATH, Device, OsDevice, is_refusal
from pysniff.errors import AbiMismatch, NoSuchInterface, SniffError

__all__ = ["AbiMismatch", "Bulk", "Chunk", "CommitResult", "Frame", "Reader", "SniffError"]

_RECORD = abi.RECORD.struct
_COMMIT = abi.COMMIT.struct
_RSIZE = abi.RECORD.size
_CSIZE = abi.COMMIT.size


@dataclass(frozen=True, slots=True)
class Frame:
    """One received frame: the record's fields, and ``data``, a view into the chunk."""

    node: int
    offset: int
    len: int
    generation: int
    seq: int
    tstamp_ns: int
    ifindex: int
    protocol: int  # network byte order, as skb->protocol
    flags: int
    chunk: int
    vlan_tci: int | None  # the tag the NIC stripped from the frame, if it did
    data: memoryview

    def wire_bytes(self) -> bytes:
        """The frame as it was on the wire (a copy): a stripped VLAN tag goes back in."""
        if self.vlan_tci is None:
            return bytes(self.data)
        tag = struct.pack("!HH", 0x8100, self.vlan_tci)
        return bytes(self.data[:12]) + tag + bytes(self.data[12:])


class Chunk(NamedTuple):
    """What a commit names: the chunk's node, the frame offset, the generation."""

    node: int
    offset: int
    generation: int


@dataclass(frozen=True, slots=True)
class CommitResult:
    accepted: int
    refused: int


@dataclass(frozen=True)
class Bulk:
    """Every record ready at once, as packed ``struct nta_record``s: no object per frame.

    ``records`` is a copy of the ring slots (48 bytes a frame); the frames'
    bytes stay in place, reachable through ``nodes``.
    """

    records: bytes
    nodes: memoryview
    node_size: int

    @property
    def count(self) -> int:
        return len(self.records) // _RSIZE

    def lengths(self) -> memoryview:
        """The frame lengths, a strided view of the records (no copy, no list)."""
        return memoryview(self.records).cast("I")[abi.RECORD["len"].offset // 4 :: _RSIZE // 4]

    def ifindexes(self) -> memoryview:
        return memoryview(self.records).cast("i")[abi.RECORD["ifindex"].offset // 4 :: _RSIZE // 4]

    def views(self) -> Iterator[memoryview]:
        """Each frame's bytes, in place (without a stripped VLAN tag)."""
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
    ``commit_every=N`` commits in writes of N chunks (default: everything
    read so far, whenever the caller comes back for more); ``hold=N`` keeps
    the newest N chunks uncommitted; ``commit=False`` turns automatic commits
    off (explicit ``commit()`` still works).
    """

    def __init__(
        self,
        interfaces: Sequence[str | int] = (),
        device: str | Device = DEFAULT_PATH,
        *,
        commit: bool = True,
        commit_every: int | None = None,
        hold: int = 0,
    ) -> None:
        if commit_every is not None and commit_every <= 0:
            raise ValueError("commit_every must be positive")
        if hold < 0:
            raise ValueError("hold must not be negative")
        self.auto_commit = commit
        self.commit_every = commit_every
        self.hold = hold
        self.committed = 0  # commits the module accepted
        self.refused = 0  # ... and refused (on the normal path: should stay 0)
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
        # so the module never sees a torn consumer index.
        self._index = memoryview(self.ring).cast("Q")
        self._producer_at = m.ring_producer_offset // 8
        self._consumer_at = m.ring_consumer_offset // 8
        self._mask = m.ring_entries - 1
        self._records = m.ring_records_offset
        self.consumer: int = self._index[self._consumer_at]

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

    def _ioctl_attach(self, request: int, iface: str | int, index: int) -> None:
        try:
            self.dev.ioctl(request, bytearray(abi.ATTACH.pack(ifindex=index)))
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise NoSuchInterface(f"no such interface: {iface}") from None
            if e.errno == errno.EBUSY:
                raise SniffError(f"{iface} is attached to another reader") from None
            if e.errno == errno.ENOSPC:
                raise SniffError(f"cannot attach {iface}: NTA attaches at most 8 devices") from None
            raise SniffError(f"cannot attach {iface}: {e.strerror}") from None

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
        """Block until records are ready (True) or ``timeout`` seconds pass (False)."""
        self._auto_commit()
        if self.ready():
            return True
        return self.dev.poll(None if timeout is None else max(0, int(timeout * 1000)))

    def frames(self, limit: int | None = None) -> Iterator[Frame]:
        """The frames ready now (at most ``limit``), in order, one ``Frame`` each.

        The consumer index moves past each frame as it is yielded, and is
        published when the iteration ends (or is abandoned).
        """
        self._auto_commit()
        end = self.producer()
        if limit is not None:
            end = min(end, self.consumer + limit)
        m, view, pending = self.meta, self.view, self._pending
        try:
            while self.consumer < end:
                slot = self._records + (self.consumer & self._mask) * _RSIZE
                node, off, length, gen, seq, ts, ifx, proto, flags, chunk, tci, _ = (
                    _RECORD.unpack_from(self.ring, slot)
                )
                if node >= m.node_count or off + length > m.node_size:
                    raise SniffError(f"record {seq} names bytes outside the nodes")
                start = node * m.node_size + off
                pending += _COMMIT.pack(node, off, gen, 0)
                self.consumer += 1
                stripped = flags & abi.RECORD_VLAN_STRIPPED
                yield Frame(
                    node, off, length, gen, seq, ts, ifx, proto, flags, chunk,
                    tci if stripped else None, view[start : start + length],
                )  # fmt: skip
        finally:
            self._publish_consumer()

    batch = frames  # the name the first version of the CLI used

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
        """Commit every pending chunk but the newest ``keep`` (default: ``hold``)."""
        keep = self.hold if keep is None else keep
        count = max(0, self.pending - keep)
        todo = bytes(self._pending[: count * _CSIZE])
        del self._pending[: count * _CSIZE]
        step = (self.commit_every or self.meta.max_commit_batch) * _CSIZE
        step = min(step, self.meta.max_commit_batch * _CSIZE)
        accepted = sum(self.write_commits(todo[at : at + step]) for at in range(0, len(todo), step))
        self.committed += accepted
        self.refused += count - accepted
        return CommitResult(accepted, count - accepted)

    def write_commits(self, data: bytes) -> int:
        """One write() of packed commits as is; how many the module accepted.

        The caller owns the accounting: this is also how malformed commits
        are sent on purpose.
        """
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
        self.dev.ioctl(abi.IOC_STATS, buf)
        return abi.Stats.from_raw(buf)

    def dev_stats(self, iface: str | int) -> abi.DevStats:
        """One attached device's counters (NTA_IOC_DEV_STATS)."""
        buf = bytearray(abi.DEV_STATS.pack(ifindex=resolve(iface)))
        try:
            self.dev.ioctl(abi.IOC_DEV_STATS, buf)
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise NoSuchInterface(f"{iface} is not attached to NTA") from None
            raise
        return abi.DevStats.from_raw(buf)

    # -- teardown -----------------------------------------------------------

    def close(self) -> None:
        """Unmap and close: the module takes back every chunk still held.

        A mapping whose bytes the caller still references (a Frame kept
        alive) cannot be unmapped yet; it goes when the last view does, and
        the module's release runs then.
        """
        for name in ("_index", "view"):
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
