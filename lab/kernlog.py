"""Kernel logs: the reports ("splats") in a console log or dmesg, whole, with their titles.

A kernel report is many console lines: a header that names it ("BUG: KASAN:
...", "WARNING: CPU: ..."), registers, a call trace, and often lines that look
like headers of reports of their own: the "cut here" before a WARNING, the
"Oops: ... [#1]" after a fault, the "Kernel panic" that panic_on_warn or a
fatal oops adds. ``scan`` reads a log as syzkaller's report parser
(pkg/report/linux.go) and netdev's CI (nipa, contest/remote/lib/crash.py) do,
and gives one ``Splat`` per report, of its most specific kind, with its
extent (first and last line) and its text, as syzkaller's ``Report`` keeps
``StartPos``, ``EndPos`` and ``Report``.

Every kind is one row of ``KINDS``, as syzkaller's ``oopsFormat`` table: the
header lines that start or continue it, how each titles the report (and
which later line completes the title), the frames that report such a bug
rather than make it, and where the report ends.

Standard library only: ``ntalab scan`` runs on any machine, on any log.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

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
# The later line a title waits for: the guilty frame of the call trace, the
# function of the RIP line, or the access ("Read"/"Write") of a KASAN report.
Want = Literal["", "frame", "rip", "access"]

_FUNC = r"([A-Za-z_][\w.]*)"
_NAMED_FUNC = r"(?P<func>[A-Za-z_][\w.]*)"


@dataclass(frozen=True)
class Title:
    """One way to title a report from its header line, as a syzkaller oopsFormat.

    ``regex`` is searched in the header's text (offsets such as ``+0x1a/0x40``
    removed; None: the header's own match, as ``{match}``); ``now`` is the
    title from its named groups and ``{text}``; ``then`` the title once a
    later line gives what ``want`` names, as ``{found}``. The first title of
    a header whose regex matches is used; with none, the header's text.
    """

    regex: re.Pattern[str] | None = None
    now: str = "{text}"
    then: str = ""
    want: Want = ""


@dataclass(frozen=True)
class Header:
    role: Role
    regex: re.Pattern[str]
    titles: tuple[Title, ...] = ()
    # Generic shapes ("BUG: ...") count only on a line printk stamped: a console
    # log also holds what programs print.
    printk_only: bool = False


# A report ends at its kind's end marker; a report without one ends with its
# last call trace (see _Report.feed).
_END = re.compile(r"^---\[ end (?:trace|Kernel panic)\b|^Rebooting in \d+ seconds")
_RULE = re.compile(r"^={20,}$")
# Sanitizer reports are set between two rules of "=": the second ends them.
_RULED_END = re.compile(f"{_END.pattern}|{_RULE.pattern}")


@dataclass(frozen=True)
class Kind:
    """A kind of kernel report: one row of the table."""

    name: str
    headers: tuple[Header, ...]
    end: re.Pattern[str] = _END
    # Frames that report this kind of bug rather than make it, skipped when its
    # title names the guilty frame (besides every report's, _REPORTING).
    innocent: re.Pattern[str] | None = None
    # The same report again and again: one pass of the hung-task watchdog lists
    # every blocked task, a leaked device is waited for every 10 s.
    repeats: bool = False


def _h(role: Role, pattern: str, *titles: Title, printk_only: bool = False) -> Header:
    return Header(role, re.compile(pattern), titles, printk_only)


def _t(regex: str | None = None, now: str = "{text}", then: str = "", want: Want = "") -> Title:
    return Title(re.compile(regex) if regex is not None else None, now, then, want)


_PLAIN_TITLE = _t(r"BUG: (?P<t>.*)$", "{t}")  # "BUG: KMSAN: ...": what follows "BUG: "
_LOCKDEP_TITLE = _t(r"^(?:\[?\s*(?:WARNING|INFO|BUG): )?(?P<t>.*?)[ \]]*$", "{t}")
_WATCHDOG_TITLE = _t(r"^(?:(?:rcu|watchdog|NMI watchdog): )?(?P<t>.*)$", "{t}")
_FAULT_TITLE = _t(
    r"^(?P<what>.*?)(?:(?:,| for address| at (?:virtual address )?\S+).*)?$",
    "{what}",
    "{what} in {found}",
    "rip",
)
_WARN_AT = _t(
    r"^WARNING: (?:CPU: \d+ PID: \d+ at \S+ |at \S+ |\S+:\d+ at )" + _NAMED_FUNC,
    "WARNING in {func}",
)

# Header lines are matched against a line without its printk prefix, kind by
# kind in this order, each kind's headers in theirs; the first match wins, so
# specific shapes come before the generic ones that would also match them
# ("BUG: KASAN:" before "BUG:", a WARNING at lib/refcount.c before any WARNING).
KINDS: tuple[Kind, ...] = (
    # First: its text quotes its cause ("not syncing: KASAN: panic_on_warn set").
    Kind("panic", (_h("report", r"Kernel panic - not syncing"),)),
    Kind(
        "kasan",
        (
            _h(
                "report",
                r"\bBUG: KAS[Aa]N: ",
                _t(
                    r"BUG: (?P<what>KAS[Aa]N: [\w -]+?) in " + _NAMED_FUNC,
                    "{what} in {func}",
                    "{what} {found} in {func}",
                    "access",
                ),
            ),
        ),
        end=_RULED_END,
    ),
    Kind("kmsan", (_h("report", r"\bBUG: KMSAN: ", _PLAIN_TITLE),), end=_RULED_END),
    Kind("kcsan", (_h("report", r"\bBUG: KCSAN: ", _PLAIN_TITLE),), end=_RULED_END),
    Kind("kfence", (_h("report", r"\bBUG: KFENCE: ", _PLAIN_TITLE),), end=_RULED_END),
    Kind(
        "ubsan",
        (
            _h(
                "report",
                r"\bUBSAN: ",
                _t(r"(?P<what>UBSAN: .+?) in ", then="{what} in {found}", want="frame"),
            ),
        ),
        end=_RULED_END,
        innocent=re.compile(r"ubsan"),
    ),
    Kind(
        "lockdep-circular",
        (
            _h(
                "report",
                r"\b(?:WARNING|INFO): possible circular locking dependency",
                _LOCKDEP_TITLE,
            ),
        ),
    ),
    Kind(
        "lockdep-recursive",
        (_h("report", r"\b(?:WARNING|INFO): possible recursive locking detected", _LOCKDEP_TITLE),),
    ),
    Kind(
        "lockdep-inconsistent",
        (_h("report", r"\b(?:WARNING|INFO): inconsistent lock state", _LOCKDEP_TITLE),),
    ),
    Kind(
        "lockdep",
        (
            _h(
                "report",
                r"\b(?:WARNING|INFO|BUG): (?:possible irq lock inversion dependency detected"
                r"|\S+-safe -> \S+-unsafe lock order detected|suspicious RCU usage"
                r"|bad unlock balance detected|held lock freed|.*still has locks held"
                r"|lock held when returning to user space|Nested lock was not taken"
                r"|Invalid wait context|trying to register non-static key)",
                _LOCKDEP_TITLE,
            ),
        ),
    ),
    Kind(
        "sleep-in-atomic",
        (
            _h(
                "report",
                r"\bBUG: (?:sleeping function called from invalid context|scheduling while atomic)",
                _t(then="{match} in {found}", want="frame"),
            ),
        ),
        innocent=re.compile(
            r"might_|^_*schedule|__schedule_bug|preempt_schedule|kmalloc|kmem_cache_alloc"
            r"|^slab_|alloc_pages"
        ),
    ),
    Kind(
        "kmemleak",
        (
            _h(
                "report",
                r"\bunreferenced object 0x[0-9a-f]+ \(size \d+\)"
                r"|\bkmemleak: \d+ new suspected memory leak",
                _t(r"^unreferenced object", then="memory leak in {found}", want="frame"),
            ),
            # syzkaller prints this before each object kmemleak lists.
            _h("cut", r"^BUG: memory leak$"),
        ),
        innocent=re.compile(
            r"kmemleak|^_*slab_|kmalloc|kzalloc|kcalloc|krealloc|kvmalloc|kvzalloc|vmalloc"
            r"|kmem_cache_alloc|kstrdup|kmemdup|alloc_pages|^pcpu_|alloc_percpu"
        ),
    ),
    Kind(
        "refcount",
        (
            _h("message", r"\brefcount_t: ", _t(then="{text} in {found}", want="frame")),
            _h(
                "warn",
                r"^WARNING: .*\blib/refcount\.c:\d+",
                _t(then="refcount bug in {found}", want="frame"),
            ),
        ),
        innocent=re.compile(r"refcount"),
    ),
    Kind(
        "list-corruption",
        (
            _h(
                "message",
                r"\blist_(?:add|del) corruption\b|\blist_add double add\b",
                _t(then="{match} in {found}", want="frame"),
            ),
            _h(
                "bug",
                r"\bkernel BUG at lib/list_debug\.c:",
                _t(then="corrupted list in {found}", want="frame"),
            ),
            _h(
                "warn",
                r"^WARNING: .*\blib/list_debug\.c:\d+",
                _t(then="corrupted list in {found}", want="frame"),
            ),
        ),
        innocent=re.compile(r"^_*h?list_"),
    ),
    Kind(
        "soft-lockup",
        (_h("report", r"\bBUG: soft lockup\b|\bsoft lockup - CPU#\d+", _WATCHDOG_TITLE),),
    ),
    Kind("hard-lockup", (_h("report", r"\bWatchdog detected hard LOCKUP\b", _WATCHDOG_TITLE),)),
    Kind(
        "rcu-stall",
        (
            _h(
                "report",
                r"\bINFO: rcu_\w+ (?:self-)?detected (?:expedited )?stalls?\b",
                _WATCHDOG_TITLE,
            ),
        ),
    ),
    Kind(
        "hung-task",
        (
            _h(
                "report",
                r"\bINFO: task .+ (?:blocked (?:in I/O wait )?|can't die )"
                r"for more than \d+ seconds",
            ),
        ),
        repeats=True,
    ),
    Kind(
        "ref-leak",
        (
            _h(
                "report",
                r"\bunregister_netdevice: waiting for \S+ to become free"
                r"|^ref_tracker: .+ has \d+/\d+ users at",
            ),
        ),
        repeats=True,
    ),
    Kind(
        "gpf",
        (
            # Not "traps: prog[12] general protection fault ip:...": a program's fault.
            _h(
                "report",
                r"general protection fault\b(?! ip:)",
                _t(
                    now="general protection fault",
                    then="general protection fault in {found}",
                    want="rip",
                ),
            ),
        ),
    ),
    Kind(
        "oops",
        (
            _h(
                "fault",
                r"\bBUG: unable to handle\b|\bBUG: kernel NULL pointer dereference\b",
                _FAULT_TITLE,
            ),
            _h("fault", r"\bUnable to handle kernel\b", _FAULT_TITLE),
            # die(): "Oops: 0000 [#1]", "invalid opcode: 0000 [#1]", "Internal error: Oops: 5 [#1]".
            _h(
                "trap",
                r"^[\w ()-]+(?:: [\w ()-]+)*: [0-9a-f]+ \[#\d+\]|^PANIC: double fault\b",
                _t(r"^(?P<what>.*?): [0-9a-f]+ \[#\d+\]", "{what}", "{what} in {found}", "rip"),
                _t(then="{text} in {found}", want="rip"),
            ),
        ),
    ),
    Kind(
        "bug",
        (
            _h(
                "bug",
                r"\bkernel BUG at \S+|^Kernel BUG\b",
                _t(then="kernel BUG in {found}", want="rip"),
            ),
            _h("report", r"\bVFS: (?:Close: file count is 0|Busy inodes after unmount)"),
            # Any other "BUG: ..." the kernel prints ("BUG: Bad page state", ...).
            _h("fault", r"^BUG: (?!no syscalls can create resource)", printk_only=True),
        ),
    ),
    Kind(
        "slub",
        (
            _h("report", r"^BUG [\w.:-]+ \((?:Not tainted|Tainted: [^)]*)\): "),
            _h("report", r"\b(?:Poison|Redzone|Object padding) overwritten\b"),
        ),
    ),
    Kind(
        "warning",
        (
            _h("cut", r"^-+\[ cut here \]-+$|^8<-+ cut here -+$"),
            _h(
                "warn",
                r"^WARNING: (?:CPU: \d+ PID: \d+ at |at |\S+:\d+ at )",
                _WARN_AT,
                _t(then="WARNING in {found}", want="rip"),
            ),
            _h(
                "warn",
                # What syzkaller ignores: kernel notes that are no bug.
                r"^WARNING: (?!workqueue cpumask: |[Tt]he mand mount option|Unprivileged eBPF"
                r"|fbcon: |See https?:|kernel not compiled with|/etc/ssh/moduli does not exist"
                r"|(?i:.* uses (?:deprecated v2 capabilities|wireless extensions)))",
                _WARN_AT,
                printk_only=True,
            ),
        ),
    ),
    Kind("call-trace", (_h("stack", r"^Call [Tt]race:$"),)),
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
_NEAR = 20  # lines: a report's next header ("Oops" after "BUG: unable to handle") comes soon
_REPEAT_NEAR = 100
# A bare call trace this soon after a report's header is part of it: reports of
# stalls, hung tasks and panics dump other tasks' and CPUs' stacks at once.
_STACK_NEAR_S = 10.0
_STACK_NEAR = 400  # lines, in a log without times
# A report's text is bounded (a hung-task pass can list every task's stack): the
# first lines, and a note of how many more the log holds.
TEXT_LINES = 300

_TRACE = re.compile(r"^(?:Call [Tt]race:|backtrace(?: \(crc [0-9a-f]+\))?:)$")
_FRAME = re.compile(
    r"^(?:\[<[0-9a-f]+>\]\s*)?(\? )?" + _FUNC + r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+| \S+:\d+ \[inline\])"
)
# The other lines of a stack dump: context markers and registers.
_DUMP_LINE = re.compile(
    r"^<(?:/?(?:IRQ|TASK|NMI|SOFTIRQ)|EOI)>$"
    r"|^(?:RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d+|FS|GS|CS|CR\d|DR\d|PKRU|Code|IP|pc|lr|sp): "
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
# Frames that report a bug rather than make it, in any report.
_REPORTING = re.compile(
    r"dump_stack|dump_backtrace|show_stack|^panic$|^_*warn|report_bug|fixup_bug|do_trap"
    r"|do_error_trap|invalid_op$|handle_bug|check_panic_on_warn|^end_report$"
)


@dataclass(frozen=True)
class Splat:
    """A kernel report found in a log.

    ``line_no`` is the line that names it; ``start`` and ``end`` its first and
    last line (1-based, inclusive; 0 when not known); ``text`` its lines (those
    of its printk caller, where the log names callers), at most TEXT_LINES.
    Plain values only: it is written to and read from JSON as it is (bundles).
    """

    source: str
    line_no: int
    kind: str
    line: str
    title: str = ""  # syzkaller-like: "KASAN: slab-use-after-free Read in nta_reader_release"
    start: int = 0
    end: int = 0
    text: str = ""

    @property
    def name(self) -> str:
        """The report's title, or its line where no title was made."""
        return self.title or self.line

    def __str__(self) -> str:
        return f"{self.source}:{self.line_no}: [{self.kind}] {self.name}"

    def shifted(self, lines: int) -> Splat:
        """The same report in a log ``lines`` longer at the front (a log read in parts)."""
        moved = {
            f: getattr(self, f) + lines for f in ("line_no", "start", "end") if getattr(self, f)
        }
        return replace(self, **moved)

    def report(self) -> str:
        """Where it is, its title, and its text, for a failure message or a terminal."""
        where = f"{self.source}:" + (
            f"{self.start}-{self.end}" if self.start else str(self.line_no)
        )
        return f"{where}: [{self.kind}] {self.name}\n{self.text}".rstrip("\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Splat:
        return cls(**data)


def _func(name: str) -> str:
    return name.split(".")[0]  # "foo.cold", "foo.isra.0": foo


def _is_dump_line(head: str) -> bool:
    return bool(_TRACE.match(head) or _FRAME.match(head) or _DUMP_LINE.match(head))


@dataclass
class _Report:
    """A report being read; its title may wait for a later line (the frame to blame)."""

    ctx: str | None
    ts: float | None  # of its latest header
    kind: Kind = KINDS[0]
    line_no: int = 0
    line: str = ""
    title: str = ""
    then: str = ""  # the title once ``want`` is found: "{what} in {found}"
    names: dict[str, str] = field(default_factory=dict)  # what ``then`` is made of
    want: Want = ""
    stage: Literal["cut", "message", "main"] = "main"
    since: int = 0  # lines of its context since its latest header
    faulting: bool = False  # a die line is still to come
    bare: bool = False  # a WARNING or kernel BUG whose bug a message may yet name
    generic_bug: bool = False  # named by a "BUG: ..." line no other pattern knows
    closed: bool = False  # its end marker came: no later header continues it
    ended: bool = False  # its end marker came: no later line is its
    in_trace: bool = False
    # Its lines so far, and those after them that are its only if more of it
    # follows (a later frame, its end marker).
    lines: list[tuple[int, str]] = field(default_factory=list)
    pending: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=_STACK_NEAR))

    def name(self, kind: Kind, header: Header, no: int, head: str, raw: str) -> None:
        """``head`` names the report: its kind, line and title."""
        self.kind, self.line_no, self.line = kind, no, raw.strip()
        role = header.role
        self.stage = "cut" if role == "cut" else "message" if role == "message" else "main"
        self.faulting = role in ("fault", "bug") and "[#" not in head
        self.bare = role in ("warn", "bug")
        self.generic_bug = kind.name == "bug" and header.printk_only
        self.title, self.then, self.names, self.want = _title(header, head)

    def joins(self, kind: Kind, header: Header) -> bool:
        """Whether the header ``header`` of ``kind`` continues this report."""
        if self.closed:
            return False
        near = self.since <= _NEAR
        role = header.role
        if self.stage == "cut":
            return near and role != "stack"
        if self.stage == "message":
            return near and role in ("cut", "warn", "bug")
        if role == "message":
            return near and self.bare  # older kernels print WARN's message after its line
        if role == "trap":
            return near and self.faulting
        if role in ("cut", "warn") and self.generic_bug:
            return self.since <= 2  # "BUG: Dentry ... still in use", then its WARN_ON
        return kind is self.kind and kind.repeats and self.since <= _REPEAT_NEAR

    def join(
        self, kind: Kind, header: Header, no: int, head: str, raw: str, ts: float | None
    ) -> None:
        self.since, self.ts = 0, ts if ts is not None else self.ts
        self.take(no, raw)
        if kind.name == "panic":
            # It dumps a stack of its own, part of this report (not a splat of its own);
            # its lines are the report's only if the report had not ended.
            self.closed = False
        elif self.stage == "cut":
            self.name(kind, header, no, head, raw)
        elif header.role == "message":  # names the bare WARNING or kernel BUG above it
            faulting = self.faulting
            self.name(kind, header, no, head, raw)
            self.stage, self.faulting = "main", faulting
        elif header.role == "trap":
            self.faulting = False
        elif header.role in ("warn", "bug"):
            self.stage, self.faulting = "main", self.faulting or header.role == "bug"

    def take(self, no: int, raw: str) -> None:
        """Line ``no`` is the report's, and so is every line of its context before it."""
        if self.ended:
            return
        self.lines += self.pending
        self.pending.clear()
        self.lines.append((no, raw))

    def covers(self, ts: float | None) -> bool:
        """Whether a bare call trace now is part of this report."""
        if self.closed:
            return False
        if ts is not None and self.ts is not None:
            return 0 <= ts - self.ts <= _STACK_NEAR_S
        return self.since <= _STACK_NEAR

    def feed(self, no: int, head: str, raw: str) -> None:
        """A line of this report's context that is no header.

        The report ends at its kind's end marker; before that, its lines are
        those up to its last stack dump line (a frame, a register, a context
        marker): what a report says comes before its stack, and what follows
        the stack is the report's only if more of it (its end marker, another
        stack it covers) comes after.
        """
        self.since += 1
        if not self.closed:
            if self.kind.end.match(head):
                self.take(no, raw)
                self.closed = self.ended = True
                return
            if _is_dump_line(head):
                self.take(no, raw)
            else:
                self.pending.append((no, raw))
        if _TRACE.match(head):
            self.in_trace = True
        found = ""
        if self.want == "access" and (m := _ACCESS.match(head)):
            found = m[1]
        elif self.want == "rip" and (m := _RIP.match(head)):
            found = _func(m[1])
        elif self.want == "frame" and self.in_trace and (m := _FRAME.match(head)) and not m[1]:
            func, innocent = _func(m[2]), self.kind.innocent
            if not _REPORTING.search(func) and (innocent is None or not innocent.search(func)):
                found = func
        if found:
            self.title, self.want = self.then.format(**self.names, found=found), ""

    def splat(self, source: str) -> Splat:
        lines = [raw for _, raw in self.lines[:TEXT_LINES]]
        if len(self.lines) > TEXT_LINES:
            lines.append(
                f"[... {len(self.lines) - TEXT_LINES} more lines of the report in {source}]"
            )
        return Splat(
            source,
            self.line_no,
            self.kind.name,
            self.line,
            self.title,
            start=self.lines[0][0],
            end=self.lines[-1][0],
            text="\n".join(lines) + "\n",
        )


