"""Records: the typed values the lab's stages hand each other, and the names they use.

Standard library only, and no behaviour of the lab's: the report stage (and
with it ``ntalab report`` and ``ntalab --help``) runs on these alone, on a
machine without scapy, pexpect or pytest. Everything a run writes
(``request.json``, ``guest.json``, ``results.json``, ``summary.json``) is one
of these as JSON, and read back into one; the enums keep the JSON strings
they replaced. ``tests/test_layers.py`` keeps this module a leaf.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lab import ExitStatus

SUMMARY = "summary.json"  # a run's RunResult
RESULTS = "results.json"  # a guest's GuestResult, in its directory

# The NIC sets guests are booted with: one guest per (kernel, set). Any comma
# list of variants (lab.nics.VARIANTS) is a set too.
NIC_SETS: dict[str, tuple[str, ...]] = {
    "all": ("e1000", "rtl8139", "e1000-cb0"),
}

# Kernel command lines guests can boot with. "debug" turns on what Debian's
# kernels offer for catching misuse of freed memory: SLUB red zones, poisoning
# and user tracking, poisoning of freed pages, and zeroing on free.
BOOT_PROFILES: dict[str, tuple[str, ...]] = {
    "default": (),
    "debug": ("slub_debug=FZPU", "page_poison=1", "init_on_free=1"),
}

ACCELS = ("auto", "kvm", "tcg", "tcg-single")


def set_names(spec: str) -> tuple[str, ...]:
    """The variant names of a named NIC set or of a comma list, unchecked (lab.nics checks)."""
    return NIC_SETS.get(spec) or tuple(n for n in spec.split(",") if n)


class Outcome(StrEnum):
    """How one test ended."""

    PASS = "pass"
    FAIL = "fail"  # a finding: an assertion, a kernel report, a guest command that failed
    ERROR = "error"  # the lab could not run it: a guest that did not boot, a failed build
    SKIP = "skip"

    @property
    def mark(self) -> str:
        """How the matrix and the progress lines show it."""
        return {"pass": "ok", "fail": "FAIL", "error": "ERROR", "skip": "skip"}[self.value]

    @property
    def ok(self) -> bool:
        return self in (Outcome.PASS, Outcome.SKIP)


class BootOutcome(StrEnum):
    """How one try at booting a guest ended."""

    OK = "ok"
    EXIT = "exit"  # QEMU went before the shell came up
    STALL = "stall"  # silent before init: retried
    TIMEOUT = "timeout"
    SPLAT = "splat"  # the kernel reported a bug before the shell was up: retried

    @property
    def retried(self) -> bool:
        return self in (BootOutcome.STALL, BootOutcome.SPLAT)


class EventKind(StrEnum):
    """What a guest's progress event says (events.jsonl)."""

    PREPARE = "prepare"  # a kernel being fetched or built
    BOOT = "boot"
    BOOTED = "booted"
    TEST = "test"
    NIC = "nic"  # a test moved on to one of the guest's NICs
    RETRY = "retry"  # a bench trial's set-up failed: retried once (infrastructure)
    RESTORED = "restored"  # the guest put back in its documented state before a test
    DONE = "done"  # a test ended
    GUEST_DONE = "guest-done"


class Verdict(StrEnum):
    """What a run says as a whole, for CI: a finding is not a flake of the lab."""

    PASSED = "passed"
    FINDING = "finding"  # a scenario failed: the code under test (or its kernel) did it
    LAB = "lab could not run"  # a guest did not boot, a build failed, a shard is missing

    @property
    def status(self) -> ExitStatus:
        return {
            Verdict.PASSED: ExitStatus.PASSED,
            Verdict.FINDING: ExitStatus.FINDING,
            Verdict.LAB: ExitStatus.LAB,
        }[self]


