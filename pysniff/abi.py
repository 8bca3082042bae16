"""Mirror of kmod/nta_uapi.h: struct layouts, ioctl numbers, reasons, constants.

The header is the single source of the ABI. This module restates it in
Python, and tests/test_pysniff_abi.py compiles a C probe from the header and
compares every size, offset, ioctl number and enum value with what is here,
so the two cannot drift apart silently.

Every struct is packed little endian ("<") with no implicit padding: the
header pads explicitly, and the probe checks that the C compiler agrees.
Only the meta page's own offset is fixed; everything else about the shared
memory (mapping offsets and sizes, where the ring indices live) is read from
the meta page at run time, never hard-coded.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

from pysniff.errors import AbiMismatch

DEVICE_NAME = "nta"
MAGIC = 0x3141544E  # "NTA1" in memory order
ABI_VERSION = 3
MMAP_META_OFFSET = 0
MAX_POOLS = 8  # NTA_MAX_POOLS: pools one reader binds in its life (then ENOSPC)
POOL_READERS = 16  # NTA_POOL_READERS: readers of one pool at once (then EUSERS)
RECORD_VLAN = 0x0001  # the stack took a VLAN tag out: vlan_tci, vlan_proto
RECORD_CONTD = 0x0002  # the frame continues in the next record
RECORD_COPY = 0x0004  # the frame was copied into its chunks (GRO merged it)
RECORD_OUTGOING = 0x0008  # the device sent the frame (a copy: RECORD_COPY too)
COMMIT_NEED_WAKEUP = 0x0001  # the module stopped sharing: a system call takes commits now
DEV_GONE = 0x0001  # the device was unregistered or left the namespace


@dataclass(frozen=True)
class Field:
    """One member of a C struct: a struct format code repeated ``count`` times, or (``layout``
    set) an array of ``count`` structs, ``code`` then being one struct's format."""

    name: str
    code: str
    count: int
    offset: int
    layout: Layout | None = None

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.code) * self.count

    @property
    def format(self) -> str:
        return self.code * self.count if self.layout else f"{self.count}{self.code}"

    def names(self) -> list[str]:
        """The flat names of its values: ``a`` for a scalar, ``a_i`` for an array, ``a_i_m``
        for member m of struct i."""
        if self.layout is not None:
            return [f"{self.name}_{i}_{f}" for i in range(self.count) for f in self.layout.flat]
        return [self.name] if self.count == 1 else [f"{self.name}_{i}" for i in range(self.count)]


class Layout:
    """A C struct as a ``struct.Struct`` plus the name, offset and size of each member.

    A member is (name, code), (name, code, count), or (name, Layout, count): an array of
    structs, flattened as ``name_i_member``."""

    def __init__(
        self,
        c_name: str,
        members: Sequence[tuple[str, str] | tuple[str, str, int] | tuple[str, Layout, int]],
    ):
        self.c_name = c_name
        out: list[Field] = []
        offset = 0
        for member in members:
            name, kind = member[0], member[1]
            count = member[2] if len(member) == 3 else 1
            if isinstance(kind, Layout):
                out.append(Field(name, kind.struct.format[1:], count, offset, kind))
            else:
                out.append(Field(name, kind, count, offset))
            offset += out[-1].size
        self.fields: tuple[Field, ...] = tuple(out)
        self.struct: struct.Struct = struct.Struct("<" + "".join(f.format for f in out))
        self.size = self.struct.size
        self.flat: tuple[str, ...] = tuple(n for f in out for n in f.names())
        self._by_name = {f.name: f for f in out}

    def __getitem__(self, name: str) -> Field:
        return self._by_name[name]

    def unpack(self, buf: bytes | bytearray | memoryview, at: int = 0) -> dict[str, int]:
        """Members by name: an array ``a[n]`` as ``a_0`` .. ``a_{n-1}``, a struct array's
        members as ``a_i_member``."""
        return dict(zip(self.flat, self.struct.unpack_from(buf, at), strict=True))

    def pack(self, values: Mapping[str, int] | None = None, **kw: int) -> bytes:
        """Members by name (as ``unpack`` names them); anything not given is zero."""
        given = {**(values or {}), **kw}
        flat = [given.pop(name, 0) for name in self.flat]
        if given:
            raise KeyError(f"{self.c_name} has no member {', '.join(sorted(given))}")
        return self.struct.pack(*flat)


