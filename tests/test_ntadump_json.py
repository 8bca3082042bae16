"""``ntadump --json``: the real ntadump, on records laid out here, prints the summary the
bench reads (lab.guestside.reports.NtadumpReport).

The device is a file laid out as the module's mappings (meta page, ring
mapping, pool) and a preloaded shim (tests/data/fakedev/nta_shim.c) answers
what a file cannot: NTA's ioctls, from counters this test writes, and
poll(), at once. The capture loop, the pcap and the summary are ntadump's own.
"""

from __future__ import annotations

import json
import mmap
import subprocess
from pathlib import Path

import pytest

from lab import kbuild, paths, traffic
from lab.guestside.reports import NtadumpIface, NtadumpReport
from pysniff import abi

PAGE = mmap.PAGESIZE
RING_AT, NODES_AT = PAGE, 2 * PAGE  # file offsets of the ring mapping and the pool
RECORDS_AT, COMMITS_AT = 512, 2048  # in the ring mapping
ENTRIES = 16
HEADROOM = 66
LO = 1  # the host's loopback: ntadump resolves -i by name


@pytest.fixture(scope="module")
def ntadump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kbuild.build_ntadump(root=tmp_path_factory.mktemp("builds")).program


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shim") / "nta_shim.so"
    src = paths.sources()
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(src.kmod),
         "-o", str(out), str(src.test_data / "fakedev" / "nta_shim.c"), "-ldl"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out


def frames() -> list[bytes]:
    addrs = traffic.Addresses("52:54:00:4e:00:00")
    return traffic.frames(7, 5, addrs, ("udp4",), sizes=(60, 1514, 300, 999, 64))


def fake_device(path: Path, batch: list[bytes]) -> None:
    """The module's mappings for one reader that was published ``batch``, a chunk each."""
    meta = abi.META.pack(
        magic=abi.MAGIC, abi_version=abi.ABI_VERSION, meta_size=abi.META.size,
        record_size=abi.RECORD.size, commit_size=abi.COMMIT.size, page_size=PAGE,
        node_count=1, node_size=ENTRIES * PAGE, chunk_size=PAGE, ring_entries=ENTRIES,
        commit_entries=ENTRIES, max_shared=ENTRIES, max_commit_batch=ENTRIES,
        ring_mmap_offset=RING_AT, ring_mmap_size=PAGE, nodes_mmap_offset=NODES_AT,
        nodes_mmap_size=ENTRIES * PAGE, ring_producer_offset=0, ring_consumer_offset=64,
        ring_records_offset=RECORDS_AT, commit_producer_offset=128, commit_consumer_offset=192,
        commit_flags_offset=256, commit_entries_offset=COMMITS_AT,
    )  # fmt: skip
    image = bytearray((2 + ENTRIES) * PAGE)
    image[: len(meta)] = meta
    image[RING_AT : RING_AT + 8] = len(batch).to_bytes(8, "little")  # the producer index
    for i, frame in enumerate(batch):
        record = abi.RECORD.pack(
            node=0, offset=i * PAGE + HEADROOM, len=len(frame), generation=3, seq=i,
            tstamp_ns=1_700_000_000_123_456_789 + i, ifindex=LO, protocol=0x0800,
            frame_len=len(frame),
        )  # fmt: skip
        at = RING_AT + RECORDS_AT + i * abi.RECORD.size
        image[at : at + len(record)] = record
        chunk = NODES_AT + i * PAGE + HEADROOM
        image[chunk : chunk + len(frame)] = frame
    path.write_bytes(image)


def answers(path: Path, received: int) -> None:
    """What the shim says the module counted: the reader's, the module's, lo's."""
    reader = abi.READER_STATS.pack(records=5, committed=5, ring_commits=5, wakeups=2)
    stats = abi.STATS.pack(bad_commits_1=2, bad_commits_6=1)
    dev = abi.DEV_STATS.pack(
        ifindex=LO, received=received, published=5, not_shared=3, ring_full=1, flags=0
    )
    path.write_bytes(reader + stats + dev)


