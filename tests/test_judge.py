"""Splat detection, on a real clean console log and on real splat shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import judge

DATA = Path(__file__).parent / "data"


def test_clean_boot_log_has_no_splat() -> None:
    assert judge.scan_files([DATA / "console-debian-6.1-clean.log"]) == []


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[   12.3] WARNING: CPU: 1 PID: 77 at net/core/skbuff.c:123 skb_put+0x5/0x10", "warning"),
        ("[   12.3] ------------[ cut here ]------------", "warning"),
        ("[    5.0] BUG: unable to handle page fault for address: ffff888", "oops"),
        ("[    5.0] kernel BUG at mm/slub.c:432!", "bug"),
        ("[    5.0] Oops: 0000 [#1] PREEMPT SMP NOPTI", "oops"),
        ("[    5.0] general protection fault, probably for non-canonical address", "oops"),
        ("[    5.0] refcount_t: underflow; use-after-free.", "refcount"),
        ("[    5.0] list_del corruption. prev->next should be ffff", "list-corruption"),
        ("[    5.0] rcu: INFO: rcu_preempt self-detected stall on CPU", "rcu-stall"),
        ("[  240.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.", "hung-task"),
        (
            "[   30.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [ksoftirqd/0:14]",
            "soft-lockup",
        ),
        ("[    5.0] BUG kmalloc-64 (Tainted: G O): Poison overwritten", "bug"),
        ("[    5.0] Kernel panic - not syncing: Fatal exception in interrupt", "panic"),
        ("[    5.0] KASAN: slab-use-after-free in nta_commit+0x10", "kasan"),
    ],
)
def test_splat_kinds(line: str, kind: str) -> None:
    text = f"[    1.0] fine\n{line}\n[    1.1] fine\n"
    assert judge.scan(text, "c.log") == [judge.Splat("c.log", 2, kind, line)]


@pytest.mark.parametrize(
    "line",
    [
        "[    0.1] DEBUG_PAGEALLOC enabled",
        "[    1.0] e1000: Intel(R) PRO/1000 Network Driver",
        "warning: this is a userspace message, not a kernel one",
    ],
)
def test_ordinary_lines_are_not_splats(line: str) -> None:
    assert judge.scan(line) == []
