"""Splat detection, on real kernel logs: a clean boot, logs with no report, and one captured
report of every kind the scanner knows (tests/data/splats, see its SOURCES.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from lab import kernlog

DATA = Path(__file__).parent / "data"
SPLATS = DATA / "splats"
REPORT_LOGS = sorted(SPLATS.glob("*.log"))  # <kind>.log: a real report of that kind
CLEAN_LOGS = sorted((SPLATS / "clean").glob("*.log"))  # real logs syzkaller finds no report in

# Kinds no public captured log was found for: their shapes are checked on single lines.
NO_REAL_LOG = {"hard-lockup", "slub"}
# Logs that hold more than one report: the kinds of all, in order (SOURCES.md says which).
SEVERAL = {"call-trace": ["call-trace", "gpf"]}
# The title of each log's first report: the function named is the header's, or the first
# frame past the reporting machinery.
TITLES = {
    "bug": "kernel BUG in folio_unlock",
    "call-trace": "syz-executor6: vmalloc: allocation failure: 8589934588 bytes, "
    "mode:0x14080c0(GFP_KERNEL|__GFP_ZERO), nodemask=(null)",
    "gpf": "general protection fault in __se_sys_mremap",
    "hung-task": "INFO: task kworker/1:0:17 blocked for more than 143 seconds",
    "kasan": "KASAN: use-after-free Read in rhashtable_lookup_fast",
    "kcsan": "KCSAN: data-race in netlink_recvmsg / netlink_recvmsg",
    "kfence": "KFENCE: use-after-free read in memcmp",
    "kmemleak": "memory leak in lookup_or_create_module_kobject",
    "kmsan": "KMSAN: uninit-value in ppp_send_frame",
    "list-corruption": "list_del corruption in __dev_remove_pack",
    "lockdep": "suspicious RCU usage",
    "lockdep-circular": "possible circular locking dependency detected",
    "lockdep-inconsistent": "inconsistent lock state",
    "lockdep-recursive": "possible recursive locking detected",
    "oops": "BUG: unable to handle page fault in do_raw_spin_lock",
    "panic": "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
    "rcu-stall": "INFO: rcu_preempt detected stalls on CPUs/tasks",
    "ref-leak": "unregister_netdevice: waiting for lo to become free. Usage count = 5",
    "refcount": "refcount_t: saturated; leaking memory in __vma_enter_locked",
    "sleep-in-atomic": "BUG: sleeping function called from invalid context in __alloc_skb",
    "soft-lockup": "BUG: soft lockup - CPU#1 stuck for 134s! [syz-executor.3:16401]",
    "ubsan": "UBSAN: array-index-out-of-bounds in arch_uprobe_analyze_insn",
    "warning": "WARNING in ida_free",
}

# Each report's extent (first and last line), checked by eye against the log: a
# sanitizer report ends at its closing rule, an oops, BUG or WARNING at its "end
# trace" marker (or at the end of the panic that panic_on_warn or a fatal oops
# made of it before the marker), the others with their last stack dump line.
EXTENTS = {
    "bug": [(1, 69)],
    "call-trace": [(1, 14), (15, 428)],
    "gpf": [(1, 41)],
    "hung-task": [(1, 132)],
    "kasan": [(3, 181)],
    "kcsan": [(1, 25)],
    "kfence": [(1, 89)],
    "kmemleak": [(1, 28)],
    "kmsan": [(1, 25)],
    "list-corruption": [(1, 50)],
    "lockdep-circular": [(1, 107)],
    "lockdep-inconsistent": [(1, 79)],
    "lockdep-recursive": [(1, 146)],
    "lockdep": [(1, 75)],
    "oops": [(2, 77)],
    "panic": [(2, 22)],
    "rcu-stall": [(1, 163)],
    "ref-leak": [(1, 1)],
    "refcount": [(2, 63)],
    "sleep-in-atomic": [(1, 31)],
    "soft-lockup": [(1, 182)],
    "ubsan": [(1, 34)],
    "warning": [(1, 103)],
}
CALLER = re.compile(r"^\[\s*\d+\.\d+\]\[\s*([CT]\d+)\]")


def kinds_in(text: str) -> list[str]:
    return [s.kind for s in kernlog.scan(text)]


def test_clean_boot_log_has_no_splat() -> None:
    assert kernlog.scan_files([DATA / "console-debian-6.1-clean.log"]) == []


@pytest.mark.parametrize("path", CLEAN_LOGS, ids=lambda p: p.stem)
def test_logs_without_a_report_have_no_splat(path: Path) -> None:
    """A program's faults, the kernel's notes that say WARNING but are no bug."""
    assert kernlog.scan_files([path]) == []


@pytest.mark.parametrize("path", REPORT_LOGS, ids=lambda p: p.stem)
def test_a_real_report_is_one_splat_of_its_kind(path: Path) -> None:
    """The report's own lines (cut here, Oops, call traces, the panic it causes) are no
    splats of their own; the kind is the most specific ("BUG: KASAN:" is kasan)."""
    splats = kernlog.scan_files([path])
    assert splats, f"{path.name}: no splat"
    assert splats[0].kind == path.stem, splats
    assert [s.kind for s in splats] == SEVERAL.get(path.stem, [path.stem]), splats
    assert splats[0].title == TITLES[path.stem]
    assert str(splats[0]) == f"{path}:{splats[0].line_no}: [{path.stem}] {TITLES[path.stem]}"
    assert splats[0].line == path.read_text().splitlines()[splats[0].line_no - 1].strip()


@pytest.mark.parametrize("path", REPORT_LOGS, ids=lambda p: p.stem)
def test_each_report_keeps_its_extent_and_text(path: Path) -> None:
    """From its first line (the rule or "cut here" it opens with, or its header) to its
    end; its text is the lines of its printk caller in between, where the log names
    callers, else every line in between."""
    lines = path.read_text().splitlines()
    splats = kernlog.scan_files([path])
    assert [(s.start, s.end) for s in splats] == EXTENTS[path.stem]
    for s in splats:
        assert s.start <= s.line_no <= s.end
        text = s.text.splitlines()
        assert text[0] == lines[s.start - 1]
        extent = lines[s.start - 1 : s.end]
        if len(text) > kernlog.TEXT_LINES:  # bounded, and says so
            assert len(text) == kernlog.TEXT_LINES + 1
            assert re.fullmatch(rf"\[\.\.\. \d+ more lines of the report in {path}\]", text[-1])
            text = text[:-1]
        else:
            assert text[-1] == lines[s.end - 1]
        caller = CALLER.match(text[0])
        if caller is None:
            assert text == extent[: len(text)]
        else:  # its caller's lines only (a panic may print from another)
            own = [line for line in extent if (m := CALLER.match(line)) and m[1] == caller[1]]
            assert set(text) <= set(extent) and set(own[: len(text)]) <= set(text)


def test_a_report_ends_at_its_end_and_not_with_the_log() -> None:
    """What the kernel logs after a report is not the report's: after a sanitizer's closing
    rule, an "end trace" marker, or (without either) the report's last stack line."""
    after = "\n".join(f"[   99.{n:06d}] e1000: eth{n} NIC Link is Up" for n in range(5))
    for stem in ("kmsan", "lockdep-inconsistent", "gpf", "sleep-in-atomic"):
        path = SPLATS / f"{stem}.log"
        want = [(s.start, s.end) for s in kernlog.scan_files([path])]
        got = kernlog.scan(path.read_text() + after + "\n", str(path))
        assert [(s.start, s.end) for s in got] == want, stem
        assert "NIC Link is Up" not in got[0].text


