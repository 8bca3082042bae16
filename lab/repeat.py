"""Repeating a run in fresh guests until a flaky bug's rate is a number.

``ntalab repro --repeat N BUNDLE`` and ``ntalab run --repeat N`` run N times,
each time in guests booted afresh, print each run's kernel report titles as it
ends, and the rate at the end ("reproduced 3/10"); ``--until-fail`` stops at
the first run that reproduced. Each caller says what one run is; this module
counts, prints and records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lab import UsageError
from lab.records import Verdict

RECORD = "repeat.json"


@dataclass(frozen=True)
class Attempt:
    """One run: whether it reproduced, and what it saw."""

    reproduced: bool
    splats: list[str] = field(default_factory=list)  # kernel reports' titles, in order
    failed: list[str] = field(default_factory=list)  # tests that failed otherwise
    logs: str = ""  # where its logs are
    seconds: float = 0.0
    # The lab's own failures (a guest that never booted): the run tells nothing.
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Repeated:
    asked: int
    attempts: list[Attempt]

    @property
    def reproduced(self) -> int:
        return sum(a.reproduced for a in self.attempts)

    @property
    def verdict(self) -> Verdict:
        """A run that reproduced is a finding, whatever the others did; else a run the lab
        could not run (its guest never booted, no test ran) leaves the count unknown."""
        if self.reproduced:
            return Verdict.FINDING
        if not self.attempts or any(a.errors for a in self.attempts):
            return Verdict.LAB
        return Verdict.PASSED

    @property
    def summary(self) -> str:
        n = len(self.attempts)
        stopped = f", stopped at the first (--until-fail) of {self.asked}" if n < self.asked else ""
        return f"reproduced {self.reproduced}/{n}{stopped}"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Repeated:
        data = json.loads(path.read_text())
        return cls(data["asked"], [Attempt(**a) for a in data["attempts"]])


def check_times(times: int) -> None:
    if times < 1:
        raise UsageError(f"--repeat takes a positive count, not {times}")


def line(n: int, of: int, a: Attempt) -> str:
    """How one run went, as printed when it ends."""
    what = "reproduced" if a.reproduced else "lab error" if a.errors else "clean"
    seen = "; ".join(a.splats + a.failed + a.errors)
    return (
        f"[{n}/{of}] {what} in {a.seconds:.0f}s"
        + (f": {seen}" if seen else "")
        + (f" ({a.logs})" if a.logs else "")
    )


def repeat(
    once: Callable[[int], Attempt],
    times: int,
    until_fail: bool,
    record: Path | None = None,
    say: Callable[[str], None] = print,
) -> Repeated:
    """``once(n)`` for n = 1..times (each in fresh guests), each run's line printed as it
    ends, the record (``record``) rewritten after each; stops after the first run that
    reproduced if ``until_fail``."""
    check_times(times)
    attempts: list[Attempt] = []
    for n in range(1, times + 1):
        start = time.monotonic()
        a = once(n)
        if not a.seconds:
            a = replace(a, seconds=time.monotonic() - start)
        attempts.append(a)
        say(line(n, times, a))
        if record is not None:
            Repeated(times, attempts).save(record)
        if until_fail and a.reproduced:
            break
    result = Repeated(times, attempts)
    say(result.summary)
    return result
