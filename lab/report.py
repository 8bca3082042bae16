"""Stage 5, report: what each guest's scenarios did, as a matrix, KTAP, JUnit and summary.json.

Each guest's pytest process writes its ``GuestResult`` (``results.json`` in
the guest's directory): the request it ran, how the guest booted, and one
``CaseResult`` per test. ``ntalab run`` collects them into a ``RunResult``;
``ntalab report`` merges the RunResults of several directories (shards of
one matrix run on several machines) into one. Everything printed or written
here is derived from those typed results; nothing is parsed back from
JUnit or from test ids.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.guest import GuestInfo
from lab.nics import set_names

SUMMARY = "summary.json"
RESULTS = "results.json"
OUTCOME_MARK = {"pass": "ok", "fail": "FAIL", "error": "ERROR", "skip": "skip"}


@dataclass(frozen=True)
class GuestRequest:
    """One guest of a matrix: what ``ntalab run`` asks one pytest process to run."""

    kernel: str
    nic_set: str
    profile: str = "default"
    accel: str = "auto"
    guest_no: int = 0
    kmod: str = ""  # NTA's sources to build, if not this checkout's (a bisect step's)

    @property
    def id(self) -> str:
        """kernel/nic-set[/profile]: how reports name the guest."""
        tail = "" if self.profile == "default" else f"/{self.profile}"
        return f"{self.kernel}/{self.nic_set}{tail}"

    @property
    def dirname(self) -> str:
        return self.id.replace("/", "_")

    def row(self, nic: str) -> str:
        """The matrix row of one of its NICs: kernel/variant[/profile]."""
        tail = "" if self.profile == "default" else f"/{self.profile}"
        return f"{self.kernel}/{nic}{tail}"

    @property
    def nic_names(self) -> tuple[str, ...]:
        return set_names(self.nic_set)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, path: Path) -> GuestRequest:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class CaseResult:
    """One test of one guest: a scenario, on one NIC or on the whole guest."""

    scenario: str  # the test's name without "test_"
    nic: str | None  # the NIC variant, for a scenario run per NIC
    outcome: str  # pass, fail, error, skip
    seconds: float
    message: str = ""  # first line of the failure, or the skip reason
    figures: dict[str, str] = field(default_factory=dict)  # NIC variant -> key figure
    repro: str = ""  # reproducer bundle, for a failure
    splats: list[str] = field(default_factory=list)  # titles of the kernel reports it caused

    @property
    def name(self) -> str:
        return self.scenario + (f".{self.nic}" if self.nic else "")


@dataclass(frozen=True)
class GuestResult:
    request: GuestRequest
    cases: list[CaseResult]
    info: GuestInfo | None = None  # None: it never booted
    error: str = ""  # the guest (or its pytest process) failed outside any test
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.error and all(c.outcome in ("pass", "skip") for c in self.cases)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuestResult:
        info = data.get("info")
        if info is not None:
            info = GuestInfo.load_dict(info)
        return cls(
            request=GuestRequest(**data["request"]),
            cases=[CaseResult(**c) for c in data["cases"]],
            info=info,
            error=data.get("error", ""),
            seconds=data.get("seconds", 0.0),
        )

    @classmethod
    def load(cls, path: Path) -> GuestResult:
        return cls.from_dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class RunResult:
    guests: list[GuestResult]
    elapsed_s: float
    shard: str = ""  # "I/N" for one shard of a matrix, "" for the whole

    @property
    def passed(self) -> bool:
        """Every guest passed, and some guest ran a test (a selection that matches no
        scenario is no pass)."""
        return any(g.cases for g in self.guests) and all(g.passed for g in self.guests)

    def save(self, out: Path) -> None:
        (out / SUMMARY).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, out: Path) -> RunResult:
        data = json.loads((out / SUMMARY).read_text())
        return cls(
            [GuestResult.from_dict(g) for g in data["guests"]], data["elapsed_s"], data["shard"]
        )


def merge(runs: Iterable[RunResult]) -> RunResult:
    """Several runs (shards) as one; a guest run twice is an error in the caller's setup."""
    guests: dict[str, GuestResult] = {}
    elapsed = 0.0
    for run in runs:
        for g in run.guests:
            if g.request.id in guests:
                raise ValueError(f"guest {g.request.id} is in more than one of the results merged")
            guests[g.request.id] = g
        elapsed = max(elapsed, run.elapsed_s)
    return RunResult(sorted(guests.values(), key=lambda g: g.request.id), elapsed)


# -- the matrix ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    outcome: str
    seconds: float
    message: str
    figure: str = ""


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
                figure = c.figures.get(nic, "") if c.outcome == "pass" else ""
                out[(g.request.row(nic), c.scenario)] = Cell(
                    c.outcome, c.seconds, c.message, figure
                )
        if g.error and not g.cases:
            for nic in g.request.nic_names:
                out[(g.request.row(nic), "(guest)")] = Cell("error", g.seconds, g.error)
    return out


