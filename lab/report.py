"""Stage 5, report: what each guest's scenarios did, as a matrix, KTAP, JUnit and summary.json.

Each guest's pytest process writes its ``GuestResult`` (``results.json`` in
the guest's directory): the request it ran, how the guest booted, and one
``CaseResult`` per test. ``ntalab run`` collects them into a ``RunResult``;
``ntalab report`` merges the RunResults of several directories (shards of
one matrix run on several machines) into one. Everything printed or written
here is derived from those typed results; nothing is parsed back from
JUnit or from test ids. It imports the records and nothing else of the
lab's, so ``ntalab report`` runs with the standard library alone.

A guest whose scenarios a sharded plan split into parts ran as several
GuestResults (one per part, each its own boot, ``request.part`` "2/3"); the
matrix, KTAP and JUnit show a guest once, its parts' cases together, so
shards merged read as one run.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.records import CaseResult, GuestResult, Outcome, RunResult, Verdict


def merge(runs: Sequence[RunResult]) -> RunResult:
    """Several runs (the shards of one plan, or runs of disjoint guests) as one.

    The same guest part twice, the same shard twice, or shards of different
    plans are the caller's mistake (ValueError, nothing written). A shard of
    the plan that is not among them is recorded as missing: the lab did not
    run it.
    """
    plans = {run.plan for run in runs}
    if len(plans) > 1:
        raise ValueError(
            "these results come from different shard plans (or a sharded and an unsharded "
            "run): merge the shards of one plan"
        )
    shards = [s for run in runs for s in run.shards]
    twice = sorted({s for s in shards if shards.count(s) > 1})
    if twice:
        raise ValueError(f"shard {', '.join(twice)} is in more than one of the results merged")
    parts: dict[tuple[str, str], GuestResult] = {}
    for run in runs:
        for g in run.guests:
            key = (g.request.id, g.request.part)
            if key in parts:
                what = g.request.id + (f" part {g.request.part}" if g.request.part else "")
                raise ValueError(f"guest {what} is in more than one of the results merged")
            parts[key] = g
    missing: list[str] = []
    if shards and plans != {""}:
        count = int(shards[0].split("/")[1])
        missing = [f"{i}/{count}" for i in range(1, count + 1) if f"{i}/{count}" not in shards]
    return RunResult(
        guests=[parts[k] for k in sorted(parts)],
        elapsed_s=max((run.elapsed_s for run in runs), default=0.0),
        shards=sorted(shards, key=lambda s: int(s.split("/")[0])),
        plan=plans.pop() if plans else "",
        left_out=list(dict.fromkeys(x for run in runs for x in run.left_out)),
        missing=missing,
    )


def by_guest(run: RunResult) -> dict[str, list[GuestResult]]:
    """The run's guests by id, each with its parts (one, unless a plan split it)."""
    out: dict[str, list[GuestResult]] = {}
    for g in run.guests:
        out.setdefault(g.request.id, []).append(g)
    return out


# -- the matrix ---------------------------------------------------------------------

# When one cell holds a case several parts ran (a check of each boot, such as the
# leak check), it shows the worst of them.
_WORST = (Outcome.FAIL, Outcome.ERROR, Outcome.PASS, Outcome.SKIP)


@dataclass(frozen=True)
class Cell:
    outcome: Outcome
    seconds: float
    message: str
    figure: str = ""
    restored: str = ""  # what was put back before it (CaseResult.restored)


def _worse(a: Cell | None, b: Cell) -> Cell:
    if a is None:
        return b
    first = min(a, b, key=lambda c: _WORST.index(c.outcome))
    restored = "; ".join(r for r in (a.restored, b.restored) if r)
    return Cell(first.outcome, max(a.seconds, b.seconds), first.message, first.figure, restored)


def cells(run: RunResult) -> dict[tuple[str, str], Cell]:
    """{(row, scenario): cell}; a row is kernel/NIC variant[/profile].

    A scenario run per NIC fills its NIC's row; one run on the whole guest
    fills every row of the guest, each with its own figure.
    """
    out: dict[tuple[str, str], Cell] = {}
    for g in run.guests:
        for c in g.cases:
            nics = [c.nic] if c.nic else list(g.request.nic_names)
            for nic in nics:
                figure = c.figures.get(nic, "") if c.outcome is Outcome.PASS else ""
                key = (g.request.row(nic), c.scenario)
                cell = Cell(c.outcome, c.seconds, c.message, figure, c.restored)
                out[key] = _worse(out.get(key), cell)
        if g.error and not g.cases:
            for nic in g.request.nic_names:
                key = (g.request.row(nic), "(guest)")
                out[key] = _worse(out.get(key), Cell(Outcome.ERROR, g.seconds, g.error))
    return out