@dataclass(frozen=True)
class RxCounts:
    """A guest NIC's receive counters (/sys/class/net/IFACE/statistics)."""

    packets: int  # handed to the stack
    # Dropped by the NIC itself, its receive ring full. QEMU's rtl8139 counts
    # them in RxMissed, which 8139cp reports here.
    missed: int

    def __sub__(self, other: RxCounts) -> RxCounts:
        return RxCounts(self.packets - other.packets, self.missed - other.missed)


# How a boot attempt that is retried ended, and the name its console log is kept under.
RETRIED_LOG = {BootOutcome.STALL: "stalled", BootOutcome.SPLAT: "splat"}


@dataclass(frozen=True)
class BootAttempt:
    """One try at booting: how it ended, after how long, and the last line it printed."""

    outcome: BootOutcome
    seconds: float
    last_line: str
    max_silence_s: float
    console_log: str  # file name in the guest's results dir
    splat: str = ""  # the first report's title, for SPLAT

    @property
    def retry_reason(self) -> str:
        """Why this attempt was retried, for reports ("" if it was not)."""
        if self.outcome is BootOutcome.STALL:
            return f"boot stalled after {self.last_line.strip()[:60]!r}"
        if self.outcome is BootOutcome.SPLAT:
            return f"kernel bug reported during boot: {self.splat}"
        return ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BootAttempt:
        return cls(**{**data, "outcome": BootOutcome(data["outcome"])})


@dataclass(frozen=True)
class GuestInfo:
    """What ran, for the report (guest.json): kernel, NICs, accelerator, how the boot went."""

    name: str
    kernel: str
    release: str
    nics: list[str]
    accel: str
    accel_reason: str
    append: list[str]
    boot_s: float
    attempts: list[BootAttempt] = field(default_factory=list)

    @property
    def retries(self) -> list[BootAttempt]:
        """The attempts booted again (a stall or a splat before the shell was up)."""
        return [a for a in self.attempts if a.outcome.retried]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuestInfo:
        attempts = [BootAttempt.from_dict(a) for a in data.get("attempts", [])]
        return cls(**{**data, "attempts": attempts})


@dataclass(frozen=True)
class GuestRequest:
    """One guest of a matrix: what ``ntalab run`` asks one pytest process to boot and run.

    ``cases`` are the scenario tests (``test_nta.py::test_x[e1000]``) it
    runs, when a sharded plan split the guest's scenarios into parts (each
    part a guest of its own, ``part`` "2/3"); empty, it runs every scenario
    it is given. ``sanitizer`` is what the plan took the kernel for; the guest
    checks its kernel agrees before it runs anything.
    """

    kernel: str
    nic_set: str
    profile: str = "default"
    accel: str = "auto"
    guest_no: int = 0
    sanitizer: bool = False
    cases: tuple[str, ...] = ()
    part: str = ""
    kmod: str = ""  # NTA's sources to build, if not this checkout's (a bisect step's)

    @property
    def id(self) -> str:
        """kernel/nic-set[/profile]: how reports name the guest (every part of it)."""
        tail = "" if self.profile == "default" else f"/{self.profile}"
        return f"{self.kernel}/{self.nic_set}{tail}"

    @property
    def dirname(self) -> str:
        """Its results directory: no '/', and no ',' (a NIC set given as a list), which
        virtme-ng's --rwdir takes as a separator and refuses."""
        part = f".part{self.part.replace('/', 'of')}" if self.part else ""
        return self.id.replace("/", "_").replace(",", "+") + part

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
    def from_dict(cls, data: dict[str, Any]) -> GuestRequest:
        return cls(**{**data, "cases": tuple(data.get("cases", ()))})

    @classmethod
    def load(cls, path: Path) -> GuestRequest:
        return cls.from_dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class CollectedCase:
    """A test a guest would run, as pytest collected it on the host (nothing booted)."""

    id: str  # file name::test name, what a GuestRequest's cases name
    name: str  # CaseResult.name: scenario[.nic]
    last: bool  # runs after the others, in every part of its guest (a check of the boot)