def _title(header: Header, head: str) -> tuple[str, str, dict[str, str], Want]:
    """A report's title from its header, and, if a later line completes it, how."""
    text = _OFFSET.sub("", head).rstrip(" .:")
    match = header.regex.search(head)
    for t in header.titles:
        m = match if t.regex is None else t.regex.search(text)
        if m is None:
            continue
        names = {k: v or "" for k, v in m.groupdict().items()}
        if "func" in names:
            names["func"] = _func(names["func"])
        names |= {"text": text, "match": m[0]}
        return t.now.format(**names), t.then, names, t.want
    return text, "", {}, ""


def _cause(recent: Sequence[tuple[int, str, str]]) -> tuple[int, str, str]:
    """The line a bare stack dump was printed for: the last before it that is not the
    dump's own opening ("CPU: 1 PID: 2 Comm: ...")."""
    for no, head, raw in reversed(recent):
        if head and not _DUMP_BOILERPLATE.match(head):
            return no, head, raw
    return recent[-1]


def _header(head: str, printk: bool) -> tuple[Kind, Header] | None:
    for kind in KINDS:
        for header in kind.headers:
            if (printk or not header.printk_only) and header.regex.search(head):
                return kind, header
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
        found = _header(head, prefix.end() > 0)
        if found is None or (
            found[1].role == "stack" and any(r and r.covers(ts) for r in (near, last))
        ):
            if near is not None:
                near.feed(no, head, raw)
            continue
        kind, header = found
        if kind.name == "panic" and last is not None:
            # The panic a report causes, whatever prints it: its stack and end
            # marker are that report's too.
            last.join(kind, header, no, head, raw, ts)
            latest[ctx] = last
            continue
        if near is not None and near.joins(kind, header):
            near.join(kind, header, no, head, raw, ts)
            continue
        report = _Report(ctx, ts)
        if header.role == "stack":  # named by the line it was dumped for
            cause = _cause(before)
            report.name(kind, header, *cause)
            for n, _, line in before:  # the dump's opening lines, from its cause on
                if n >= cause[0]:
                    report.take(n, line)
            report.in_trace = True
        else:
            report.name(kind, header, no, head, raw)
            # The rule sanitizers and lockdep open their reports with (a kmsg.log has
            # an empty line after each record that carries keys).
            opening = next((b for b in reversed(list(before)[:-1]) if b[1]), None)
            if opening and _RULE.match(opening[1]):
                report.take(opening[0], opening[2])
            report.take(no, raw)
        reports.append(report)
        latest[None] = latest[ctx] = report
    return [r.splat(source) for r in reports]


