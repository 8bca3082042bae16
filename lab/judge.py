"""Stage 4, judge: kernel logs scanned for splats, and every accounting check, as pure functions.

Nothing here touches a guest: each check takes typed results (a NIC's
counter delta, a reader's tally, the module's counters, frame lists) and
raises an AssertionError that says where it failed, so scenarios reuse them
and host tests run them on made-up and captured results.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lab.records import RxCounts
from pysniff import signature
from pysniff.abi import DevStats, Stats
from pysniff.signature import IfaceTally

# -- splats ----------------------------------------------------------------------
#
# A kernel report (a "splat") is many console lines: a header that names it
# ("BUG: KASAN: ...", "WARNING: CPU: ..."), registers, a call trace, and often
# lines that look like headers of reports of their own: the "cut here" before a
# WARNING, the "Oops: ... [#1]" after a fault, the "Kernel panic" that
# panic_on_warn or a fatal oops adds. scan() reads a log as syzkaller's report
# parser (pkg/report/linux.go) and netdev's CI (nipa, contest/remote/lib/crash.py)
# do, and gives one Splat per report, of its most specific kind: the header
# table below holds the headers of both, most specific first.

# What a header line does to the report it is in, or starts.
Role = Literal[
    "report",  # heads a report of its own
    "fault",  # heads a report that a die line ("Oops: 0000 [#1]") finishes
    "trap",  # the die line: ends the fault report above it, or is a report alone
    "cut",  # announces the report whose header follows ("cut here")
    "message",  # names the bug of the WARNING or kernel BUG next to it (refcount_t: ...)
    "warn",  # the WARNING line of a WARN()
    "bug",  # the "kernel BUG at" line of a BUG(): a die line follows
    "stack",  # a bare call trace: netdev's CI fails a test on any
]


@dataclass(frozen=True)
class SplatPattern:
    kind: str
    role: Role
    regex: re.Pattern[str]
    # Generic shapes ("BUG: ...") count only on a line printk stamped: a console
    # log also holds what programs print.
    printk_only: bool = False


def _p(kind: str, role: Role, pattern: str, printk_only: bool = False) -> SplatPattern:
    return SplatPattern(kind, role, re.compile(pattern), printk_only)


# Matched against a line without its printk prefix; the first match wins, so
# specific shapes come before the generic ones that would also match them
# ("BUG: KASAN:" before "BUG:", a WARNING at lib/refcount.c before any WARNING).
SPLATS: tuple[SplatPattern, ...] = (
    # First: its text quotes its cause ("not syncing: KASAN: panic_on_warn set").
    _p("panic", "report", r"Kernel panic - not syncing"),
    _p("kasan", "report", r"\bBUG: KAS[Aa]N: "),
    _p("kmsan", "report", r"\bBUG: KMSAN: "),
    _p("kcsan", "report", r"\bBUG: KCSAN: "),
    _p("kfence", "report", r"\bBUG: KFENCE: "),
    _p("ubsan", "report", r"\bUBSAN: "),
    _p("lockdep-circular", "report", r"\b(?:WARNING|INFO): possible circular locking dependency"),
    _p("lockdep-recursive", "report", r"\b(?:WARNING|INFO): possible recursive locking detected"),
    _p("lockdep-inconsistent", "report", r"\b(?:WARNING|INFO): inconsistent lock state"),
    _p(
        "lockdep",
        "report",
        r"\b(?:WARNING|INFO|BUG): (?:possible irq lock inversion dependency detected"
        r"|\S+-safe -> \S+-unsafe lock order detected|suspicious RCU usage"
        r"|bad unlock balance detected|held lock freed|.*still has locks held"
        r"|lock held when returning to user space|Nested lock was not taken"
        r"|Invalid wait context|trying to register non-static key)",
    ),
    _p(
        "sleep-in-atomic",
        "report",
        r"\bBUG: (?:sleeping function called from invalid context|scheduling while atomic)",
    ),
    _p(
        "kmemleak",
        "report",
        r"\bunreferenced object 0x[0-9a-f]+ \(size \d+\)|\bkmemleak: \d+ new suspected memory leak",
    ),
    # syzkaller prints this before each object kmemleak lists.
    _p("kmemleak", "cut", r"^BUG: memory leak$"),
    _p("refcount", "message", r"\brefcount_t: "),
    _p("refcount", "warn", r"^WARNING: .*\blib/refcount\.c:\d+"),
    _p("list-corruption", "message", r"\blist_(?:add|del) corruption\b|\blist_add double add\b"),
    _p("list-corruption", "bug", r"\bkernel BUG at lib/list_debug\.c:"),
    _p("list-corruption", "warn", r"^WARNING: .*\blib/list_debug\.c:\d+"),
    _p("soft-lockup", "report", r"\bBUG: soft lockup\b|\bsoft lockup - CPU#\d+"),
    _p("hard-lockup", "report", r"\bWatchdog detected hard LOCKUP\b"),
    _p("rcu-stall", "report", r"\bINFO: rcu_\w+ (?:self-)?detected (?:expedited )?stalls?\b"),
    _p(
        "hung-task",
        "report",
        r"\bINFO: task .+ (?:blocked (?:in I/O wait )?|can't die )for more than \d+ seconds",
    ),
    _p(
        "ref-leak",
        "report",
        r"\bunregister_netdevice: waiting for \S+ to become free"
        r"|^ref_tracker: .+ has \d+/\d+ users at",
    ),
    # Not "traps: prog[12] general protection fault ip:...": a program's fault.
    _p("gpf", "report", r"general protection fault\b(?! ip:)"),
    _p("oops", "fault", r"\bBUG: unable to handle\b|\bBUG: kernel NULL pointer dereference\b"),
    _p("oops", "fault", r"\bUnable to handle kernel\b"),
    # die(): "Oops: 0000 [#1]", "invalid opcode: 0000 [#1]", "Internal error: Oops: 5 [#1]".
    _p("oops", "trap", r"^[\w ()-]+(?:: [\w ()-]+)*: [0-9a-f]+ \[#\d+\]|^PANIC: double fault\b"),
    _p("bug", "bug", r"\bkernel BUG at \S+|^Kernel BUG\b"),
    _p("bug", "report", r"\bVFS: (?:Close: file count is 0|Busy inodes after unmount)"),
    _p("slub", "report", r"^BUG [\w.:-]+ \((?:Not tainted|Tainted: [^)]*)\): "),
    _p("slub", "report", r"\b(?:Poison|Redzone|Object padding) overwritten\b"),
    _p("warning", "cut", r"^-+\[ cut here \]-+$|^8<-+ cut here -+$"),
    _p("warning", "warn", r"^WARNING: (?:CPU: \d+ PID: \d+ at |at |\S+:\d+ at )"),
    _p("bug", "fault", r"^BUG: (?!no syscalls can create resource)", printk_only=True),
    _p(
        "warning",
        "warn",
        # What syzkaller ignores: kernel notes that are no bug.
        r"^WARNING: (?!workqueue cpumask: |[Tt]he mand mount option|Unprivileged eBPF"
        r"|fbcon: |See https?:|kernel not compiled with|/etc/ssh/moduli does not exist"
        r"|(?i:.* uses (?:deprecated v2 capabilities|wireless extensions)))",
        printk_only=True,
    ),
    _p("call-trace", "stack", r"^Call [Tt]race:$"),
)

# printk's prefixes, each optional: a syslog file's, a console loglevel ("<4>"),
# the time ("[   12.345678]"), CONFIG_PRINTK_CALLER's task or CPU ("[  T123]",
# "[    C1]", in its own brackets as syzkaller and dmesg print it). On a console a
# kernel line may cut into a program's ("login: [   50.946624] WARNING: ..."): what
# comes before a printk time is not the kernel's.
_PRINTK = re.compile(
    r"(?:.*?(?=\[\s*\d+\.\d{6}\]))?"
    r"(?:\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ kernel: )?"
    r"(?:\*\* \d+ printk messages dropped \*\* )?"
    r"(?:<\d+>)?"
    r"(?:\[\s*(?P<ts>\d+\.\d+)\]\s?)?"
    r"(?:\[\s*(?P<ctx>[CT]\d+)\]\s?)?"
)
_BOOT = re.compile(r"^Linux version \d")
_END = re.compile(r"^---\[ end (?:trace|Kernel panic)\b|^Rebooting in \d+ seconds")
_RULE = re.compile(r"^={20,}$")
# Reports set between two rules of "=": the second ends them.
_RULED = frozenset({"kasan", "kmsan", "kcsan", "kfence", "ubsan"})
# The same report again and again: one pass of the hung-task watchdog lists
# every blocked task, a leaked device is waited for every 10 s.
_REPEATING = frozenset({"hung-task", "ref-leak"})
_NEAR = 20  # lines: a report's next header ("Oops" after "BUG: unable to handle") comes soon
_REPEAT_NEAR = 100
# A bare call trace this soon after a report's header is part of it: reports of
# stalls, hung tasks and panics dump other tasks' and CPUs' stacks at once.
_STACK_NEAR_S = 10.0
_STACK_NEAR = 400  # lines, in a log without times

_FUNC = r"([A-Za-z_][\w.]*)"
_TRACE = re.compile(r"^(?:Call [Tt]race:|backtrace(?: \(crc [0-9a-f]+\))?:)$")
_FRAME = re.compile(
    r"^(?:\[<[0-9a-f]+>\]\s*)?(\? )?" + _FUNC + r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+| \S+:\d+ \[inline\])"
)
_RIP = re.compile(
    r"^(?:RIP: (?:[0-9a-f]{4}:)?|IP: |pc : |PC is at )(?:\[<[0-9a-f]+>\]\s+)*" + _FUNC + r"\+0x"
)
_ACCESS = re.compile(r"^(Read|Write) (?:of size|at addr)")
_OFFSET = re.compile(r"\+0x[0-9a-f]+/0x[0-9a-f]+")
# Lines a stack dump opens with, not the reason it was dumped.
_DUMP_BOILERPLATE = re.compile(
    r"^(?:Call [Tt]race:|CPU: \d+ |Hardware name: |Workqueue: |Tainted: |Not tainted"
    r"|\S+ cpuset=|Modules linked in:|task:\S+ +state:|Disabling lock debugging|=+$"
    r"|(?:RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d+|FS|GS|CS|CR\d|DR\d|PKRU|Code): )"
)
# Frames that report a bug rather than make it: any report's, and per kind whose
# title names a frame.
_REPORTING = re.compile(
    r"dump_stack|dump_backtrace|show_stack|^panic$|^_*warn|report_bug|fixup_bug|do_trap"
    r"|do_error_trap|invalid_op$|handle_bug|check_panic_on_warn|^end_report$"
)
_NOT_GUILTY = {
    "ubsan": re.compile(r"ubsan"),
    "sleep-in-atomic": re.compile(
        r"might_|^_*schedule|__schedule_bug|preempt_schedule|kmalloc|kmem_cache_alloc"
        r"|^slab_|alloc_pages"
    ),
    "kmemleak": re.compile(
        r"kmemleak|^_*slab_|kmalloc|kzalloc|kcalloc|krealloc|kvmalloc|kvzalloc|vmalloc"
        r"|kmem_cache_alloc|kstrdup|kmemdup|alloc_pages|^pcpu_|alloc_percpu"
    ),
    "refcount": re.compile(r"refcount"),
    "list-corruption": re.compile(r"^_*h?list_"),
}


@dataclass(frozen=True)
class Splat:
    source: str
    line_no: int  # the line that names the report, 1-based
    kind: str
    line: str
    title: str = ""  # syzkaller-like: "KASAN: slab-use-after-free Read in nta_reader_release"

    @property
    def name(self) -> str:
        """The report's title, or its line where no title was made."""
        return self.title or self.line

    def __str__(self) -> str:
        return f"{self.source}:{self.line_no}: [{self.kind}] {self.name}"


