"""The zero-copy reader: map NTA's nodes and ring, read frames in place, commit them back."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import select
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from pysniff import abi


class SniffError(Exception):
    """A problem the user can act on (module not loaded, no permission, bad interface)."""


class AbiMismatch(SniffError):
    pass


@dataclass(frozen=True)
class Frame:
    """One received frame; ``data`` is a view into the kernel's buffer, not a copy."""

    node: int
    offset: int
    generation: int
    seq: int
    tstamp_ns: int
    ifindex: int
    vlan_tci: int | None  # the tag the stack moved out of the frame, if any
    data: memoryview


class Reader:
    """Open /dev/nta, attach interfaces, and read what they receive.

    Frames are yielded in batches of what is ready; after each batch the
    consumer index moves on and, unless ``hold`` frames are to be kept,
    every frame of the batch is committed in one write().
    """

    def __init__(
        self, interfaces: Sequence[str | int] = (), device: str = "/dev/nta", commit: bool = True
    ) -> None:
        self.commit_frames = commit
        try:
            self.fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SniffError(
                f"{device} does not exist: is the nta module loaded (insmod nta.ko)?"
            ) from None
        except PermissionError:
            raise SniffError(f"no permission to open {device} (it is root's, mode 0600)") from None
        try:
            self._map()
            for iface in interfaces:
                self.attach(iface)
        except BaseException:
            self.close()
            raise
        self.consumer = self._u64(self.meta["ring_consumer_offset"])
        self.committed = 0
        self.refused = 0
        self.pending: list[tuple[int, int, int]] = []  # (node, offset, generation)

    def _map(self) -> None:
        page = mmap.PAGESIZE
        meta_map = mmap.mmap(self.fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
        values = abi.META.unpack_from(meta_map)
        meta_map.close()
        self.meta = dict(zip(abi.META_FIELDS, values, strict=False))
        if self.meta["magic"] != abi.MAGIC or self.meta["abi_version"] != abi.ABI_VERSION:
            raise AbiMismatch(
                f"module ABI {self.meta['abi_version']:#x} (magic {self.meta['magic']:#x}), "
                f"pysniff speaks {abi.ABI_VERSION}"
            )
        sizes = (self.meta["meta_size"], self.meta["record_size"], self.meta["commit_size"])
        if sizes != (abi.META.size, abi.RECORD.size, abi.COMMIT.size):
            raise AbiMismatch(f"module struct sizes {sizes} differ from pysniff's")
        self.ring = mmap.mmap(
            self.fd, self.meta["ring_mmap_size"], mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE, offset=self.meta["ring_mmap_offset"],
        )  # fmt: skip
        self.nodes = mmap.mmap(
            self.fd, self.meta["nodes_mmap_size"], mmap.MAP_SHARED, mmap.PROT_READ,
            offset=self.meta["nodes_mmap_offset"],
        )  # fmt: skip
        self.view = memoryview(self.nodes)
        self.mask = self.meta["ring_entries"] - 1

    def _u64(self, offset: int) -> int:
        return int.from_bytes(self.ring[offset : offset + 8], "little")

    def attach(self, iface: str | int) -> int:
        try:
            index = iface if isinstance(iface, int) else socket.if_nametoindex(iface)
        except OSError:
            raise SniffError(f"no such interface: {iface}") from None
        try:
            fcntl.ioctl(self.fd, abi.IOC_ATTACH, abi.ATTACH.pack(index, 0))
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise SniffError(f"{iface} is attached to another reader") from None
            raise SniffError(f"cannot attach {iface}: {e.strerror}") from None
        return index

    def stats(self) -> dict[str, int]:
        raw = bytearray(abi.STATS.size)
        fcntl.ioctl(self.fd, abi.IOC_STATS, raw)
        return abi.parse_stats(bytes(raw))

    def wait(self, timeout: float | None) -> bool:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))

    def batch(self) -> Iterator[Frame]:
        """The frames ready now, in order; the consumer index moves past them after."""
        producer = self._u64(self.meta["ring_producer_offset"])
        base = self.meta["ring_records_offset"]
        for seq in range(self.consumer, producer):
            r = abi.RECORD.unpack_from(self.ring, base + (seq & self.mask) * abi.RECORD.size)
            node, offset, length, generation, rseq, tstamp, ifindex, _, flags, _, tci, _ = r
            start = node * self.meta["node_size"] + offset
            yield Frame(
                node, offset, generation, rseq, tstamp, ifindex,
                tci if flags & abi.RECORD_VLAN_STRIPPED else None,
                self.view[start : start + length],
            )  # fmt: skip
            self.pending.append((node, offset, generation))
        self.consumer = producer
        self.ring[self.meta["ring_consumer_offset"] : self.meta["ring_consumer_offset"] + 8] = (
            producer.to_bytes(8, "little")
        )

    def commit(self, keep: int = 0) -> int:
        """Hand back all pending chunks but the last ``keep``; how many were accepted."""
        if not self.commit_frames:
            return 0
        todo = self.pending[: len(self.pending) - keep] if keep else self.pending
        self.pending = self.pending[len(todo) :]
        accepted = 0
        limit = self.meta["max_commit_batch"]
        for at in range(0, len(todo), limit):
            part = todo[at : at + limit]
            buf = b"".join(abi.COMMIT.pack(n, o, g, 0) for n, o, g in part)
            try:
                accepted += os.write(self.fd, buf) // abi.COMMIT.size
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
        self.committed += accepted
        self.refused += len(todo) - accepted
        return accepted

    def close(self) -> None:
        """Unmap and close: the module takes back every chunk still held."""
        for name in ("view", "nodes", "ring"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.release() if isinstance(obj, memoryview) else obj.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