POOL_INFO = Layout(
    "nta_pool_info",
    [("mmap_offset", "Q"), ("mmap_size", "Q"), ("node_count", "I"), ("node_size", "I"),
     ("ifindex", "i"), ("reserved", "I")],
)  # fmt: skip

META = Layout(
    "nta_meta",
    [
        ("magic", "I"), ("abi_version", "I"), ("meta_size", "I"), ("record_size", "I"),
        ("commit_size", "I"), ("page_size", "I"), ("max_pools", "I"), ("pool_info_size", "I"),
        ("chunk_size", "I"), ("ring_entries", "I"), ("commit_entries", "I"),
        ("max_shared", "I"), ("max_commit_batch", "I"), ("reserved0", "I"),
        ("ring_mmap_offset", "Q"), ("ring_mmap_size", "Q"),
        ("ring_producer_offset", "I"), ("ring_consumer_offset", "I"),
        ("ring_records_offset", "I"), ("commit_producer_offset", "I"),
        ("commit_consumer_offset", "I"), ("commit_flags_offset", "I"),
        ("commit_entries_offset", "I"), ("reserved1", "I"), ("reserved", "Q", 4),
        ("pools", POOL_INFO, MAX_POOLS),
    ],
)  # fmt: skip

RECORD = Layout(
    "nta_record",
    [
        ("node", "I"), ("offset", "I"), ("len", "I"), ("generation", "I"), ("seq", "Q"),
        ("tstamp_ns", "Q"), ("ifindex", "i"), ("protocol", "H"), ("flags", "H"),
        ("frame_len", "I"), ("vlan_tci", "H"), ("vlan_proto", "H"), ("pool", "I"),
        ("reserved", "I"),
    ],
)  # fmt: skip

COMMIT = Layout(
    "nta_commit",
    [("node", "I"), ("offset", "I"), ("generation", "I"), ("pool", "H"), ("reserved", "H")],
)

ATTACH = Layout("nta_attach", [("ifindex", "i"), ("abi_version", "I")])

WAKEUP = Layout("nta_wakeup", [("frames", "I"), ("usecs", "I")])

DIRECTION = Layout("nta_direction", [("direction", "I"), ("reserved", "I")])

FILTER = Layout("nta_filter", [("len", "I"), ("reserved", "I"), ("insns", "Q")])


class Direction(enum.IntFlag):
    """NTA_DIR_*: which frames of its devices a reader gets (tcpdump's -Q)."""

    IN = 0x0001  # received
    OUT = 0x0002  # sent (always copies)
    INOUT = IN | OUT


SOCK_FILTER = struct.Struct("<HBBI")  # struct sock_filter: code, jt, jf, k
BPF_MAXINSNS = 4096  # <linux/bpf_common.h>: the longest program the kernel takes


class BadCommit(enum.IntEnum):
    """enum nta_bad_commit: why a commit was refused; index into stats.bad_commits."""

    LENGTH = 0
    NODE = 1
    OFFSET = 2
    STATE = 3
    GENERATION = 4
    RESERVED = 5
    RING = 6
    POOL = 7


BAD_COMMIT_MAX = 8  # NTA_BAD_COMMIT_MAX: the array's size, with room to grow

STATS_COUNTERS = (
    "allocated", "freed", "in_use", "handed_over", "published", "committed", "outstanding",
    "returned_on_close", "not_shared", "ring_full", "unserved", "skipped", "copied",
    "fallback", "pool_empty", "reclaim_scanned", "reclaim_passes", "wakeups", "fault_leaked",
    "fault_dropped",
)  # fmt: skip
# Counters added after bad_commits, in what was reserved (the layout is unchanged).
STATS_LATER_COUNTERS = ("chained", "filtered")
STATS = Layout(
    "nta_stats",
    [
        *((n, "Q") for n in STATS_COUNTERS),
        ("bad_commits", "Q", BAD_COMMIT_MAX),
        *((n, "Q") for n in STATS_LATER_COUNTERS),
        ("reserved", "Q", 6),
    ],
)