def _func(name: str) -> str:
    return name.split(".")[0]  # "foo.cold", "foo.isra.0": foo


@dataclass
class _Report:
    """A report being read; its title may wait for a later line (the frame to blame)."""

    ctx: str | None
    ts: float | None  # of its latest header
    line_no: int = 0
    line: str = ""
    kind: str = ""
    title: str = ""
    template: str = ""  # the title once ``want`` is found: "... in {}"
    want: Literal["", "frame", "rip", "access"] = ""
    stage: Literal["cut", "message", "main"] = "main"
    since: int = 0  # lines of its context since its latest header
    faulting: bool = False  # a die line is still to come
    bare: bool = False  # a WARNING or kernel BUG whose bug a message may yet name
    generic_bug: bool = False  # named by a "BUG: ..." line no other pattern knows
    closed: bool = False
    in_trace: bool = False

    def name(self, row: SplatPattern, no: int, head: str, raw: str) -> None:
        """``head`` names the report: its kind, line and title."""
        self.kind, self.line_no, self.line = row.kind, no, raw.strip()
        self.stage = "cut" if row.role == "cut" else "message" if row.role == "message" else "main"
        self.faulting = row.role in ("fault", "bug") and "[#" not in head
        self.bare = row.role in ("warn", "bug")
        self.generic_bug = row.kind == "bug" and row.printk_only
        self.title, self.template, self.want = _title(row, head)

    def joins(self, row: SplatPattern) -> bool:
        """Whether the header ``row`` matched continues this report."""
        if self.closed:
            return False
        near = self.since <= _NEAR
        if self.stage == "cut":
            return near and row.role != "stack"
        if self.stage == "message":
            return near and row.role in ("cut", "warn", "bug")
        if row.role == "message":
            return near and self.bare  # older kernels print WARN's message after its line
        if row.role == "trap":
            return near and self.faulting
        if row.role in ("cut", "warn") and self.generic_bug:
            return self.since <= 2  # "BUG: Dentry ... still in use", then its WARN_ON
        return row.kind == self.kind and row.kind in _REPEATING and self.since <= _REPEAT_NEAR

    def join(self, row: SplatPattern, no: int, head: str, raw: str, ts: float | None) -> None:
        self.since, self.ts = 0, ts if ts is not None else self.ts
        if row.kind == "panic":
            self.closed = False  # panic dumps a stack of its own
        elif self.stage == "cut":
            self.name(row, no, head, raw)
        elif row.role == "message":  # names the bare WARNING or kernel BUG above it
            faulting = self.faulting
            self.name(row, no, head, raw)
            self.stage, self.faulting = "main", faulting
        elif row.role == "trap":
            self.faulting = False
        elif row.role in ("warn", "bug"):
            self.stage, self.faulting = "main", self.faulting or row.role == "bug"

    def covers(self, ts: float | None) -> bool:
        """Whether a bare call trace now is part of this report."""
        if self.closed:
            return False
        if ts is not None and self.ts is not None:
            return 0 <= ts - self.ts <= _STACK_NEAR_S
        return self.since <= _STACK_NEAR

    def feed(self, head: str) -> None:
        """A line of this report's context that is no header."""
        self.since += 1
        if _END.match(head) or (self.kind in _RULED and _RULE.match(head)):
            self.closed = True
            return
        if _TRACE.match(head):
            self.in_trace = True
        found = ""
        if self.want == "access" and (m := _ACCESS.match(head)):
            found = m[1]
        elif self.want == "rip" and (m := _RIP.match(head)):
            found = _func(m[1])
        elif self.want == "frame" and self.in_trace and (m := _FRAME.match(head)) and not m[1]:
            func, innocent = _func(m[2]), _NOT_GUILTY.get(self.kind)
            if not _REPORTING.search(func) and (innocent is None or not innocent.search(func)):
                found = func
        if found:
            self.title, self.want = self.template.format(found), ""

    def splat(self, source: str) -> Splat:
        return Splat(source, self.line_no, self.kind, self.line, self.title)


