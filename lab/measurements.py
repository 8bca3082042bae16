"""``ntalab measurements``: docs/measurements.md, written from results, never typed by hand.

What the lab measured (how long each guest and test took, each scenario's
key figure, the benchmark's table and targets) lives in the results the runs
wrote: ``summary.json`` of ``ntalab run`` (several results dirs are merged
as ``ntalab report`` merges shards; a re-run of some of their tests, after a
fix to those tests, replaces their cases and is listed as such) and
``bench.json`` of ``ntalab bench``.
This renders them as Markdown, so the document says what the last runs said
and goes stale only as a whole, with a command that renews it. The benchmark
is rendered from its JSON as it is (every field of every row, a table per
load with a column per sniffer), not from a copy of its schema. Standard
library only, like the report stage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab.records import CaseResult, Outcome, RunResult, Verdict
from lab.report import by_guest, cells

HEADER = (
    "# Measurements\n\n"
    "Written from the results named below by\n\n    {command}\n\n"
    "Do not edit it by hand: run the command again on newer results. Under TCG (no KVM)\n"
    "times are emulated: compare figures within one run, not across machines.\n"
)


def duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def num(x: float) -> str:
    """A figure to the precision its size warrants: three significant digits, whole
    numbers whole."""
    if x == int(x) or abs(x) < 5e-4:  # float noise around a whole number (4.4e-16)
        return str(round(x))
    for limit, digits in ((100, 0), (10, 1)):
        if abs(x) >= limit:
            return f"{x:.{digits}f}"
    return f"{x:.3g}"


def cell(value: Any) -> str:
    """One JSON value of a bench row or target, as a table cell."""
    if value is None or value == [] or value == ():
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping) and {"median", "lo", "hi"} <= set(value):
        return f"{num(value['median'])} ({num(value['lo'])}..{num(value['hi'])})"
    if isinstance(value, int | float):
        return num(float(value))
    if isinstance(value, list | tuple):
        return ", ".join(map(cell, value))
    return str(value).replace("|", "\\|")


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


# -- scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rerun:
    """A test run again (after a fix to the test): what it was, what it is now, and where."""

    guest: str  # GuestRequest.id
    before: CaseResult
    after: CaseResult
    source: str  # the results dir of the re-run


def rerun(run: RunResult, again: Sequence[tuple[str, RunResult]]) -> tuple[RunResult, list[Rerun]]:
    """``run`` with each case of each re-run (results dir, its RunResult) in place of the case
    of the same guest, scenario and NIC, and the list of what was replaced. A re-run of a
    guest or a test ``run`` does not hold is the caller's mistake (ValueError)."""
    guests = list(run.guests)
    done: list[Rerun] = []
    for source, later in again:
        for g in later.guests:
            if not any(h.request.id == g.request.id for h in guests):
                raise ValueError(f"{source}: guest {g.request.id} is not in the results it re-runs")
            for case in g.cases:
                key = (case.scenario, case.nic)
                hit = [(i, c) for i, h in enumerate(guests) if h.request.id == g.request.id
                       for c in h.cases if (c.scenario, c.nic) == key]  # fmt: skip
                if not hit:
                    raise ValueError(f"{source}: {g.request.id} {case.name} is not in the "
                                     "results it re-runs")  # fmt: skip
                i, before = hit[0]
                cases = [case if c is before else c for c in guests[i].cases]
                guests[i] = replace(guests[i], cases=cases)
                done.append(Rerun(g.request.id, before, case, source))
    return replace(run, guests=guests), done


