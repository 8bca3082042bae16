"""Mirror of kmod/nta_uapi.h: layouts, ioctl numbers, reasons. Checked against the C header
by tests/test_pysniff_abi.py, which compiles a probe from it."""

from __future__ import annotations

import struct

MAGIC = 0x3141544E
ABI_VERSION = 1
MMAP_META_OFFSET = 0

META_FIELDS = (
    "magic", "abi_version", "meta_size", "record_size", "commit_size", "page_size",
    "node_count", "node_size", "chunk_size", "ring_entries", "max_shared", "max_commit_batch",
    "ring_mmap_offset", "ring_mmap_size", "nodes_mmap_offset", "nodes_mmap_size",
    "ring_producer_offset", "ring_consumer_offset", "ring_records_offset", "reserved0",
)  # fmt: skip
META = struct.Struct("<12I4Q4I4Q")

RECORD_FIELDS = (
    "node", "offset", "len", "generation", "seq", "tstamp_ns", "ifindex", "protocol",
    "flags", "chunk", "vlan_tci", "reserved",
)  # fmt: skip
RECORD = struct.Struct("<4I2QiHHIHH")
RECORD_VLAN_STRIPPED = 0x0001

COMMIT_FIELDS = ("node", "offset", "generation", "reserved")
COMMIT = struct.Struct("<4I")

BAD_COMMIT_REASONS = ("length", "node", "offset", "state", "generation", "owner", "reserved")
BAD_COMMIT_MAX = 8

STATS_FIELDS = (
    "allocated", "freed", "in_use", "published", "committed", "outstanding",
    "returned_on_close", "not_shared", "ring_full", "no_reader", "fallback", "pool_empty",
    "fault_leaked", "fault_dropped",
)  # fmt: skip
STATS = struct.Struct(f"<{len(STATS_FIELDS)}Q{BAD_COMMIT_MAX}Q8Q")

DEV_STATS_FIELDS = (
    "ifindex",
    "reserved",
    "allocated",
    "fallback",
    "received",
    "published",
    "not_shared",
)
DEV_STATS = struct.Struct("<iI5Q4Q")

ATTACH = struct.Struct("<iI")


def _ioc(direction: int, nr: int, size: int) -> int:
    """asm-generic/ioctl.h: dir << 30 | size << 16 | type << 8 | nr."""
    return direction << 30 | size << 16 | ord("N") << 8 | nr


IOC_ATTACH = _ioc(1, 1, ATTACH.size)
IOC_DETACH = _ioc(1, 2, ATTACH.size)
IOC_STATS = _ioc(2, 3, STATS.size)
IOC_DEV_STATS = _ioc(3, 4, DEV_STATS.size)


def parse_stats(raw: bytes) -> dict[str, int]:
    values = STATS.unpack(raw)
    out = dict(zip(STATS_FIELDS, values, strict=False))
    bad = values[len(STATS_FIELDS) : len(STATS_FIELDS) + len(BAD_COMMIT_REASONS)]
    out.update({f"bad_commits_{why}": n for why, n in zip(BAD_COMMIT_REASONS, bad, strict=True)})
    return out
