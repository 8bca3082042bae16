"""Stage 5, report: run the scenario matrix with pytest and print it.

Scenarios are the pytest tests under ``tests/lab``; this module selects the
kernels and NIC sets, gives the run a results directory (JUnit XML, console
and kernel logs, injected pcaps, the vng and QEMU command lines), and prints
the matrix: rows kernel x NIC set, columns scenarios.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab import REPO

LAB_TESTS = REPO / "tests" / "lab"


@dataclass(frozen=True)
class Cell:
    outcome: str  # pass, fail, error, skip
    seconds: float
    message: str


def parse_junit(path: Path) -> dict[tuple[str, str], Cell]:
    """{(row, scenario): cell} from pytest's JUnit XML; row is 'kernel/nic-set'."""
    cells: dict[tuple[str, str], Cell] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        scenario, _, row = name.partition("[")
        outcome, message = "pass", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "fail", "error": "error", "skipped": "skip"}[kind]
                message = (
                    (node.get("message") or "").splitlines()[0][:80] if node.get("message") else ""
                )
        cells[(row.rstrip("]") or "-", scenario.removeprefix("test_"))] = Cell(
            outcome, float(case.get("time", 0)), message
        )
    return cells


def matrix_table(cells: dict[tuple[str, str], Cell]) -> str:
    """Rows kernel/NIC set, one numbered column per scenario, and the legend."""
    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    if not rows:
        return "(no scenarios ran)"
    width = max(len(r) for r in rows)
    head = f"{'kernel/nic-set':<{width}}  " + "  ".join(f"{n:<11}" for n in range(1, len(cols) + 1))
    lines = [head, "-" * len(head)]
    for r in rows:
        out = []
        for c in cols:
            cell = cells.get((r, c))
            out.append(f"{cell.outcome} {cell.seconds:4.0f}s".ljust(11) if cell else "-".ljust(11))
        lines.append(f"{r:<{width}}  " + "  ".join(out))
    lines.append("")
    lines += [f"{n}: {c}" for n, c in enumerate(cols, 1)]
    return "\n".join(lines)


def run_matrix(
    kernels: Sequence[str],
    nic_sets: Sequence[str],
    profiles: Sequence[str],
    accel_override: str,
    pytest_args: Sequence[str],
    results: Path | None,
    jobs: int = 1,
) -> int:
    out = (results or REPO / "results" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    latest = REPO / "results" / "latest"
    if out.parent == latest.parent:
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)
    argv = [sys.executable, "-m", "pytest", str(LAB_TESTS), "-m", "lab", "-p", "no:cacheprovider"]
    argv += [f"--kernel={k}" for k in kernels] + [f"--nic-set={s}" for s in nic_sets]
    argv += [f"--boot-profile={p}" for p in profiles]
    argv += [f"--accel={accel_override}", f"--results={out}", f"--junitxml={out / 'junit.xml'}"]
    if jobs > 1:
        argv += [f"-n{jobs}", "--dist=loadgroup"]
    argv += [a for a in pytest_args if a != "--"]
    print(f"+ {shlex.join(argv)}", flush=True)
    start = time.monotonic()
    rc = subprocess.call(argv, cwd=REPO)
    elapsed = time.monotonic() - start
    junit = out / "junit.xml"
    cells = parse_junit(junit) if junit.is_file() else {}
    guests = [json.loads(p.read_text()) for p in sorted(out.glob("*/guest.json"))]
    summary = {
        "kernels": list(kernels),
        "nic_sets": list(nic_sets),
        "boot_profiles": list(profiles),
        "accel": accel_override,
        "pytest_exit": rc,
        "elapsed_s": round(elapsed, 1),
        "guests": guests,
        "cells": [
            {
                "row": r,
                "scenario": c,
                "outcome": v.outcome,
                "seconds": v.seconds,
                "message": v.message,
            }
            for (r, c), v in sorted(cells.items())
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{matrix_table(cells)}\n")
    for g in guests:
        nics = "+".join(g["nics"])
        print(f"guest {g['kernel']} {nics}: {g['release']}, {g['accel']}, boot {g['boot_s']}s")
    print(f"results: {out}  total: {elapsed:.0f}s")
    return rc
