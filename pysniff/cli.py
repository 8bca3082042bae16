"""``pysniff`` / ``python -m pysniff``: a tcpdump-like front end to the zero-copy reader.

    pysniff -i IFACE [-i IFACE ...] [-c COUNT] [--duration S] [--idle S] [-w FILE.pcap[ng]]
            [-Q in|out|inout] [-f EXPR | EXPR ...]
            [--immediate | --wakeup-frames N --wakeup-usecs U] [--bulk] [-q] [--json]
    pysniff --stats [--json]

-Q picks the frames of the interfaces to capture as tcpdump's does: those
they receive, those they send (copies), or both (the default). A filter
expression (-f, or the words after the options, as tcpdump takes it) is
compiled by tcpdump itself (pysniff.bpf) and runs in the module, before a
frame costs anything; a bad one ends pysniff with status 2 before it
attaches anything.

At the end it says, per interface, how many frames the device received
that this reader did not get, and why (as tcpdump's "dropped by kernel").
With --json, one object on stdout instead (see ``pysniff.report``). Once
attached and mapped it prints ``pysniff: ready`` on stderr (and creates
--ready-file), so a harness knows when to send. SIGINT and SIGTERM end the
capture with the usual report. The lab's own options (--verify, and the
ones that misbehave on purpose) have a --help group of their own.

It also ends, with the report and exit status 1, once every interface is
gone (what was left in the ring read first) or when -w cannot be written.
A frame it cannot read is said on stderr, counted, and committed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pysniff.abi import Direction, Stats
from pysniff.badcommit import KINDS, BadCommitter
from pysniff.bpf import Insn, compile_expression
from pysniff.device import DEFAULT_PATH, Device, OsDevice
from pysniff.errors import FilterError, OutputError, SniffError
from pysniff.pcap import FrameWriter, open_writer
from pysniff.reader import Reader, Rejected
from pysniff.report import SniffReport
from pysniff.signature import Tally

OpenDevice = Callable[[str], Device]
DIRECTIONS = {"in": Direction.IN, "out": Direction.OUT, "inout": Direction.INOUT}


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
    p = argparse.ArgumentParser(
        prog="pysniff",
        description="NTA zero-copy sniffer",
        epilog="Exit status 1 when every interface is gone (the frames left in the ring are "
        "read first) or the output cannot be written; a frame it cannot read is said on "
        "stderr, counted (--json: rejected), and committed.",
    )
    p.add_argument("-i", "--interface", action="append", default=[], help="name or index; repeat")
    p.add_argument("-c", "--count", type=_positive, help="stop after this many frames")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument(
        "--idle", type=float, help="stop once no frame came for this many seconds, after the first"
    )
    p.add_argument("-w", "--write", help="write frames to FILE (pcapng if it ends .pcapng)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per frame")
    p.add_argument(
        "-Q", "--direction", choices=("in", "out", "inout"), default="inout",
        help="frames received, sent, or both (default, as tcpdump)",
    )  # fmt: skip
    p.add_argument("-f", "--filter", metavar="EXPR", help="tcpdump filter expression")
    p.add_argument("expression", nargs="*", help="the filter expression, as tcpdump takes it")
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
    gone: bool = False  # every interface went away: the capture ended with what was left
    output_error: str | None = None  # the output could not be written: the capture ended

    def name(self, ifindex: int) -> str:
        return self.names.get(ifindex, str(ifindex))

    def take_frames(self, reader: Reader, limit: int | None, last: bool = False) -> None:
        """The frame path: a Frame each, the lab's checks, the pcap written straight from
        the mapping (flushed before the chunks can be committed). Counts are kept in locals
        and added once per batch."""
        writer, tally, names = self.writer, self.tally, self.names
        now, oldest = time.time_ns(), None
        frames = nbytes = 0
        seen: Counter[int] = Counter()
        for f in reader.frames(limit, last=last):
            if oldest is None:
                oldest = f.tstamp_ns
            frames += 1
            nbytes += f.len
            seen[f.ifindex] += 1
            if writer is not None:
                writer.add(f)
            if tally is not None:
                tally.add(names.get(f.ifindex, str(f.ifindex)), f.wire_bytes())
            if self.print_frames:
                proto = socket.ntohs(f.protocol)
                print(f"{f.tstamp_ns / 1e9:.6f} {self.name(f.ifindex)} seq {f.seq} "
                      f"ethertype {proto:#06x} length {f.len}")  # fmt: skip
        self.frames += frames
        self.bytes += nbytes
        for index, n in seen.items():
            self.per_interface[self.name(index)] += n
        if oldest is not None:
            self.max_wait_ns = max(self.max_wait_ns, now - oldest)
        if writer is not None:
            writer.flush()

    def take_bulk(self, reader: Reader, limit: int | None, last: bool = False) -> None:
        """The bulk path: every whole frame ready, at once; a CRC32 over each, in place, by C
        loops (no Python code per frame, unless --verify)."""
        b = reader.bulk(limit, last=last)
        if not b.count:
            return
        self.frames += b.count
        self.bytes += b.bytes
        self.crc_sum += b.crc_sum()
        if len(self.names) == 1:
            self.per_interface[next(iter(self.names.values()))] += b.count
        else:
            for index, n in Counter(b.ifindexes()).items():
                self.per_interface[self.name(index)] += n
        if self.tally is not None:
            for pieces, index in zip(b.frames(), b.ifindexes(), strict=True):
                self.tally.add(self.name(index), b"".join(pieces))


WAIT_S = 1.0  # the longest wait: a signal is noticed sooner (poll() returns EINTR)
GONE_CHECK_POLLS = 2  # idle waits between looks at NTA_DEV_GONE (a module without POLLHUP)


class Limits:
    """The capture's time limits (--duration, --idle, --first-frame-timeout): the only reason
    its loop reads the clock. Without them it reads none: in a TCG guest the clock has no
    vDSO, so every read is a system call."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.duration, self.idle = args.duration, args.idle
        self.first = args.first_frame_timeout
        self.timed = any(t is not None for t in (self.duration, self.idle, self.first))
        self.started = time.monotonic() if self.timed else 0.0
        self.seen = False  # a frame came
        self.last_frame = 0.0  # when (with --idle)

    def frames_came(self) -> None:
        self.seen = True
        if self.idle is not None:
            self.last_frame = time.monotonic()

    def wait_s(self) -> float | None:
        """How long the next wait may take, or None once a limit is reached."""
        if not self.timed:
            return WAIT_S
        now = time.monotonic()
        ends = []
        if self.duration is not None:
            ends.append(self.started + self.duration)
        if self.first is not None and not self.seen:
            ends.append(self.started + self.first)
        if self.idle is not None and self.seen:
            ends.append(self.last_frame + self.idle)
        left = min(ends, default=now + WAIT_S) - now
        return None if left <= 0 else min(WAIT_S, max(0.01, left))