def scenarios(run: RunResult, sources: Sequence[str], reruns: Sequence[Rerun] = ()) -> list[str]:
    tests = sum(len(g.cases) for g in run.guests)
    verdict = run.verdict
    again = ""
    if reruns:
        where = ", ".join(f"`{s}`" for s in dict.fromkeys(r.source for r in reruns))
        again = f" ({len(reruns)} of them as re-run in {where}: below)"
    out = [
        "## Scenarios",
        "",
        f"From {', '.join(f'`{s}`' for s in sources)} (`ntalab run`): verdict "
        f"**{verdict.value}**, {tests} tests{again} on {len(by_guest(run))} guests, "
        f"{duration(run.elapsed_s)} in all.",
        "",
    ]
    out += [f"Left out: {x.kernel} ({x.reason})." for x in run.left_out]
    out += [f"Missing: shard {s} of the plan." for s in run.missing]
    guests = []
    for g in run.guests:
        name = g.request.id + (f" part {g.request.part}" if g.request.part else "")
        i = g.info
        retried = "; ".join(a.retry_reason for a in i.retries) if i else ""
        guests.append([
            name,
            i.release if i else "did not boot",
            f"{i.accel} ({i.accel_reason})" if i else "-",
            duration(i.boot_s) if i else "-",
            str(len(g.cases)),
            duration(g.seconds),
            retried or "-",
        ])  # fmt: skip
    out += table(["guest", "kernel", "accelerator", "boot", "tests", "time", "boot retried"],
                 guests)  # fmt: skip
    grid = cells(run)
    rows = sorted({r for r, _ in grid})
    names = sorted({c for _, c in grid})
    out += ["", "### Matrix", "", "Outcome of each scenario on each kernel/NIC, and its longest"]
    out += ["time. " + "; ".join(f"{n}: `{r}`" for n, r in enumerate(rows, 1)) + ".", ""]
    lines = []
    for c in names:
        seconds = max(v.seconds for (_, sc), v in grid.items() if sc == c)
        marks = [grid[(r, c)].outcome.mark if (r, c) in grid else "-" for r in rows]
        lines.append([f"`{c}`", duration(seconds), *marks])
    out += table(["scenario", "longest", *map(str, range(1, len(rows) + 1))], lines)
    figures = [(c, r, grid[(r, c)].figure) for c in names for r in rows
               if (r, c) in grid and grid[(r, c)].figure]  # fmt: skip
    if figures:
        out += ["", "### Figures", ""]
        for c in dict.fromkeys(c for c, _, _ in figures):
            out.append(f"- `{c}`")
            out += [f"  - {r}: {f}" for sc, r, f in figures if sc == c]
    failed = [(c, r, v.outcome, v.message) for (r, c), v in sorted(grid.items())
              if not v.outcome.ok]  # fmt: skip
    if failed:
        out += ["", "### Failures", ""]
        out += [f"- `{c}` on {r}: {o.mark}: {cell(m)}" for c, r, o, m in failed]
    restored = [(c, r, v.restored) for (r, c), v in sorted(grid.items()) if v.restored]
    if restored:
        out += ["", "### Guest state put back before a test", ""]
        out += [f"- `{c}` on {r}: {t}" for c, r, t in restored]
    if reruns:
        out += ["", "### Re-run", "", "Tests run again after the run above; the tables show the "
                "re-run.", ""]  # fmt: skip
        for x in reruns:
            was = x.before.outcome.mark + (f" ({cell(x.before.message)})" if x.before.message
                                           else "")  # fmt: skip
            out.append(f"- `{x.before.name}` on {x.guest}: {was}; in `{x.source}` "
                       f"{x.after.outcome.mark} in {duration(x.after.seconds)}")  # fmt: skip
    if verdict is not Verdict.PASSED:
        finding = sum(c.outcome is Outcome.FAIL for g in run.guests for c in g.cases)
        out += ["", f"Verdict: {verdict.value} ({finding} findings)."]
    return out


# -- the benchmark -----------------------------------------------------------------------