DEV_STATS_COUNTERS = (
    "received", "published", "unserved", "not_shared", "ring_full", "skipped",
    "fault_dropped", "allocated", "fallback", "pool_empty", "sent", "filtered",
)  # fmt: skip
# sent and filtered took two of the reserved fields at the end: same size, same ioctl.
DEV_STATS = Layout(
    "nta_dev_stats",
    [("ifindex", "i"), ("flags", "I"), *((n, "Q") for n in DEV_STATS_COUNTERS),
     ("reserved", "Q", 2)],
)  # fmt: skip

READER_STATS_COUNTERS = (
    "records",
    "committed",
    "ring_commits",
    "outstanding",
    "wakeups",
    "need_wakeup",
)
READER_STATS = Layout(
    "nta_reader_stats",
    [*((n, "Q") for n in READER_STATS_COUNTERS), ("reserved", "Q", 6)],
)

LAYOUTS = (
    POOL_INFO, META, RECORD, COMMIT, ATTACH, WAKEUP, DIRECTION, FILTER, STATS, DEV_STATS,
    READER_STATS,
)  # fmt: skip

# asm-generic/ioctl.h (x86, arm64, riscv...: not alpha, mips, powerpc, sparc,
# whose direction bits differ; NTA is only built for the former).
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    if size >= 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument of {size} bytes does not fit _IOC_SIZEBITS")
    return (
        direction << _IOC_DIRSHIFT
        | ord(kind) << _IOC_TYPESHIFT
        | nr << _IOC_NRSHIFT
        | size << _IOC_SIZESHIFT
    )


def _io(kind: str, nr: int) -> int:
    return _ioc(_IOC_NONE, kind, nr, 0)


def _iow(kind: str, nr: int, layout: Layout) -> int:
    return _ioc(_IOC_WRITE, kind, nr, layout.size)


def _ior(kind: str, nr: int, layout: Layout) -> int:
    return _ioc(_IOC_READ, kind, nr, layout.size)


def _iowr(kind: str, nr: int, layout: Layout) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, kind, nr, layout.size)


IOC_MAGIC = "N"
IOC_ATTACH = _iow(IOC_MAGIC, 1, ATTACH)
IOC_DETACH = _iow(IOC_MAGIC, 2, ATTACH)
IOC_STATS = _ior(IOC_MAGIC, 3, STATS)
IOC_DEV_STATS = _iowr(IOC_MAGIC, 4, DEV_STATS)
IOC_SET_WAKEUP = _iow(IOC_MAGIC, 5, WAKEUP)
IOC_READER_STATS = _ior(IOC_MAGIC, 6, READER_STATS)
IOC_SET_DIRECTION = _iow(IOC_MAGIC, 7, DIRECTION)
IOC_SET_FILTER = _iow(IOC_MAGIC, 8, FILTER)
IOC_DETACH_FILTER = _io(IOC_MAGIC, 9)

IOCTLS = {
    "NTA_IOC_ATTACH": IOC_ATTACH,
    "NTA_IOC_DETACH": IOC_DETACH,
    "NTA_IOC_STATS": IOC_STATS,
    "NTA_IOC_DEV_STATS": IOC_DEV_STATS,
    "NTA_IOC_SET_WAKEUP": IOC_SET_WAKEUP,
    "NTA_IOC_READER_STATS": IOC_READER_STATS,
    "NTA_IOC_SET_DIRECTION": IOC_SET_DIRECTION,
    "NTA_IOC_SET_FILTER": IOC_SET_FILTER,
    "NTA_IOC_DETACH_FILTER": IOC_DETACH_FILTER,
}


@dataclass(frozen=True)
class PoolInfo:
    """struct nta_pool_info: one of the reader's pool slots (mmap_size 0: unbound)."""

    mmap_offset: int = 0
    mmap_size: int = 0
    node_count: int = 0
    node_size: int = 0
    ifindex: int = 0

    @property
    def bound(self) -> bool:
        return self.mmap_size != 0

    @classmethod
    def parse(cls, page: bytes | bytearray | memoryview, pool: int) -> PoolInfo:
        """Slot ``pool`` of a meta page, unchecked (``problems`` says what is wrong)."""
        at = META["pools"].offset + pool * POOL_INFO.size
        raw = POOL_INFO.unpack(page, at)
        return cls(raw["mmap_offset"], raw["mmap_size"], raw["node_count"], raw["node_size"],
                   raw["ifindex"])  # fmt: skip

    def problems(self, pool: int, page_size: int) -> list[str]:
        """What would make a reader walk outside this pool's mapping (a bound one)."""
        if not self.bound:
            return []
        out = []
        if self.node_count * self.node_size != self.mmap_size:
            out.append(f"pool {pool}'s mmap_size is not node_count * node_size")
        if not self.node_size or self.node_size % page_size:
            out.append(f"pool {pool}'s node_size {self.node_size} is not a page multiple")
        return out


