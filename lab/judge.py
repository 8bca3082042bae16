"""Stage 4, judge: scan kernel logs for splats, so a run with one fails.

Runs on saved logs with no guest, so it is tested on captured console logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Each pattern names the kind of splat; the first that matches a line wins.
SPLATS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("panic", r"Kernel panic - not syncing"),
        ("soft-lockup", r"watchdog: BUG: soft lockup|soft lockup - CPU#"),
        ("hard-lockup", r"Watchdog detected hard LOCKUP"),
        ("oops", r"\bOops\b|general protection fault|unable to handle (kernel|page)"),
        ("bug", r"\bBUG[: ]|kernel BUG at"),
        ("warning", r"\bWARNING: (CPU|at)\b|------------\[ cut here \]------------"),
        ("kasan", r"\bKASAN:"),
        ("ubsan", r"\bUBSAN:"),
        ("refcount", r"refcount_t: |\brefcount_warn"),
        ("list-corruption", r"list_(add|del) corruption|list_del corruption"),
        ("slub", r"\bPoison overwritten\b|\bRedzone overwritten\b|Object padding overwritten"),
        ("rcu-stall", r"rcu: INFO: rcu_\w+ (self-)?detected stall|rcu_sched self-detected stall"),
        ("hung-task", r"INFO: task \S+ blocked for more than"),
    )
)


@dataclass(frozen=True)
class Splat:
    source: str
    line_no: int
    kind: str
    line: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line_no}: [{self.kind}] {self.line}"


def scan(text: str, source: str = "log") -> list[Splat]:
    found = []
    for no, line in enumerate(text.splitlines(), 1):
        for kind, pattern in SPLATS:
            if pattern.search(line):
                found.append(Splat(source, no, kind, line.strip()))
                break
    return found


def scan_files(paths: list[Path]) -> list[Splat]:
    found: list[Splat] = []
    for path in paths:
        if path.is_file():
            found += scan(path.read_text(encoding="utf-8", errors="replace"), str(path))
    return found