def benchmark(bench: Mapping[str, Any], source: str) -> list[str]:
    """bench.json as ``lab.bench.stats.BenchResult`` writes it, every field of every row."""
    done = "complete" if bench.get("complete", True) else "**stopped before the end**"
    trials = len(bench.get("trials", []))
    out = [
        "## Benchmark",
        "",
        f"From `{source}` (`ntalab bench`): kernel {bench.get('kernel', '?')}, "
        f"{bench.get('accel', '?')} ({bench.get('accel_reason', '')}), host "
        f"{bench.get('host', '?')}, {bench.get('rounds', '?')} rounds"
        + (f", {trials} trials" if trials else "")
        + (f", boot {duration(float(bench['boot_s']))}" if bench.get("boot_s") else "")
        + f", {duration(float(bench.get('total_s', 0)))} in all, {done}."
        + (f" Idle time: {bench['idle_accounting']}." if bench.get("idle_accounting") else "")
        + (f" Clocksource: {bench['clocksource']}." if bench.get("clocksource") else "")
        + " Each figure is the median over the rounds, with their range in brackets.",
    ]
    if bench.get("unit"):
        out += ["", f"Per frame: {bench['unit']}."]
    rows: list[Mapping[str, Any]] = bench["rows"]
    for load, what in bench["loads"].items():
        mine = [r for r in rows if r.get("load") == load]
        if not mine:
            continue
        sniffers = [str(r["sniffer"]) for r in mine]
        fields = [k for k in mine[0] if k not in ("load", "sniffer")]
        out += ["", f"### Load `{load}`", "", f"{what}.", ""]
        out += table(["figure", *sniffers], [[f, *(cell(r.get(f)) for r in mine)] for f in fields])
    out += sweep(bench)
    targets: list[Mapping[str, Any]] = bench["targets"]
    if targets:
        out += ["", "### Targets (reported, not asserted)", ""]
        lines = []
        for t in targets:
            unit = str(t.get("unit", ""))
            measured = cell(t.get("measured")) + (unit if t.get("measured") is not None else "")
            if t.get("lo") is not None and t.get("hi") is not None:
                measured += f" ({cell(t['lo'])}..{cell(t['hi'])})"
            bound = "\\|x\\| <=" if t.get("two_sided") else "<="  # met when |measured| <= limit
            limit = "-" if t.get("limit") is None else f"{bound} {cell(t['limit'])}{unit}"
            lines.append([cell(t.get("what")), cell(t.get("load")), measured, limit,
                          cell(t.get("verdict")), cell(t.get("note") or None)])  # fmt: skip
        out += table(["target", "load", "measured", "limit", "verdict", "note"], lines)
    return out


def sweep(bench: Mapping[str, Any]) -> list[str]:
    """capture_us of each sniffer by frame size: the sweep's loads side by side."""
    sizes = sorted(bench.get("sweep", {}).items(), key=lambda kv: int(kv[1]))
    if not sizes:
        return []
    by = {(r.get("load"), r.get("sniffer")): r for r in bench["rows"]}
    sniffers = dict.fromkeys(str(r["sniffer"]) for r in bench["rows"] if r.get("load") in
                             dict(sizes))  # fmt: skip
    out = ["", "### Frame-size sweep", "", "capture_us by frame size (the loads "
           + ", ".join(f"`{load}`" for load, _ in sizes) + ").", ""]  # fmt: skip
    lines = [[s, *(cell(by[(load, s)].get("capture_us")) if (load, s) in by else "-"
                   for load, _ in sizes)] for s in sniffers]  # fmt: skip
    return out + table(["sniffer", *(f"{size} B" for _, size in sizes)], lines)


def document(
    run: RunResult | None,
    run_sources: Sequence[str],
    bench: Mapping[str, Any] | None,
    bench_source: str,
    command: str,
    reruns: Sequence[Rerun] = (),
) -> str:
    parts = [HEADER.format(command=command)]
    if run is not None:
        parts.append("\n".join(scenarios(run, run_sources, reruns)) + "\n")
    if bench is not None:
        parts.append("\n".join(benchmark(bench, bench_source)) + "\n")
    return "\n".join(parts)


def load_bench(path: Path) -> dict[str, Any]:
    """bench.json, or a ValueError saying why it is not one (``BenchResult.to_json``'s shape:
    rows and targets lists, loads a {name: what it is} map)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a bench.json: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a bench.json: not an object")
    shape = {"rows": list, "targets": list, "loads": dict}
    wrong = [k for k, kind in shape.items() if not isinstance(data.get(k), kind)]
    if wrong:
        raise ValueError(
            f"{path} is not a bench.json of this lab: no {', '.join(wrong)} "
            "(ntalab bench writes rows and targets as lists, loads as a map)"
        )
    if any(not isinstance(r, dict) or "load" not in r or "sniffer" not in r
           for r in data["rows"]):  # fmt: skip
        raise ValueError(f"{path} is not a bench.json of this lab: a row has no load or sniffer")
    return data