def matrix_table(grid: dict[tuple[str, str], Cell]) -> str:
    """A row per scenario, a numbered column per kernel/NIC variant (the legend above), then
    each scenario's figures, the failures, and the guest states put back before a test
    (a test before it broke the guest: ``CaseResult.restored``).

    Scenarios outnumber kernel/NIC rows and their names are long, so they make the rows;
    figures are too long for cells, so they follow the table.
    """
    rows = sorted({r for r, _ in grid})
    scenarios = sorted({c for _, c in grid})
    if not rows:
        return "(no scenarios ran)"
    lines = [f"{n:>2}: {r}" for n, r in enumerate(rows, 1)]
    first = max(len("scenario (longest s)"), *(len(c) + 7 for c in scenarios))
    marks = [str(n) for n in range(1, len(rows) + 1)]
    width = max(*(len(o.mark) for o in Outcome), *(len(m) for m in marks))
    head = f"{'scenario (longest s)':<{first}}" + "".join(f"{m:>{width + 1}}" for m in marks)
    lines += ["", head, "-" * len(head)]
    for c in scenarios:
        secs = max(cell.seconds for (_, sc), cell in grid.items() if sc == c)
        marks = [cell.outcome.mark if (cell := grid.get((r, c))) is not None else "-" for r in rows]
        label = f"{c} ({secs:.0f})"
        lines.append(f"{label:<{first}}" + "".join(f"{m:>{width + 1}}" for m in marks))
    figures = [
        (c, r, cell.figure) for c in scenarios for r in rows
        if (cell := grid.get((r, c))) is not None and cell.figure
    ]  # fmt: skip
    if figures:
        lines += ["", "figures:"]
        for c in dict.fromkeys(c for c, _, _ in figures):
            lines.append(f"  {c}")
            lines += [f"    {r}: {f}" for sc, r, f in figures if sc == c]
    failed: dict[tuple[str, str], list[str]] = {}
    for (r, c), v in sorted(grid.items()):
        if not v.outcome.ok:
            failed.setdefault((c, v.message), []).append(r)
    if failed:
        lines += ["", "failures:"]
        lines += [f"  {c} on {', '.join(rs)}: {m}" for (c, m), rs in failed.items()]
    restored: dict[tuple[str, str], list[str]] = {}
    for (r, c), v in sorted(grid.items()):
        if v.restored:
            restored.setdefault((c, v.restored), []).append(r)
    if restored:
        lines += ["", "restored:"]
        lines += [f"  {c} on {', '.join(rs)}: {t}" for (c, t), rs in restored.items()]
    return "\n".join(lines)


def guest_lines(run: RunResult) -> list[str]:
    """A line per guest (per part): release, accelerator, boot time, infrastructure retries."""
    out = []
    for g in run.guests:
        name = g.request.id + (f" part {g.request.part}" if g.request.part else "")
        if g.info is None and not g.error:
            # The selection (-k, the boot profile) left it nothing: it never booted.
            out.append(f"guest {name}: nothing selected to run, not booted")
            continue
        if g.info is None:
            out.append(f"guest {name}: did not boot: {g.error.splitlines()[0]}")
            continue
        i = g.info
        note = "".join(f"; boot retried: {a.retry_reason}" for a in i.retries)
        out.append(
            f"guest {name}: {i.release}, {i.accel}, boot {i.boot_s:.0f}s, "
            f"{len(g.cases)} tests in {g.seconds:.0f}s{note}"
        )
    return out


def verdict_lines(run: RunResult) -> list[str]:
    """What the run says as a whole, and why: a finding, or the lab that could not run
    (and what it left out), as CI reads the exit status."""
    lines = [f"left out: {x.kernel} ({x.reason})" for x in run.left_out]
    lines += [f"missing: shard {s} of the plan (its results were not merged)" for s in run.missing]
    v = run.verdict
    why = ""
    if v is Verdict.FINDING:
        failed = sum(c.outcome is Outcome.FAIL for g in run.guests for c in g.cases)
        why = f": {failed} test(s) failed"
    elif v is Verdict.LAB:
        broken = [g.request.id for g in run.guests if g.verdict is Verdict.LAB]
        why = f": {', '.join(dict.fromkeys(broken))}" if broken else ""
        if not why and run.missing:
            why = ": a shard is missing"
        elif not why:
            why = ": no test ran (the selection matched none)" if run.guests else ": no guest ran"
    lines.append(f"verdict: {v.value}{why} (exit {v.status.value})")
    return lines