def test_the_labs_kmsg_log_reads_line_for_line(tmp_path: Path) -> None:
    """/dev/kmsg's records (what the lab's kmsg.log holds, with the key=value lines the
    kernel adds) read as dmesg prints them, at the same line numbers."""
    lines = (SPLATS / "kmsan.log").read_text().splitlines()
    prefix = re.compile(r"^(\[[^\]]*\]\s*)+")
    records = "".join(
        f"3,{100 + n},{87_733_076 + n},-;{prefix.sub('', line)}\n SUBSYSTEM=net\n"
        for n, line in enumerate(lines)
    )
    log = tmp_path / "kmsg.log"
    log.write_text(records)
    assert kernlog.is_kmsg(records) and not kernlog.is_kmsg("\n".join(lines))
    (s,) = kernlog.scan_files([log])
    assert (s.kind, s.title, s.start, s.end) == ("kmsan", TITLES["kmsan"], 1, 49)
    assert (
        s.text.splitlines()[1]
        == "[   87.733077] BUG: KMSAN: uninit-value in ppp_send_frame+0x28d/0x27c0"
    )


def test_a_report_reads_as_its_place_title_and_text() -> None:
    (s,) = kernlog.scan_files([SPLATS / "kmsan.log"])
    text = s.report().splitlines()
    assert text[0] == f"{SPLATS / 'kmsan.log'}:1-25: [kmsan] {TITLES['kmsan']}"
    assert text[1:] == (SPLATS / "kmsan.log").read_text().splitlines()
    made = kernlog.Splat("k.log", 7, "bug", "[ 1.0] BUG: x", text="[ 1.0] BUG: x\n")
    assert made.report() == "k.log:7: [bug] [ 1.0] BUG: x\n[ 1.0] BUG: x"