def capture(args: argparse.Namespace, reader: Reader, bad: BadCommitter | None) -> Capture:
    tally = Tally(run_id=args.run_id, expected=args.expect) if args.verify else None
    writer = open_writer(args.write, reader.attached) if args.write else None
    quiet = args.quiet or args.json or args.bulk or args.verify or writer is not None
    cap = Capture(dict(reader.attached), tally, writer, print_frames=not quiet)
    take = cap.take_bulk if args.bulk else cap.take_frames
    limits = Limits(args)
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
    idle_waits = 0
    try:
        while not stop and not cap.gone and (args.count is None or cap.frames < args.count):
            if resume and not reader.auto_commit:
                # At max_shared nothing new arrives to trigger a commit: commit now.
                reader.auto_commit = True
                reader.commit()
                print("pysniff: resumed commits", file=sys.stderr, flush=True)
            wait = limits.wait_s()
            if wait is None:
                break
            due = reader.wait(wait)
            # Every device gone: POLLHUP, or (a module without it) NTA_DEV_GONE on each,
            # asked every few idle waits so that a busy capture makes no extra call.
            cap.gone = reader.hung_up
            if not cap.gone and not reader.ready():
                idle_waits = 0 if due else idle_waits + 1
                if due or idle_waits % GONE_CHECK_POLLS or not reader.devices_gone():
                    continue
                cap.gone = True
            idle_waits = 0
            if reader.ready():
                limits.frames_came()
            # Gone: nothing follows, so what is in the ring is taken, to the last.
            limit = None if args.count is None else args.count - cap.frames
            try:
                take(reader, limit, cap.gone)
            except OutputError as e:  # its chunks are pending: committed as the run ends
                cap.output_error = str(e)
                break
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
        rejected={fault.name.lower(): n for fault, n in reader.rejected.items()},
        gone=cap.gone if cap else False,
        output_error=cap.output_error if cap else None,
    )