@dataclass(frozen=True)
class Meta:
    """struct nta_meta, checked: what the reader needs to map and walk its rings.

    ``pools`` is the pool table as it was when parsed: slots bound later
    (by an attach) are read with ``PoolInfo.parse`` from the live meta page.
    """

    magic: int
    abi_version: int
    meta_size: int
    record_size: int
    commit_size: int
    page_size: int
    max_pools: int
    pool_info_size: int
    chunk_size: int
    ring_entries: int
    commit_entries: int
    max_shared: int
    max_commit_batch: int
    ring_mmap_offset: int
    ring_mmap_size: int
    ring_producer_offset: int
    ring_consumer_offset: int
    ring_records_offset: int
    commit_producer_offset: int
    commit_consumer_offset: int
    commit_flags_offset: int
    commit_entries_offset: int
    pools: tuple[PoolInfo, ...] = ()

    @classmethod
    def parse(cls, page: bytes | bytearray | memoryview) -> Meta:
        """The meta page, refused (AbiMismatch) unless this mirror can read it safely."""
        if len(page) < META.size:
            raise AbiMismatch(f"meta page of {len(page)} bytes, need {META.size}")
        raw = META.unpack(page)
        scalars = {f.name: raw[f.name] for f in fields(cls) if f.name != "pools"}
        pools = tuple(PoolInfo.parse(page, p) for p in range(MAX_POOLS))
        meta = cls(**scalars, pools=pools)
        meta.check()
        return meta

    def check(self) -> None:
        if self.magic != MAGIC:
            raise AbiMismatch(
                f"bad magic {self.magic:#010x} in the meta page (want {MAGIC:#010x}): "
                "is this really /dev/nta?"
            )
        if self.abi_version != ABI_VERSION:
            raise AbiMismatch(
                f"the module speaks ABI version {self.abi_version}, pysniff speaks "
                f"{ABI_VERSION}: rebuild one of them from the same nta_uapi.h"
            )
        sizes = {
            "meta_size": (self.meta_size, META.size),
            "record_size": (self.record_size, RECORD.size),
            "commit_size": (self.commit_size, COMMIT.size),
            "max_pools": (self.max_pools, MAX_POOLS),
            "pool_info_size": (self.pool_info_size, POOL_INFO.size),
        }
        for name, (theirs, ours) in sizes.items():
            if theirs != ours:
                raise AbiMismatch(f"module's {name} is {theirs}, pysniff's is {ours}")
        self._check_geometry()

    def _check_geometry(self) -> None:
        """Geometry that would make the reader walk outside its mappings is refused too."""
        problems = []
        for name in ("ring_entries", "commit_entries"):
            n = getattr(self, name)
            if n == 0 or n & (n - 1):
                problems.append(f"{name} {n} is not a power of two")
        records_end = self.ring_records_offset + self.ring_entries * RECORD.size
        if records_end > self.ring_mmap_size:
            problems.append("the records run past the ring mapping")
        commits_end = self.commit_entries_offset + self.commit_entries * COMMIT.size
        if commits_end > self.ring_mmap_size:
            problems.append("the commit ring runs past the ring mapping")
        indices = ("ring_producer_offset", "ring_consumer_offset", "commit_producer_offset",
                   "commit_consumer_offset")  # fmt: skip
        for name in indices:
            at = getattr(self, name)
            if at % 8 or at + 8 > self.ring_mmap_size:
                problems.append(f"{name} {at} is misaligned or outside the ring mapping")
        if self.commit_flags_offset % 4 or self.commit_flags_offset + 4 > self.ring_mmap_size:
            problems.append("commit_flags_offset is misaligned or outside the ring mapping")
        for p, pool in enumerate(self.pools):
            problems += pool.problems(p, self.page_size)
        if self.max_commit_batch == 0:
            problems.append("max_commit_batch is zero")
        if problems:
            raise AbiMismatch("inconsistent meta page: " + "; ".join(problems))