_Title = tuple[str, str, Literal["", "frame", "rip", "access"]]


def _title(row: SplatPattern, head: str) -> _Title:
    """A report's title from its header, and, if a later line completes it, how."""
    text = _OFFSET.sub("", head).rstrip(" .:")
    kind = row.kind
    if kind == "kasan" and (m := re.search(r"BUG: (KAS[Aa]N: [\w -]+?) in " + _FUNC, head)):
        what, func = m[1], _func(m[2])
        return f"{what} in {func}", f"{what} {{}} in {func}", "access"
    if kind in ("kmsan", "kcsan", "kfence"):
        return text.partition("BUG: ")[2], "", ""
    if kind == "ubsan" and (m := re.search(r"(UBSAN: .+?) in ", head)):
        return text, m[1] + " in {}", "frame"
    if kind.startswith("lockdep"):
        return re.sub(r"^\[?\s*(?:WARNING|INFO|BUG): ", "", text).rstrip(" ]"), "", ""
    if kind == "sleep-in-atomic" and (m := row.regex.search(head)):
        return text, m[0] + " in {}", "frame"
    if kind == "kmemleak" and head.startswith("unreferenced object"):
        return text, "memory leak in {}", "frame"
    if row.role == "message" and (m := row.regex.search(head)):
        what = text if kind == "refcount" else m[0]
        return text, what + " in {}", "frame"
    if kind in ("refcount", "list-corruption"):  # their WARNING or BUG, no message (yet)
        what = "refcount bug" if kind == "refcount" else "corrupted list"
        return text, what + " in {}", "frame"
    if kind == "gpf":
        return "general protection fault", "general protection fault in {}", "rip"
    if row.role == "fault" and kind == "oops":
        what = re.sub(r"(?:,| for address| at (?:virtual address )?\S+).*$", "", text)
        return what, what + " in {}", "rip"
    if row.role == "trap":
        what = re.sub(r": [0-9a-f]+ \[#\d+\].*$", "", text)
        return what, what + " in {}", "rip"
    if row.role == "bug" and kind == "bug":
        return text, "kernel BUG in {}", "rip"
    if row.role == "warn":
        if m := re.match(
            r"WARNING: (?:CPU: \d+ PID: \d+ at \S+ |at \S+ |\S+:\d+ at )" + _FUNC, head
        ):
            return f"WARNING in {_func(m[1])}", "", ""
        if row.printk_only:
            return text, "", ""
        return text, "WARNING in {}", "rip"
    if kind in ("rcu-stall", "soft-lockup", "hard-lockup"):
        return re.sub(r"^(?:rcu|watchdog|NMI watchdog): ", "", text), "", ""
    return text, "", ""