def test_a_splat_round_trips_through_json() -> None:
    """As a bundle keeps it."""
    for s in kernlog.scan_files(REPORT_LOGS):
        assert kernlog.Splat.from_dict(json.loads(json.dumps(asdict(s)))) == s


def test_every_kind_is_proven_on_a_real_log() -> None:
    """A kind cannot be added to the scanner without a captured report of it."""
    kinds = {k.name for k in kernlog.KINDS}
    logs = {p.stem for p in REPORT_LOGS}
    assert kinds - NO_REAL_LOG - logs == set(), "kinds without a real log"
    assert logs - kinds == set(), "logs of no kind"
    assert kinds >= NO_REAL_LOG, "optional kinds the scanner lost"
    assert set(TITLES) == logs


def test_later_unrelated_reports_are_found() -> None:
    """Every log above, one after the other, as one log: each report is found, in order.
    A log whose kernel panicked is followed by a reboot, as a console shows it. (Not the
    lone panic: a panic after a report is taken as that report's.)"""
    logs = [p.read_text() for p in REPORT_LOGS if p.stem != "panic"]
    reboot = "[    0.000000] Linux version 6.1.0-56-amd64 #1 SMP PREEMPT_DYNAMIC\n"
    text = "".join(log + (reboot if "Kernel panic" in log else "") for log in logs)
    kinds = [p.stem for p in REPORT_LOGS if p.stem != "panic"]
    assert kinds_in(text) == [k for kind in kinds for k in SEVERAL.get(kind, [kind])]


def _no_caller(line: str) -> str:
    return re.sub(r"^(\[\s*\d+\.\d+\])\[\s*[CT]\d+\]", r"\1", line)


def _no_prefix(line: str) -> str:
    return re.sub(r"^(?:\[\s*\d+\.\d+\])?(?:\[\s*[CT]\d+\])?\s?", "", line)


@pytest.mark.parametrize(
    "render",
    [
        _no_caller,  # dmesg without CONFIG_PRINTK_CALLER
        lambda line: f"<4>{line}",  # a console loglevel, as /dev/kmsg readers keep it
        lambda line: f"Nov 25 08:42:11 ntalab kernel: {_no_caller(line)}",  # a syslog file
        lambda line: f"[    1.000000] [    T1] {_no_prefix(line)}",  # dmesg's caller id
        _no_prefix,  # printk.time=0, as some consoles print
    ],
    ids=["dmesg", "loglevel", "syslog", "dmesg-caller", "bare"],
)
def test_printk_prefixes_do_not_matter(render: Callable[[str], str]) -> None:
    for path in REPORT_LOGS:
        lines = path.read_text().splitlines()
        want = [(s.kind, s.title) for s in kernlog.scan_files([path])]
        got = [(s.kind, s.title) for s in kernlog.scan("\n".join(map(render, lines)))]
        assert got == want, path.name