def matrix_table(grid: dict[tuple[str, str], Cell]) -> str:
    """A row per scenario, a numbered column per kernel/NIC variant (the legend above), then
    each scenario's figures and the failures.

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
    width = max(*(len(m) for m in OUTCOME_MARK.values()), *(len(m) for m in marks))
    head = f"{'scenario (longest s)':<{first}}" + "".join(f"{m:>{width + 1}}" for m in marks)
    lines += ["", head, "-" * len(head)]
    for c in scenarios:
        secs = max(cell.seconds for (_, sc), cell in grid.items() if sc == c)
        marks = [
            OUTCOME_MARK[cell.outcome] if (cell := grid.get((r, c))) is not None else "-"
            for r in rows
        ]
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
        if v.outcome in ("fail", "error"):
            failed.setdefault((c, v.message), []).append(r)
    if failed:
        lines += ["", "failures:"]
        lines += [f"  {c} on {', '.join(rs)}: {m}" for (c, m), rs in failed.items()]
    return "\n".join(lines)


def guest_lines(run: RunResult) -> list[str]:
    """A line per guest: release, accelerator, boot time, infrastructure retries."""
    out = []
    for g in run.guests:
        if g.info is None:
            out.append(
                f"guest {g.request.id}: did not boot: {g.error.splitlines()[0] if g.error else '?'}"
            )
            continue
        i = g.info
        note = "".join(f"; boot retried: {a.retry_reason}" for a in i.retries)
        out.append(
            f"guest {g.request.id}: {i.release}, {i.accel}, boot {i.boot_s:.0f}s, "
            f"{len(g.cases)} tests in {g.seconds:.0f}s{note}"
        )
    return out


# -- KTAP -----------------------------------------------------------------------------


def _ktap_text(text: str) -> str:
    """A description or directive's data: one line, no '#'."""
    return " ".join(text.replace("#", "").split())


def ktap(run: RunResult) -> str:
    """KTAP version 1: a nested block per guest, a result line per test (as kselftest).

    A guest that ran no test (it never booted) is a plain failed result, its
    error in the diagnostic lines before it.
    """
    lines = ["KTAP version 1", f"1..{len(run.guests)}"]
    for n, g in enumerate(run.guests, 1):
        notes = []
        if g.info is not None:
            notes.append(f"# kernel {g.info.release}, {g.info.accel}, boot {g.info.boot_s:.0f}s")
            notes += [f"# boot retried: {_ktap_text(a.retry_reason)}" for a in g.info.retries]
        notes += [f"# {_ktap_text(line)}" for line in g.error.splitlines()[:20]]
        if g.cases:
            sub = ["KTAP version 1", f"# Subtest: {g.request.id}", f"1..{len(g.cases)}", *notes]
            for k, c in enumerate(g.cases, 1):
                if c.outcome in ("fail", "error") and c.message:
                    sub.append(f"# {_ktap_text(c.message)}")
                for nic, figure in sorted(c.figures.items()):
                    sub.append(f"# {nic}: {_ktap_text(figure)}")
                result = "ok" if c.outcome in ("pass", "skip") else "not ok"
                directive = f" # SKIP {_ktap_text(c.message)}" if c.outcome == "skip" else ""
                sub.append(f"{result} {k} {c.name}{directive}")
            lines += [f"  {line}" for line in sub]
        else:
            lines += notes
        lines.append(f"{'ok' if g.passed else 'not ok'} {n} {g.request.id}")
    return "\n".join(lines) + "\n"


# -- JUnit ----------------------------------------------------------------------------


def junit(run: RunResult) -> str:
    """One testsuite per guest, one testcase per test, as CI systems read them."""
    root = ET.Element("testsuites", name="ntalab", time=f"{run.elapsed_s:.1f}")
    for g in run.guests:
        failures = sum(c.outcome == "fail" for c in g.cases)
        errors = sum(c.outcome == "error" for c in g.cases) + bool(g.error)
        suite = ET.SubElement(
            root, "testsuite", name=g.request.id, tests=str(len(g.cases)),
            failures=str(failures), errors=str(errors),
            skipped=str(sum(c.outcome == "skip" for c in g.cases)), time=f"{g.seconds:.1f}",
        )  # fmt: skip
        if g.error:
            case = ET.SubElement(suite, "testcase", classname=g.request.id, name="(guest)")
            ET.SubElement(case, "error", message=g.error.splitlines()[0]).text = g.error
        for c in g.cases:
            case = ET.SubElement(
                suite, "testcase", classname=g.request.id, name=c.name, time=f"{c.seconds:.1f}"
            )
            if c.outcome in ("fail", "error"):
                node = ET.SubElement(case, "failure" if c.outcome == "fail" else "error")
                node.set("message", c.message)
                node.text = c.message + (f"\nreproducer: ntalab repro {c.repro}" if c.repro else "")
            elif c.outcome == "skip":
                ET.SubElement(case, "skipped", message=c.message)
            if c.figures:
                props = ET.SubElement(case, "properties")
                for nic, figure in sorted(c.figures.items()):
                    ET.SubElement(props, "property", name=f"figure:{nic}", value=figure)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write(run: RunResult, out: Path) -> None:
    """summary.json, junit.xml and results.ktap in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    run.save(out)
    (out / "junit.xml").write_text(junit(run))
    (out / "results.ktap").write_text(ktap(run))


def printable(run: RunResult) -> str:
    return "\n".join([matrix_table(cells(run)), "", *guest_lines(run)])


def collect(dirs: Sequence[Path]) -> list[GuestResult]:
    """The GuestResults found in guest directories (``<dir>/results.json``)."""
    return [GuestResult.load(d / RESULTS) for d in dirs if (d / RESULTS).is_file()]