def _counters(names: Sequence[str], values: Mapping[str, int]) -> dict[str, int]:
    return {name: values[name] for name in names}


_ALL_STATS_COUNTERS = (*STATS_COUNTERS, *STATS_LATER_COUNTERS)


@dataclass(frozen=True)
class Stats:
    """struct nta_stats: the module-wide counters (NTA_IOC_STATS, or debugfs ``stats``).

    ``bad_commits`` is keyed by reason name (``BadCommit``, lower case).
    """

    allocated: int = 0
    freed: int = 0
    in_use: int = 0
    handed_over: int = 0
    published: int = 0
    committed: int = 0
    outstanding: int = 0
    returned_on_close: int = 0
    not_shared: int = 0
    ring_full: int = 0
    unserved: int = 0
    skipped: int = 0
    copied: int = 0
    fallback: int = 0
    pool_empty: int = 0
    reclaim_scanned: int = 0
    reclaim_passes: int = 0
    wakeups: int = 0
    fault_leaked: int = 0
    fault_dropped: int = 0
    bad_commits: Mapping[str, int] = field(default_factory=dict)
    chained: int = 0
    filtered: int = 0

    @classmethod
    def from_raw(cls, raw: bytes | bytearray | memoryview) -> Stats:
        values = STATS.unpack(raw)
        bad = {why.name.lower(): values[f"bad_commits_{why.value}"] for why in BadCommit}
        return cls(**_counters(_ALL_STATS_COUNTERS, values), bad_commits=bad)

    @classmethod
    def from_text(cls, text: str) -> Stats:
        """debugfs ``stats``: a "name value" line per counter, ``bad_commits_<reason>`` too."""
        values = {k: int(v) for k, v in (line.split() for line in text.splitlines() if line)}
        bad = {w.name.lower(): values.get(f"bad_commits_{w.name.lower()}", 0) for w in BadCommit}
        return cls(**_counters(_ALL_STATS_COUNTERS, values), bad_commits=bad)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Stats:
        return cls(**data)  # type: ignore[arg-type]

    def __sub__(self, other: Stats) -> Stats:
        mine, theirs = asdict(self), asdict(other)
        bad = {k: v - other.bad_commits.get(k, 0) for k, v in self.bad_commits.items()}
        return Stats(**{n: mine[n] - theirs[n] for n in _ALL_STATS_COUNTERS}, bad_commits=bad)


@dataclass(frozen=True)
class DevStats:
    """struct nta_dev_stats: one of this reader's devices, counted while attached.

    Every frame the device received (and sent, for a reader that asked for
    them) is in exactly one of published, filtered and the counters of
    ``missed``.
    """

    ifindex: int = 0
    flags: int = 0
    received: int = 0
    published: int = 0
    unserved: int = 0
    not_shared: int = 0
    ring_full: int = 0
    skipped: int = 0
    fault_dropped: int = 0
    allocated: int = 0
    fallback: int = 0
    pool_empty: int = 0
    sent: int = 0
    filtered: int = 0

    MISSED = ("unserved", "not_shared", "ring_full", "skipped", "fault_dropped")

    @classmethod
    def from_raw(cls, raw: bytes | bytearray | memoryview) -> DevStats:
        values = DEV_STATS.unpack(raw)
        return cls(values["ifindex"], values["flags"], **_counters(DEV_STATS_COUNTERS, values))

    @property
    def missed(self) -> dict[str, int]:
        """Frames the device received that the reader did not get, by reason."""
        return {name: getattr(self, name) for name in self.MISSED}

    @property
    def gone(self) -> bool:
        return bool(self.flags & DEV_GONE)


@dataclass(frozen=True)
class ReaderStats:
    """struct nta_reader_stats: this reader's own counters."""

    records: int = 0
    committed: int = 0
    ring_commits: int = 0
    outstanding: int = 0
    wakeups: int = 0
    need_wakeup: int = 0

    @classmethod
    def from_raw(cls, raw: bytes | bytearray | memoryview) -> ReaderStats:
        return cls(**_counters(READER_STATS_COUNTERS, READER_STATS.unpack(raw)))