def say_rejected(r: Rejected) -> None:
    print(f"pysniff: the frame at record {r.seq} ({r.records} records) {r.fault.value}: "
          "not read, its chunks handed back", file=sys.stderr, flush=True)  # fmt: skip


def expression(args: argparse.Namespace) -> str | None:
    """-f's expression, or the words after the options (tcpdump's way), or None."""
    return args.filter if args.filter is not None else " ".join(args.expression) or None


def program(args: argparse.Namespace) -> list[Insn] | None:
    """The filter, compiled for the first interface (by name: tcpdump's -i numbers are not
    interface indices) before anything is opened."""
    text = expression(args)
    if text is None:
        return None
    first = str(args.interface[0])
    name = socket.if_indextoname(int(first)) if first.isdecimal() else first
    return compile_expression(text, name)


def run(args: argparse.Namespace, open_device: OpenDevice) -> SniffReport:
    kinds = list(KINDS) if "all" in args.bad_commits else args.bad_commits
    compiled = program(args) if args.interface else None
    with Reader(
        args.interface,
        open_device(args.device),
        commit=not (args.no_commit or args.pause_commits),
        commit_every=args.commit_every,
        hold=args.hold,
        via=args.commit_via,
        direction=DIRECTIONS[args.direction] if args.interface else None,
        program=compiled,
    ) as reader:
        if args.immediate:
            reader.set_wakeup(1, 0)
        elif args.wakeup_frames or args.wakeup_usecs is not None:
            frames = args.wakeup_frames or reader.meta.ring_entries
            reader.set_wakeup(frames, 0 if args.wakeup_usecs is None else args.wakeup_usecs)
        reader.on_reject = say_rejected
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
    if out.rejected:
        lines.append(f"{sum(out.rejected.values())} frames not read (see above)")
    for name, d in out.dev_stats.items():
        missed = {k: v for k, v in d.missed.items() if v}
        line = f"{name}: {d.received} received"
        line += f", {d.sent} sent" if d.sent else ""
        line += f", {d.filtered} filtered" if d.filtered else ""
        line += f", {out.per_interface.get(name, 0)} captured"
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
    if args.filter is not None and args.expression:
        p.error("give the filter with -f or after the options, not both")
    try:
        out = run(args, open_device)
    except FilterError as e:  # nothing was attached: the same status as a usage error
        print(f"pysniff: {e}", file=sys.stderr)
        return 2
    except SniffError as e:
        print(f"pysniff: {e}", file=sys.stderr)
        return 1
    report(out, args)
    if out.output_error is not None:
        print(f"pysniff: {out.output_error}", file=sys.stderr)
    if out.gone:
        print("pysniff: the interfaces are gone", file=sys.stderr)
    return 1 if out.gone or out.output_error is not None else 0
