"""``pysniff`` / ``python -m pysniff``: a tcpdump-like front end to the zero-copy reader.

    pysniff -i IFACE [-i IFACE ...] [-c COUNT] [--duration S] [--idle S] [-w FILE.pcap[ng]]
            [--immediate | --wakeup-frames N --wakeup-usecs U] [--bulk] [-q] [--json]
    pysniff --stats [--json]

At the end it says, per interface, how many frames the device received
that this reader did not get, and why (as tcpdump's "dropped by kernel").
With --json, one object on stdout instead (see ``pysniff.report``). Once
attached and mapped it prints ``pysniff: ready`` on stderr (and creates
--ready-file), so a harness knows when to send. SIGINT and SIGTERM end the
capture with the usual report. The lab's own options (--verify, and the
ones that misbehave on purpose) have a --help group of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pysniff.abi import Stats
from pysniff.badcommit import KINDS, BadCommitter
from pysniff.device import DEFAULT_PATH, Device, OsDevice
from pysniff.errors import SniffError
from pysniff.pcap import FrameWriter, open_writer
from pysniff.reader import Reader
from pysniff.report import SniffReport
from pysniff.signature import Tally

OpenDevice = Callable[[str], Device]


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pysniff", description="NTA zero-copy sniffer")
    p.add_argument("-i", "--interface", action="append", default=[], help="name or index; repeat")
    p.add_argument("-c", "--count", type=_positive, help="stop after this many frames")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument(
        "--idle", type=float, help="stop once no frame came for this many seconds, after the first"
    )
    p.add_argument("-w", "--write", help="write frames to FILE (pcapng if it ends .pcapng)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per frame")
    p.add_argument("--bulk", action="store_true", help="bulk path: count and CRC frames only")
    wake = p.add_argument_group("when the module wakes pysniff (default: the module's)")
    wake.add_argument("--immediate", action="store_true", help="every frame at once")
    wake.add_argument("--wakeup-frames", type=_positive, help="once this many are pending")
    wake.add_argument("--wakeup-usecs", type=_not_negative, help="... or the oldest is this old")
    p.add_argument("--stats", action="store_true", help="print the module's counters")
    p.add_argument("--device", default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    p.add_argument(
        "--ready-file",
        # The lab's readiness protocol (lab.guestside.protocol.READY_ENV): the file a
        # program it starts creates once it can be given work.
        default=os.environ.get("NTALAB_READY"),
        help="create this file once attached and mapped (default: $NTALAB_READY)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout at the end")
    lab = p.add_argument_group("for the lab: checks, and misbehaving on purpose")
    lab.add_argument(
        "--first-frame-timeout", type=float, metavar="S",
        help="stop if the first frame has not come after this many seconds",
    )  # fmt: skip
    lab.add_argument("--verify", action="store_true", help="check the lab's frame signatures")
    lab.add_argument("--run-id", type=int, default=0, help="with --verify: the run to expect")
    lab.add_argument("--expect", type=int, help="with --verify: frames sent per interface")
    commits = lab.add_mutually_exclusive_group()
    commits.add_argument("--no-commit", action="store_true", help="never hand chunks back")
    commits.add_argument(
        "--pause-commits", action="store_true", help="hold every chunk until SIGUSR1"
    )
    lab.add_argument("--commit-every", type=_positive, help="commit in batches of N chunks")
    lab.add_argument("--hold", type=_not_negative, default=0, help="keep N chunks uncommitted")
    lab.add_argument(
        "--commit-via", choices=("ring", "write"), default="ring",
        help="hand chunks back through the commit ring (default) or write()",
    )  # fmt: skip
    lab.add_argument(
        "--bad-commits", action="append", default=[], choices=[*KINDS, "all"], metavar="KIND",
        help=f"send malformed commits on purpose (repeatable): {', '.join(KINDS)}, all",
    )  # fmt: skip
    return p


@dataclass
class Capture:
    """What one run saw, and where it goes."""

    names: dict[int, str]
    tally: Tally | None
    writer: FrameWriter | None
    print_frames: bool
    frames: int = 0
    bytes: int = 0
    crc_sum: int = 0
    max_wait_ns: int = 0  # longest a frame waited between its receipt and this reader
    per_interface: Counter[str] = field(default_factory=Counter)

    def name(self, ifindex: int) -> str:
        return self.names.get(ifindex, str(ifindex))

    def take_frames(self, reader: Reader, limit: int | None) -> None:
        """The frame path: a Frame each, the lab's checks, the pcap written straight from
        the mapping (flushed before the chunks can be committed)."""
        writer, tally = self.writer, self.tally
        now, oldest = time.time_ns(), None
        for f in reader.frames(limit):
            if oldest is None:
                oldest = f.tstamp_ns
            name = self.name(f.ifindex)
            self.frames += 1
            self.bytes += f.len
            self.per_interface[name] += 1
            if writer is not None:
                writer.add(f)
            if tally is not None:
                tally.add(name, f.wire_bytes())
            if self.print_frames:
                proto = socket.ntohs(f.protocol)
                print(f"{f.tstamp_ns / 1e9:.6f} {name} seq {f.seq} ethertype {proto:#06x} "
                      f"length {f.len}")  # fmt: skip
        if oldest is not None:
            self.max_wait_ns = max(self.max_wait_ns, now - oldest)
        if writer is not None:
            writer.flush()

    def take_bulk(self, reader: Reader, limit: int | None) -> None:
        """The bulk path: all ready records at once; a CRC32 over each, in place."""
        b = reader.bulk(limit)
        if not b.count:
            return
        self.frames += b.count
        self.bytes += sum(b.lengths())
        self.crc_sum += sum(map(zlib.crc32, b.views()))
        if len(self.names) == 1:
            self.per_interface[next(iter(self.names.values()))] += b.count
        else:
            for index, n in Counter(b.ifindexes()).items():
                self.per_interface[self.name(index)] += n
        if self.tally is not None:
            for view, index in zip(b.views(), b.ifindexes(), strict=True):
                self.tally.add(self.name(index), view)


WAIT_S = 1.0


def idle_left(last_frame: float | None, idle: float | None, now: float) -> float | None:
    """Seconds until a reader waiting for more is idle, once frames came."""
    if last_frame is None or idle is None:
        return None
    return max(0.01, last_frame + idle - now)


def capture(args: argparse.Namespace, reader: Reader, bad: BadCommitter | None) -> Capture:
    tally = Tally(run_id=args.run_id, expected=args.expect) if args.verify else None
    writer = open_writer(args.write, reader.attached) if args.write else None
    quiet = args.quiet or args.json or args.bulk or args.verify or writer is not None
    cap = Capture(dict(reader.attached), tally, writer, print_frames=not quiet)
    stop = resume = False

    def on_stop(_signo: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    def on_resume(_signo: int, _frame: object) -> None:
        nonlocal resume
        resume = True

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_resume)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    started = time.monotonic()
    last_frame: float | None = None
    try:
        while not stop and (args.count is None or cap.frames < args.count):
            if resume and not reader.auto_commit:
                # At max_shared nothing new arrives to trigger a commit: commit now.
                reader.auto_commit = True
                reader.commit()
                print("pysniff: resumed commits", file=sys.stderr, flush=True)
            now = time.monotonic()
            left = None if deadline is None else deadline - now
            idle = (
                last_frame is not None and args.idle is not None and now - last_frame >= args.idle
            )
            never = (
                last_frame is None
                and args.first_frame_timeout is not None
                and now - started >= args.first_frame_timeout
            )
            if (left is not None and left <= 0) or idle or never:
                break
            # A signal is noticed when the wait ends (Python resumes an interrupted
            # poll), so waits are short, but not so short that idle readers poll
            # often: one timeout a second costs ~1 system call per 1000 frames at 1000/s.
            waits = [WAIT_S, *(w for w in (left, idle_left(last_frame, args.idle, now)) if w)]
            reader.wait(min(waits))
            if not reader.ready():
                continue
            last_frame = time.monotonic()
            limit = None if args.count is None else args.count - cap.frames
            (cap.take_bulk if args.bulk else cap.take_frames)(reader, limit)
            if bad is not None:
                bad.send()
    finally:
        if writer is not None:
            writer.close()
    return cap


def result(
    cap: Capture | None, reader: Reader, bad: BadCommitter | None, before: Stats, elapsed: float
) -> SniffReport:
    """What the run saw (the --json object)."""
    syscalls = reader.syscalls
    return SniffReport(
        frames=cap.frames if cap else 0,
        bytes=cap.bytes if cap else 0,
        per_interface=dict(cap.per_interface) if cap else {},
        committed=reader.committed,
        refused=reader.refused,
        pending=reader.pending,
        crc_sum=cap.crc_sum if cap else 0,
        max_wait_us=cap.max_wait_ns // 1000 if cap else 0,
        elapsed_s=round(elapsed, 3),
        syscalls=syscalls,
        stats_before=before,
        stats_after=reader.stats(),
        reader=reader.reader_stats(),
        dev_stats={name: reader.dev_stats(index) for index, name in reader.attached.items()},
        bad_commits_sent=dict(bad.sent) if bad else {},
        bad_commits_refused=dict(bad.refused) if bad else {},
        verify=cap.tally.summary() if cap and cap.tally is not None else None,
    )


def run(args: argparse.Namespace, open_device: OpenDevice) -> SniffReport:
    kinds = list(KINDS) if "all" in args.bad_commits else args.bad_commits
    with Reader(
        args.interface,
        open_device(args.device),
        commit=not (args.no_commit or args.pause_commits),
        commit_every=args.commit_every,
        hold=args.hold,
        via=args.commit_via,
    ) as reader:
        if args.immediate:
            reader.set_wakeup(1, 0)
        elif args.wakeup_frames or args.wakeup_usecs is not None:
            frames = args.wakeup_frames or reader.meta.ring_entries
            reader.set_wakeup(frames, 0 if args.wakeup_usecs is None else args.wakeup_usecs)
        bad = None
        if kinds:
            second = lambda: Reader((), open_device(args.device), via=args.commit_via)  # noqa: E731
            bad = BadCommitter(reader, kinds, second, via=args.commit_via)
        try:
            before = reader.stats()
            if args.ready_file:
                Path(args.ready_file).write_text("ready\n")
            print(f"pysniff: ready on {', '.join(reader.attached.values()) or '-'}",
                  file=sys.stderr, flush=True)  # fmt: skip
            start = time.monotonic()
            reader.syscalls = 0  # count the capture's own
            cap = capture(args, reader, bad) if args.interface else None
            if not args.no_commit:
                reader.commit()  # all but --hold: nothing is left for close to return
                if reader.via == "ring":
                    reader.kick()  # the module takes them now, for the counters
            return result(cap, reader, bad, before, time.monotonic() - start)
        finally:
            if bad is not None:
                bad.close()


def summary(out: SniffReport) -> list[str]:
    """The end-of-capture lines, per interface: captured, and what the reader missed, why."""
    lines = [f"{out.frames} frames captured ({out.syscalls} system calls)"]
    for name, d in out.dev_stats.items():
        missed = {k: v for k, v in d.missed.items() if v}
        line = f"{name}: {d.received} received, {out.per_interface.get(name, 0)} captured"
        line += f", {sum(missed.values())} not delivered to pysniff"
        if missed:
            line += " (" + ", ".join(f"{k} {v}" for k, v in missed.items()) + ")"
        if d.gone:
            line += "; the device is gone"
        lines.append(line)
    return lines


def report(out: SniffReport, args: argparse.Namespace) -> None:
    if args.json:
        print(out.to_json())
        return
    if args.interface:
        for line in summary(out):
            print(line, file=sys.stderr)
        for kind, n in out.bad_commits_sent.items():
            print(f"bad commits {kind}: {n} sent, {out.bad_commits_refused[kind]} refused",
                  file=sys.stderr)  # fmt: skip
        if out.verify is not None:
            print(json.dumps(asdict(out.verify), indent=1))
    if args.stats:
        for key, value in asdict(out.stats_after).items():
            print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None, open_device: OpenDevice = OsDevice) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not args.stats and not args.interface:
        p.error("give -i IFACE (or --stats)")
    if args.bulk and args.write:
        p.error("--bulk only counts and checksums frames: it cannot write them (-w)")
    try:
        out = run(args, open_device)
    except SniffError as e:
        print(f"pysniff: {e}", file=sys.stderr)
        return 1
    report(out, args)
    return 0