def _cause(recent: Sequence[tuple[int, str, str]]) -> tuple[int, str, str]:
    """The line a bare stack dump was printed for: the last before it that is not the
    dump's own opening ("CPU: 1 PID: 2 Comm: ...")."""
    for no, head, raw in reversed(recent):
        if head and not _DUMP_BOILERPLATE.match(head):
            return no, head, raw
    return recent[-1]


def _header(head: str, printk: bool) -> SplatPattern | None:
    for row in SPLATS:
        if (printk or not row.printk_only) and row.regex.search(head):
            return row
    return None


def scan(text: str, source: str = "log") -> list[Splat]:
    """The kernel reports in a console log or dmesg, one Splat each, in order."""
    reports: list[_Report] = []
    # The latest report of each printk caller (CONFIG_PRINTK_CALLER), and of the
    # log (None): without callers, every line may belong to the latest report.
    latest: dict[str | None, _Report] = {}
    recent: dict[str | None, deque[tuple[int, str, str]]] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        prefix = _PRINTK.match(raw)
        assert prefix is not None  # every part is optional
        ctx, ts = prefix["ctx"], float(prefix["ts"]) if prefix["ts"] else None
        head = raw[prefix.end() :].strip()
        if _BOOT.match(head):  # a new boot: nothing before continues
            latest.clear()
            continue
        near, last = latest.get(ctx), latest.get(None)
        before = recent.setdefault(ctx, deque(maxlen=8))
        before.append((no, head, raw))
        row = _header(head, prefix.end() > 0)
        if row is None or (row.role == "stack" and any(r and r.covers(ts) for r in (near, last))):
            if near is not None:
                near.feed(head)
            continue
        if row.kind == "panic" and last is not None:
            last.join(row, no, head, raw, ts)  # the panic a report causes, whatever prints it
            continue
        if near is not None and near.joins(row):
            near.join(row, no, head, raw, ts)
            continue
        report = _Report(ctx, ts)
        if row.role == "stack":  # named by the line it was dumped for
            report.name(row, *_cause(before))
            report.in_trace = True
        else:
            report.name(row, no, head, raw)
        reports.append(report)
        latest[None] = latest[ctx] = report
    return [r.splat(source) for r in reports]