def test_a_kernel_line_that_cuts_into_a_programs_is_read() -> None:
    """On a console, a printk can land mid-line in what a program printed."""
    line = (
        "root@ntalab:~# [   50.946624] WARNING: CPU: 0 PID: 3081 at mm/slab_common.c:971 k+0x5/0x7"
    )
    assert [(s.kind, s.title) for s in kernlog.scan(line)] == [("warning", "WARNING in k")]


@pytest.mark.parametrize(
    ("line", "kind", "title"),
    [
        # No public capture of these: the shapes the kernel prints (watchdog.c, slub.c).
        (
            "[   30.123456] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
            "hard-lockup",
            "Watchdog detected hard LOCKUP on cpu 1",
        ),
        (
            "[    5.000000] BUG kmalloc-64 (Tainted: G    B      O): Poison overwritten",
            "slub",
            "BUG kmalloc-64 (Tainted: G    B      O): Poison overwritten",
        ),
        (
            "[    5.000000] BUG skbuff_head_cache (Not tainted): Object already free",
            "slub",
            "BUG skbuff_head_cache (Not tainted): Object already free",
        ),
    ],
)
def test_kinds_without_a_real_log(line: str, kind: str, title: str) -> None:
    text = f"[    1.000000] fine\n{line}\n[    1.100000] fine\n"
    want = kernlog.Splat("c.log", 2, kind, line, title, start=2, end=2, text=line + "\n")
    assert kernlog.scan(text, "c.log") == [want]


@pytest.mark.parametrize(
    "line",
    [
        "[    0.100000] DEBUG_PAGEALLOC enabled",
        "[    1.000000] e1000: Intel(R) PRO/1000 Network Driver",
        "warning: this is a userspace message, not a kernel one",
        "BUG: a program's output, not printk's",
        "WARNING: a program's output, not printk's",
    ],
)
def test_ordinary_lines_are_not_splats(line: str) -> None:
    assert kernlog.scan(line) == []


def test_a_splat_reads_as_where_kind_and_title() -> None:
    """As the pytest plugin and ``ntalab repro`` print it; the line when no title."""
    assert str(kernlog.Splat("k.log", 7, "warning", "[ 1.0] WARNING: x", "WARNING in f")) == (
        "k.log:7: [warning] WARNING in f"
    )
    assert str(kernlog.Splat("k.log", 7, "bug", "[ 1.0] BUG: x")) == "k.log:7: [bug] [ 1.0] BUG: x"


def test_a_lab_guests_kmsg_log_with_ntas_frames() -> None:
    """A debian-6.1 guest's kmsg.log, captured with 'ntalab boot --exec': nta_caller's
    GFP_KERNEL allocation slept in NTA's fallback (fault_block_fallback=1) past the lab's
    20 s hung-task timeout. One report, whole, its frames NTA's, nta_caller's and the
    kernel's."""
    log = DATA / "kmsg-debian-6.1-hung-nta.log"
    (s,) = kernlog.scan_files([log])
    assert (s.kind, s.title) == ("hung-task", "INFO: task sh:163 blocked for more than 21 seconds")
    assert (s.start, s.end) == (536, 571)
    text = s.text.splitlines()
    assert text[0].endswith("INFO: task sh:163 blocked for more than 21 seconds.")
    assert text[-1].endswith(" </TASK>")
    assert "nta_fallback_gfp+0xb1/0xf0 [nta]" in s.text
    assert "nta_caller_write+0x12c/0x1c0 [nta_caller]" in s.text