# -- KTAP -----------------------------------------------------------------------------


def _ktap_text(text: str) -> str:
    """A description or directive's data: one line, no '#'."""
    return " ".join(text.replace("#", "").split())


def ktap(run: RunResult) -> str:
    """KTAP version 1: a nested block per guest, a result line per test (as kselftest).

    A guest that ran no test (it never booted) is a plain failed result, its
    error in the diagnostic lines before it.
    """
    guests = by_guest(run)
    lines = ["KTAP version 1", f"1..{len(guests)}"]
    for n, (gid, parts) in enumerate(guests.items(), 1):
        notes = []
        for g in parts:
            if g.info is not None:
                i = g.info
                notes.append(f"# kernel {i.release}, {i.accel}, boot {i.boot_s:.0f}s")
                notes += [f"# boot retried: {_ktap_text(a.retry_reason)}" for a in i.retries]
            notes += [f"# {_ktap_text(line)}" for line in g.error.splitlines()[:20]]
        cases = [c for g in parts for c in g.cases]
        if cases:
            sub = ["KTAP version 1", f"# Subtest: {gid}", f"1..{len(cases)}", *notes]
            for k, c in enumerate(cases, 1):
                if not c.outcome.ok and c.message:
                    sub.append(f"# {_ktap_text(c.message)}")
                for nic, figure in sorted(c.figures.items()):
                    sub.append(f"# {nic}: {_ktap_text(figure)}")
                if c.restored:
                    sub.append(f"# {_ktap_text(c.restored)}")
                result = "ok" if c.outcome.ok else "not ok"
                skip = c.outcome is Outcome.SKIP
                directive = f" # SKIP {_ktap_text(c.message)}" if skip else ""
                sub.append(f"{result} {k} {c.name}{directive}")
            lines += [f"  {line}" for line in sub]
        else:
            lines += notes
        passed = all(g.passed for g in parts)
        lines.append(f"{'ok' if passed else 'not ok'} {n} {gid}")
    return "\n".join(lines) + "\n"


# -- JUnit ----------------------------------------------------------------------------


def junit(run: RunResult) -> str:
    """One testsuite per guest, one testcase per test, as CI systems read them: a finding
    is a <failure>, a test the lab could not run an <error>."""
    root = ET.Element("testsuites", name="ntalab", time=f"{run.elapsed_s:.1f}")
    for gid, parts in by_guest(run).items():
        cases = [c for g in parts for c in g.cases]
        broken = [g.error for g in parts if g.error]

        def count(outcome: Outcome, cases: list[CaseResult] = cases) -> str:
            return str(sum(c.outcome is outcome for c in cases))

        suite = ET.SubElement(
            root, "testsuite", name=gid, tests=str(len(cases)), failures=count(Outcome.FAIL),
            errors=str(int(count(Outcome.ERROR)) + len(broken)), skipped=count(Outcome.SKIP),
            time=f"{sum(g.seconds for g in parts):.1f}",
        )  # fmt: skip
        for error in broken:
            case = ET.SubElement(suite, "testcase", classname=gid, name="(guest)")
            ET.SubElement(case, "error", message=error.splitlines()[0]).text = error
        for c in cases:
            case = ET.SubElement(
                suite, "testcase", classname=gid, name=c.name, time=f"{c.seconds:.1f}"
            )
            if not c.outcome.ok:
                node = ET.SubElement(case, "failure" if c.outcome is Outcome.FAIL else "error")
                node.set("message", c.message)
                node.text = c.message + (f"\nreproducer: ntalab repro {c.repro}" if c.repro else "")
            elif c.outcome is Outcome.SKIP:
                ET.SubElement(case, "skipped", message=c.message)
            if c.figures or c.restored:
                props = ET.SubElement(case, "properties")
                for nic, figure in sorted(c.figures.items()):
                    ET.SubElement(props, "property", name=f"figure:{nic}", value=figure)
                if c.restored:
                    ET.SubElement(props, "property", name="restored", value=c.restored)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write(run: RunResult, out: Path) -> None:
    """summary.json, junit.xml and results.ktap in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    run.save(out)
    (out / "junit.xml").write_text(junit(run))
    (out / "results.ktap").write_text(ktap(run))


def printable(run: RunResult) -> str:
    return "\n".join([matrix_table(cells(run)), "", *guest_lines(run), *verdict_lines(run)])