@dataclass(frozen=True)
class CaseResult:
    """One test of one guest: a scenario, on one NIC or on the whole guest."""

    scenario: str  # the test's name without "test_"
    nic: str | None  # the NIC variant, for a scenario run per NIC
    outcome: Outcome
    seconds: float
    message: str = ""  # first line of the failure, or the skip reason
    figures: dict[str, str] = field(default_factory=dict)  # NIC variant -> key figure
    repro: str = ""  # reproducer bundle, for a failure
    splats: list[str] = field(default_factory=list)  # titles of the kernel reports it caused
    # What of the guest's documented state was put back before it, and after which test
    # ("restored after test_x: eth1 down"): a test before it broke the guest.
    restored: str = ""

    @property
    def name(self) -> str:
        return self.scenario + (f".{self.nic}" if self.nic else "")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


@dataclass(frozen=True)
class GuestResult:
    """What one guest (one pytest process, one boot) did."""

    request: GuestRequest
    cases: list[CaseResult]
    info: GuestInfo | None = None  # None: it never booted
    error: str = ""  # the lab failed outside any test: the guest, or its pytest process
    seconds: float = 0.0

    @property
    def verdict(self) -> Verdict:
        if any(c.outcome is Outcome.FAIL for c in self.cases):
            return Verdict.FINDING
        if self.error or any(c.outcome is Outcome.ERROR for c in self.cases):
            return Verdict.LAB
        return Verdict.PASSED

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASSED

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuestResult:
        info = data.get("info")
        return cls(
            request=GuestRequest.from_dict(data["request"]),
            cases=[CaseResult.from_dict(c) for c in data["cases"]],
            info=GuestInfo.from_dict(info) if info is not None else None,
            error=data.get("error", ""),
            seconds=data.get("seconds", 0.0),
        )

    @classmethod
    def load(cls, path: Path) -> GuestResult:
        return cls.from_dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class LeftOut:
    """A manifest kernel a run did not boot, and why (with what would bring it in)."""

    kernel: str
    reason: str  # e.g. "not built: make sanitizer-kernels"


@dataclass(frozen=True)
class RunResult:
    """A run of the matrix, or of one shard of it, or shards merged.

    ``plan`` is the digest of the sharded plan a shard ran a part of, so that
    shards of different plans are never merged as one; ``shards`` the shard
    numbers ("1/6", ...) it holds.
    """

    guests: list[GuestResult]
    elapsed_s: float
    shards: list[str] = field(default_factory=list)
    plan: str = ""
    left_out: list[LeftOut] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # shards of the plan merged without

    @property
    def verdict(self) -> Verdict:
        """A finding wins: a retry of the lab would not make it go away. Then the lab's
        own failures; a run that ran nothing (no guest, or guests whose selection matched
        no scenario: a typo after -k), or merged without a shard, did not run."""
        verdicts = {g.verdict for g in self.guests}
        if Verdict.FINDING in verdicts:
            return Verdict.FINDING
        if Verdict.LAB in verdicts or self.missing or not (self.guests or self.shards):
            return Verdict.LAB
        if self.guests and not self.ran:
            return Verdict.LAB
        return Verdict.PASSED

    @property
    def ran(self) -> bool:
        """Some guest ran a test: a guest the selection (-k, the boot profile) leaves
        nothing to run is no error of its own, but a run where none ran anything is no pass."""
        return any(g.cases for g in self.guests)

    def save(self, out: Path) -> None:
        data = asdict(self) | {"verdict": self.verdict.value}
        (out / SUMMARY).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        # "shard" (one "I/N" or "") is how summaries before shard plans named theirs.
        shards = data.get("shards", [data["shard"]] if data.get("shard") else [])
        return cls(
            guests=[GuestResult.from_dict(g) for g in data["guests"]],
            elapsed_s=data["elapsed_s"],
            shards=list(shards),
            plan=data.get("plan", ""),
            left_out=[LeftOut(**x) for x in data.get("left_out", [])],
            missing=list(data.get("missing", [])),
        )

    @classmethod
    def load(cls, out: Path) -> RunResult:
        return cls.from_dict(json.loads((out / SUMMARY).read_text()))
