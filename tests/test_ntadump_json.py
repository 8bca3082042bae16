"""``ntadump --json``: the summary the bench reads (lab.guestside.reports.NtadumpReport),
from the real ntadump on pysniff's fake module (tests/fakenta.py).

Every figure is checked exactly against what ntadump did (its pcap) and what
the fake module said when ntadump asked (the fake's state once ntadump has
gone: nothing drains its commits after that). Each check is shown to fail on
a bug planted in ntadump.c's JSON.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from lab.guestside.reports import NtadumpIface, NtadumpReport
from pysniff import abi
from pysniff.fake import PAGE, FakeDevice, FakeNta
from tests.fakenta import (
    Check,
    Finished,
    Ntadump,
    Planted,
    planted_bugs_caught,
)
from tests.shapes import deliver, patch, read_pcap, records_of, shapes, signed

REFUSALS = ("length", "node", "offset", "state", "generation", "reserved", "ring", "pool")


def capture(
    program: Path, preload: Path, tmp_path: Path, *args: str
) -> tuple[Finished, Ntadump, FakeNta]:
    """Every frame shape on ifindex 1, after a frame ntadump cannot write (its record names
    bytes outside the pool) and one too long for a chunk (the module skips it), and two
    commits another reader had refused."""
    nta = FakeNta(ring_entries=64)
    frames = shapes()
    with Ntadump(program, preload, nta, ["-i", "1", "-c", str(len(frames)), *args]) as run:

        def plant() -> None:
            nta.bad_commits[abi.BadCommit.NODE] = 2
            nta.deliver(1, signed(20, 60))
            patch(run.dev, 0, offset=0xFFFFF000, len=0x2000)
            assert nta.deliver(1, signed(21, PAGE)) is None  # skipped
            for f in frames:
                deliver(nta, 1, f)

        run.soon(plant)
        done = run.wait()
    return done, run, nta


def check_summary(program: Path, preload: Path, tmp_path: Path) -> None:
    pcap = tmp_path / "out.pcap"
    done, run, nta = capture(program, preload, tmp_path, "-w", str(pcap), "--json")
    assert done.returncode == 0, done.stderr
    frames = shapes()
    report = NtadumpReport.from_json(done.stdout.decode())  # the whole of stdout is one object
    assert report == NtadumpReport(
        frames=len(frames),
        bytes=sum(len(f.wire) for f in frames),  # tags put back: as long as on the wire
        rejected=1,
        syscalls=report.syscalls,
        wakeups=run.dev.counters["wakeups"],
        records=run.dev.counters["records"],
        committed=run.dev.committed,
        refused=dict(zip(REFUSALS, nta.bad_commits, strict=False)),
        interfaces={
            "1": NtadumpIface(
                captured=len(frames), received=len(frames) + 2, sent=0,
                published=len(frames) + 1, filtered=0,
                unserved=0, not_shared=0, ring_full=0, skipped=1, fault_dropped=0,
            )
        },
    )  # fmt: skip
    # What the module said is not what ntadump counted itself: the JSON keeps them apart.
    assert report.records == 1 + sum(records_of(f) for f in frames)
    assert report.committed is not None and report.committed < report.records
    assert report.refused is not None and report.refused["node"] == 2
    assert report.interfaces["1"].missed == 1
    assert 1 <= report.syscalls <= 3  # a poll and a writev, all it needs
    assert [r.data for r in read_pcap(pcap)] == [f.wire for f in frames]
    # The human summary is still on stderr, as before.
    assert f"1: {len(frames) + 2} received, {len(frames)} captured, 1 not delivered" in done.stderr
    # The module's refusals are every reader's since it loaded, said as such (not this one's).
    assert (
        "the module has refused 2 bad commits since it was loaded, from every reader "
        "(a module-wide count, not this reader's): node 2\n"
    ) in done.stderr
    assert "1 frames not written (see above)" in done.stderr


def check_json_alone(program: Path, preload: Path, tmp_path: Path) -> None:
    """Without -w, --json is all of stdout: no per-frame lines (they are the default)."""
    done, _, _ = capture(program, preload, tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"\n") == 1
    assert json.loads(done.stdout)["frames"] == len(shapes())
    without, _, _ = capture(program, preload, tmp_path)
    assert without.stdout.count(b" 1 length ") == len(shapes())


def check_counters_refused(program: Path, preload: Path, tmp_path: Path) -> None:
    """A module that will not give its counters (every counter ioctl EIO): null, not 0."""
    counted = (abi.IOC_STATS, abi.IOC_READER_STATS, abi.IOC_DEV_STATS)
    answer = FakeDevice.ioctl

    def refusing(dev: FakeDevice, request: int, arg: bytearray) -> None:
        if request in counted:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        answer(dev, request, arg)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FakeDevice, "ioctl", refusing)
        done, _, _ = capture(program, preload, tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    report = NtadumpReport.from_json(done.stdout.decode())
    assert (report.frames, report.rejected) == (len(shapes()), 1)
    assert (report.wakeups, report.records, report.committed, report.refused) == (None,) * 4
    assert report.interfaces["1"] == NtadumpIface(captured=len(shapes()))
    assert report.interfaces["1"].missed is None


@pytest.mark.parametrize("check", [check_summary, check_json_alone, check_counters_refused])
def test_json_summary(check: Check, ntadump: Path, preload: Path, tmp_path: Path) -> None:
    check(ntadump, preload, tmp_path)


PLANTED: list[Planted] = [
    (
        "the reader's records given as committed",
        ("c->reader_ok, c->reader.committed)", "c->reader_ok, c->reader.records)"),
        check_summary,
    ),
    (
        "frames it could not write not reported",
        ("frames,\n\t       r->bytes, r->rejected,", "frames,\n\t       r->bytes, 0UL,"),
        check_summary,
    ),
    (
        "bytes without the tag put back",
        ("r->bytes += b->hdr[b->nhdr - 1].len;", "r->bytes += first->frame_len;"),
        check_summary,
    ),
    (
        "per-frame lines under --json",
        ("!quiet && !path && !json", "!quiet && !path"),
        check_json_alone,
    ),
    (
        "a refused counter printed as 0",
        ('json_count("received", ok, d->received)', 'json_count("received", true, d->received)'),
        check_counters_refused,
    ),
]


test_a_planted_bug_is_caught = planted_bugs_caught(PLANTED)


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