def scan_files(paths: list[Path]) -> list[Splat]:
    found: list[Splat] = []
    for path in paths:
        if path.is_file():
            found += scan(path.read_text(encoding="utf-8", errors="replace"), str(path))
    return found


# -- frames on the wire ------------------------------------------------------------


def nic_took(nic: str, sent: int, rx: RxCounts, flow_control: bool) -> None:
    """Each of ``sent`` frames either reached the stack or was missed by the NIC itself.

    A NIC misses a frame when its receive ring is full and counts it there.
    Anything else is a lost frame, and so is a miss on a NIC with flow
    control. QEMU's rtl8139 has none and misses whenever the guest's vCPU is
    off the host CPU longer than its 64-entry ring lasts; no pacing rules
    that out on a loaded host. A frame the NIC took and a later layer lost
    is for the caller to find, against ``rx.missed``.
    """
    if rx.packets + rx.missed != sent:
        raise AssertionError(f"{nic}: {sent} sent, {rx.packets} received, {rx.missed} missed")
    if rx.missed and flow_control:
        raise AssertionError(f"{nic} has flow control, yet missed {rx.missed} frames")


def all_but_missed(nic: str, entry: IfaceTally, sent: int, rx: RxCounts) -> set[int]:
    """A receiver's tally shows every frame once, intact, but those the NIC missed.

    Which frames a NIC without flow control missed is not known, only how
    many (see nic_took): as many must be missing, and no more. The sequence
    numbers missing.
    """
    if entry != signature.perfect(sent, entry.missing):
        raise AssertionError(f"{nic}: {entry}, NIC {rx}")
    lost = signature.expand(entry.missing)
    if len(lost) != rx.missed:
        raise AssertionError(f"{nic}: {len(lost)} frames lost, the NIC missed {rx.missed}")
    return lost