def run(ntadump: Path, shim: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    device, counters = tmp / "nta", tmp / "answers"
    batch = frames()
    fake_device(device, batch)
    answers(counters, received=len(batch) + 4)
    env = {"LD_PRELOAD": str(shim), "NTA_SHIM_ANSWERS": str(counters)}
    return subprocess.run(
        [str(ntadump), "-i", "lo", "-D", str(device), "-c", str(len(batch)), *args],
        capture_output=True, text=True, timeout=20, env=env,
    )  # fmt: skip


def test_json_summary_with_a_pcap(ntadump: Path, shim: Path, tmp_path: Path) -> None:
    pcap = tmp_path / "out.pcap"
    proc = run(ntadump, shim, tmp_path, "-w", str(pcap), "--json")
    assert proc.returncode == 0, proc.stderr
    batch = frames()
    report = NtadumpReport.from_json(proc.stdout)  # the whole of stdout is one object
    assert report == NtadumpReport(
        frames=5, bytes=sum(map(len, batch)), rejected=0, syscalls=report.syscalls, wakeups=2,
        records=5,
        committed=5,
        refused={"length": 0, "node": 2, "offset": 0, "state": 0, "generation": 0,
                 "reserved": 0, "ring": 1},
        interfaces={"lo": NtadumpIface(captured=5, received=9, published=5, unserved=0,
                                       not_shared=3, ring_full=1, skipped=0, fault_dropped=0)},
    )  # fmt: skip
    assert report.interfaces["lo"].missed == 4
    assert 1 <= report.syscalls <= 3  # a poll and a writev, all it needs for 5 frames
    assert traffic.read_pcap(pcap) == batch
    # The human summary is still on stderr, as before.
    assert "lo: 9 received, 5 captured, 4 not delivered to ntadump" in proc.stderr
    assert "the module refused 3 commits (all readers): node 2 ring 1" in proc.stderr


def test_json_alone_prints_no_frame_lines(ntadump: Path, shim: Path, tmp_path: Path) -> None:
    proc = run(ntadump, shim, tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["frames"] == 5
    assert proc.stdout.count("\n") == 1
    without = run(ntadump, shim, tmp_path)  # the same without --json: a line per frame
    assert without.stdout.count(" lo length ") == 5


def test_counters_the_module_would_not_give_are_null(
    ntadump: Path, shim: Path, tmp_path: Path
) -> None:
    device = tmp_path / "nta"
    fake_device(device, frames())
    # No answers file: the shim refuses every counter ioctl (EIO), as a module might.
    proc = subprocess.run(
        [str(ntadump), "-i", "lo", "-D", str(device), "-c", "5", "--json"],
        capture_output=True, text=True, timeout=20, env={"LD_PRELOAD": str(shim)},
    )  # fmt: skip
    report = NtadumpReport.from_json(proc.stdout)
    assert (report.frames, report.wakeups, report.records, report.refused) == (5, None, None, None)
    assert report.interfaces["lo"] == NtadumpIface(captured=5)
    assert report.interfaces["lo"].missed is None


def test_report_parses_the_documented_object() -> None:
    """The object as ntadump.c's comment documents it, names escaped as JSON strings."""
    text = (
        '{"frames": 3, "bytes": 180, "rejected": 0, "syscalls": 4, "wakeups": 1, "records": 3, '
        '"committed": 3, "refused": {"length": 0, "node": 0, "offset": 0, "state": 0, '
        '"generation": 0, "reserved": 0, "ring": 0}, "interfaces": {"e\\"th0": '
        '{"captured": 3, "received": 3, "published": 3, "unserved": 0, "not_shared": 0, '
        '"ring_full": 0, "skipped": 0, "fault_dropped": 0, "gone": true}}}'
    )
    report = NtadumpReport.from_json(text)
    assert report.interfaces['e"th0'].gone and report.interfaces['e"th0'].missed == 0
