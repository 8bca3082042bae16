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

from lab import REPO, images, kbuild
from lab.nics import set_names

LAB_TESTS = REPO / "tests" / "lab"


@dataclass(frozen=True)
class Cell:
    outcome: str  # pass, fail, error, skip
    seconds: float
    message: str
    figure: str = ""  # the scenario's key figure for this NIC variant, once it passed


OUTCOME_MARK = {"pass": "ok", "fail": "FAIL", "error": "ERROR", "skip": "skip"}


def variant_rows(guest: str) -> list[str]:
    """'kernel/nic-set[/profile]' -> one 'kernel/variant[/profile]' per NIC of the set."""
    kernel, _, rest = guest.partition("/")
    nic_set, _, profile = rest.partition("/")
    names = set_names(nic_set)
    suffix = f"/{profile}" if profile else ""
    return [f"{kernel}/{name}{suffix}" for name in names] or [guest]


def plain_test_id(name: str) -> str:
    """A test's id or name without the "@<group>" xdist's loadgroup appends."""
    head, grouped, _ = name.partition("]@")
    return head + "]" if grouped else name


def parse_junit(path: Path) -> dict[tuple[str, str], Cell]:
    """{(row, scenario): cell} from pytest's JUnit XML; a row is 'kernel/NIC variant'.

    A test runs every NIC of its guest; each variant's figure is a
    ``figure:<variant>`` property the test recorded once that variant passed.
    """
    cells: dict[tuple[str, str], Cell] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        scenario, _, guest = plain_test_id(case.get("name", "")).partition("[")
        outcome, message = "pass", ""
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "fail", "error": "error", "skipped": "skip"}[kind]
                lines = (node.get("message") or "").splitlines()
                message = lines[0][:200] if lines else ""
        figures = {
            p.get("name", "").removeprefix("figure:"): p.get("value", "")
            for p in case.iter("property")
            if p.get("name", "").startswith("figure:")
        }
        for row in variant_rows(guest.rstrip("]") or "-"):
            variant = row.split("/")[1] if "/" in row else ""
            cells[(row, scenario.removeprefix("test_"))] = Cell(
                outcome, float(case.get("time", 0)), message, figures.get(variant, "")
            )
    return cells


def matrix_table(cells: dict[tuple[str, str], Cell]) -> str:
    """Rows kernel/NIC variant, one numbered column per scenario, the legend, the failures."""
    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    if not rows:
        return "(no scenarios ran)"

    def text(cell: Cell | None) -> str:
        return "-" if cell is None else f"{OUTCOME_MARK[cell.outcome]} {cell.figure}".strip()

    grid = [[text(cells.get((r, c))) for c in cols] for r in rows]
    widths = [
        max(len(str(n)), *(len(line[n - 1]) for line in grid)) for n in range(1, len(cols) + 1)
    ]
    first = max(len("kernel/nic"), *(len(r) for r in rows))
    head = f"{'kernel/nic':<{first}}  " + "  ".join(
        f"{n:<{w}}" for n, w in zip(range(1, len(cols) + 1), widths, strict=True)
    )
    head = head.rstrip()
    lines = [head, "-" * len(head)]
    for r, line in zip(rows, grid, strict=True):
        row = "  ".join(f"{t:<{w}}" for t, w in zip(line, widths, strict=True))
        lines.append(f"{r:<{first}}  {row}".rstrip())
    lines.append("")
    for n, c in enumerate(cols, 1):
        secs = [cell.seconds for (_, sc), cell in cells.items() if sc == c]
        lines.append(f"{n}: {c} ({max(secs):.0f}s)")
    failed: dict[tuple[str, str], list[str]] = {}
    for (r, c), v in sorted(cells.items()):
        if v.outcome in ("fail", "error"):
            failed.setdefault((c, v.message), []).append(r)
    if failed:
        lines += ["", "failures:"]
        lines += [f"  {c} on {', '.join(rs)}: {m}" for (c, m), rs in failed.items()]
    return "\n".join(lines)


def build_modules(kernels: Sequence[str]) -> None:
    """NTA for every kernel, before any guest boots.

    The tests would build it anyway, but then next to running guests: under
    TCG a compiler on the host starves their vCPUs, and a NIC without flow
    control misses frames. A failed build is reported here and by the tests.
    """
    for name in kernels:
        result = kbuild.build(images.resolve(name))
        print(f"nta for {name}: {result.status.value} in {result.elapsed:.0f}s", flush=True)


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
    build_modules(kernels)
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
                "figure": v.figure,
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