def wire_minus(batch: Sequence[bytes], lost: set[int]) -> list[bytes]:
    """The frames of ``batch`` (sequence = index) but those in ``lost``."""
    return [frame for seq, frame in enumerate(batch) if seq not in lost]


def same_frames(what: str, got: Sequence[bytes], want: Sequence[bytes]) -> None:
    """Byte for byte, in order; the first difference named."""
    if list(got) == list(want):
        return
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            at = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
            raise AssertionError(
                f"{what}: frame {i} differs at byte {at}: got {len(a)} bytes "
                f"({a[at : at + 8].hex()}...), want {len(b)} bytes ({b[at : at + 8].hex()}...)"
            )
    raise AssertionError(f"{what}: {len(got)} frames, want {len(want)}")


def subsequence(what: str, got: Sequence[bytes], want: Sequence[bytes], missing: int) -> None:
    """``got`` is ``want`` with exactly ``missing`` frames left out, the rest in order and
    byte for byte (a NIC without flow control says how many it missed, not which)."""
    if len(got) != len(want) - missing:
        raise AssertionError(f"{what}: {len(got)} frames, want {len(want)} - {missing} missed")
    at = 0
    for i, frame in enumerate(got):
        while at < len(want) and want[at] != frame:
            at += 1
        if at == len(want):
            raise AssertionError(f"{what}: frame {i} ({len(frame)} bytes) was never sent")
        at += 1


# -- NTA's counters ------------------------------------------------------------------


def balanced(stats: Stats) -> None:
    """At a quiet moment: allocated == freed + in_use + handed_over, published == committed +
    returned_on_close + outstanding."""
    if stats.allocated != stats.freed + stats.in_use + stats.handed_over:
        raise AssertionError(f"allocated != freed + in_use + handed_over: {stats}")
    if stats.published != stats.committed + stats.returned_on_close + stats.outstanding:
        raise AssertionError(f"published != committed + returned + outstanding: {stats}")


def accounted(nic: str, d: DevStats) -> None:
    """Every frame the device received is published or counted as missed, for one reason."""
    if d.received != d.published + sum(d.missed.values()):
        raise AssertionError(f"{nic}: {d.received} received, {d.published} published, {d.missed}")


def quiet(stats: Stats, leaked: int) -> None:
    """With every link down, nothing is shared and only ``leaked`` chunks are in use."""
    if stats.outstanding != 0:
        raise AssertionError(f"{stats.outstanding} chunks still shared: {stats}")
    if stats.in_use != leaked:
        raise AssertionError(f"in_use {stats.in_use} with the links down, want {leaked}: leak")
    balanced(stats)