_KMSG_RECORD = re.compile(r"^\d+,\d+,\d+,[^;]*;")
_KMSG_KEY = re.compile(r"^ [A-Z_]+=")


def kmsg_text(records: str) -> str:
    """/dev/kmsg records ("PRIO,SEQ,USECS,FLAGS;text", then " KEY=value" lines) as dmesg
    prints them, line for line (a key=value line becomes an empty one)."""
    out = []
    for line in records.splitlines():
        head, sep, text = line.partition(";")
        fields = head.split(",")
        if line.startswith(" ") or not sep or len(fields) < 3 or not fields[2].isdigit():
            out.append("")
            continue
        out.append(f"[{int(fields[2]) / 1e6:12.6f}] {text}")
    return "\n".join(out) + "\n"


def is_kmsg(text: str) -> bool:
    """Whether ``text`` is /dev/kmsg's records (the lab's kmsg.log), not printk's lines."""
    lines = text.splitlines()[:50]
    records = sum(bool(_KMSG_RECORD.match(line)) for line in lines)
    keys = sum(bool(_KMSG_KEY.match(line)) for line in lines)  # " SUBSYSTEM=net" after one
    return records > 0 and records + keys > len(lines) / 2


def read_log(path: Path) -> str:
    """A kernel log as printk prints it, line for line (kmsg records converted)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return kmsg_text(text) if is_kmsg(text) else text


def scan_files(paths: list[Path]) -> list[Splat]:
    found: list[Splat] = []
    for path in paths:
        if path.is_file():
            found += scan(read_log(path), str(path))
    return found
