"""What a run boots and runs where: the matrix's guests, and the shards of a CI job matrix.

The matrix is kernels x NIC sets x boot profiles, one guest each (a
sanitizer kernel with the default profile only), numbered over the whole
matrix so that a guest has the same MACs whichever shard runs it.

``--shard I/N`` splits the guests' scenarios over N shards, each its own
machine: a shard boots its own guest of each (kernel, NIC set, profile) it
has scenarios of, and runs that slice (a *part* of the guest). The plan
needs each guest's tests, which pytest collects on the host without booting
(``--lab-collect``), and how long each takes: the previous run's
``summary.json`` when there is one, else ``DEFAULT_S`` by kind of kernel.
A guest is split into parts only as far as the shards' share of the whole
requires, since each part costs a boot and the guest's ``last`` tests
(which every part runs: they check the whole boot); the parts then go to
the shards longest first (``balance``). Every shard computes the same plan
from the same inputs, or reads it from ``--plan FILE`` (what ``ntalab run
--list --json`` wrote), and records its digest: ``ntalab report`` merges
only shards of one plan, and says which are missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lab import InfraError, UsageError, paths
from lab.records import CollectedCase, GuestRequest, RunResult


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            i, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard takes I/N (e.g. 1/2), not {text!r}") from None
        if not 1 <= i <= n:
            raise UsageError(f"--shard {text}: I must be between 1 and N")
        return cls(i, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def weight(req: GuestRequest) -> int:
    """How long a guest takes, roughly: sanitizer kernels most, debug guests least."""
    if req.sanitizer:
        return 3
    return 1 if req.profile != "default" else 2


def guests(
    kernels: Sequence[str],
    nic_sets: Sequence[str],
    profiles: Sequence[str],
    accel: str,
    sanitizers: Collection[str] = (),
    kmod: Path | None = None,
) -> list[GuestRequest]:
    """Every guest of the matrix, whole, numbered, longest first.

    ``sanitizers`` names the sanitizer (KASAN) kernels: they boot with the
    default profile only, since KASAN catches all the debug profile's slab
    poisoning does and more. ``kmod``: NTA's sources every guest builds and
    reads (a bisect step's), if not this checkout's.
    """
    src = str(kmod.resolve()) if kmod is not None else ""
    every = [
        GuestRequest(kernel, nic_set, profile, accel, sanitizer=kernel in sanitizers, kmod=src)
        for kernel in kernels
        for nic_set in nic_sets
        for profile in profiles
        if profile == "default" or kernel not in sanitizers
    ]
    every.sort(key=lambda r: (-weight(r), r.id))
    return [replace(r, guest_no=n) for n, r in enumerate(every)]


# -- how long things take ------------------------------------------------------------

# Without a previous run: seconds per test and per boot, measured here (2-core TCG
# host, one guest at a time): a Debian guest ran make test's 51 tests in 9 min 20 s
# and booted in 24 s; a KASAN guest is 3-5 times slower and boots in about 45 s alone
# (64-98 s beside another).
DEFAULT_S = {"debian": (11.0, 25.0), "sanitizer": (40.0, 70.0)}


@dataclass(frozen=True)
class Timings:
    """Seconds per test and per boot, by guest id, from a previous run."""

    cases: dict[tuple[str, str], float]  # (guest id, CaseResult.name) -> seconds
    boots: dict[str, float]  # guest id -> boot seconds

    @classmethod
    def of(cls, run: RunResult | None) -> Timings:
        if run is None:
            return cls({}, {})
        cases = {(g.request.id, c.name): c.seconds for g in run.guests for c in g.cases}
        boots = {g.request.id: g.info.boot_s for g in run.guests if g.info is not None}
        return cls(cases, boots)

    @classmethod
    def load(cls, path: Path | None) -> Timings:
        """From a results dir or its summary.json; none at all when there is none."""
        if path is None:
            return cls.of(None)
        summary = path / "summary.json" if path.is_dir() else path
        try:
            return cls.of(RunResult.from_dict(json.loads(summary.read_text())))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--timings {path}: not a run's summary.json: {e}") from None

    def case(self, req: GuestRequest, name: str) -> float:
        default = DEFAULT_S["sanitizer" if req.sanitizer else "debian"][0]
        return self.cases.get((req.id, name), default)

    def boot(self, req: GuestRequest) -> float:
        return self.boots.get(req.id, DEFAULT_S["sanitizer" if req.sanitizer else "debian"][1])


# -- collecting each guest's tests, on the host ----------------------------------------


def pytest_argv(
    req_file: Path, scenarios: Path, pytest_args: Sequence[str], *extra: str
) -> list[str]:
    """The pytest command that runs (or collects) one guest's scenarios."""
    return [
        sys.executable, "-m", "pytest", *selection(scenarios, pytest_args), "-m", "lab",
        "-p", "lab.pytest_plugin", "-p", "no:cacheprovider",
        "--lab-request", str(req_file), "-q", *extra,
    ]  # fmt: skip


def selection(scenarios: Path, pytest_args: Sequence[str]) -> list[str]:
    """pytest's arguments: the scenarios dir, or the scenario files and ids the user named.

    Paths the user gave (``tests/lab/test_nta.py``, ``FILE::test``) are made
    absolute, since pytest runs from the import root; with none, every
    scenario runs.
    """
    args, named = [], False
    for arg in pytest_args:
        head, sep, rest = arg.partition("::")
        if not arg.startswith("-") and Path(head).exists():
            arg, named = f"{Path(head).resolve()}{sep}{rest}", True
        args.append(arg)
    return args if named else [str(scenarios), *args]


def collect(
    req: GuestRequest, scenarios: Path, pytest_args: Sequence[str], work: Path
) -> list[CollectedCase]:
    """The tests ``req``'s guest runs, in order, as pytest collects them for it (no boot)."""
    d = work / req.dirname
    d.mkdir(parents=True, exist_ok=True)
    req.save(d / "request.json")
    out = d / "collected.json"
    argv = pytest_argv(d / "request.json", scenarios, pytest_args, "--collect-only")
    proc = subprocess.run(
        [*argv, "--lab-collect", str(out)], cwd=paths.IMPORT_ROOT, capture_output=True, text=True
    )
    if proc.returncode not in (0, 5) or not out.is_file():  # 5: nothing selected
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise InfraError(f"collecting {req.id}'s tests failed ({proc.returncode}):\n{tail}")
    return [CollectedCase(**c) for c in json.loads(out.read_text())]


# -- the plan --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One guest part of one shard: what ``--list`` prints a line of."""

    shard: str  # "I/N"
    request: GuestRequest
    expected_s: float  # its boot and its tests

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "guest": self.request.id,
            "scenarios": list(self.request.cases),
            "expected_s": round(self.expected_s),
            "request": asdict(self.request),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(data["shard"], GuestRequest.from_dict(data["request"]), data["expected_s"])


@dataclass(frozen=True)
class Plan:
    count: int
    entries: list[Entry]

    @property
    def digest(self) -> str:
        """Names the plan: the same guests, parts and tests, whatever the timings said."""
        text = json.dumps([[e.shard, asdict(e.request)] for e in self.entries], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def shard(self, shard: Shard) -> list[GuestRequest]:
        if shard.count != self.count:
            raise UsageError(f"--shard {shard}: the plan has {self.count} shards")
        return [e.request for e in self.entries if e.shard == str(shard)]

    def expected_s(self, shard: str) -> float:
        return sum(e.expected_s for e in self.entries if e.shard == shard)

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            entries = [Entry.from_json(e) for e in json.loads(path.read_text())]
            count = Shard.parse(entries[0].shard).count
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            what = f"--plan {path}: not what 'ntalab run --list --json' writes: {e}"
            raise UsageError(what) from None
        return cls(count, entries)

    def text(self) -> str:
        """A line per shard (its expected time), then a line per guest part of it."""
        lines = []
        for i in range(1, self.count + 1):
            shard = f"{i}/{self.count}"
            lines.append(f"shard {shard}: expected {self.expected_s(shard):.0f}s")
            for e in self.entries:
                if e.shard == shard:
                    part = f" part {e.request.part}" if e.request.part else ""
                    lines.append(
                        f"  {e.request.id}{part}: {len(e.request.cases)} tests, "
                        f"expected {e.expected_s:.0f}s"
                    )
                    lines += [f"    {c}" for c in e.request.cases]
        return "\n".join(lines)


def balance(
    whole: Sequence[GuestRequest],
    collected: dict[str, list[CollectedCase]],
    count: int,
    timings: Timings,
) -> Plan:
    """The guests' tests over ``count`` shards, each shard about a ``count``-th of the whole.

    A part of a guest costs a boot and the guest's ``last`` tests besides its
    own, so a guest is split only as far as it must be: into as many parts
    as it is ``count``-ths of the whole (rounded up), its tests dealt longest
    first to the part they end soonest in. Then the parts, longest first, go
    to the shard that ends soonest with them. A guest's tests keep pytest's
    order within a part.
    """
    guests = [r for r in whole if any(not c.last for c in collected[r.id])]

    def overhead(r: GuestRequest) -> float:
        return timings.boot(r) + sum(timings.case(r, c.name) for c in collected[r.id] if c.last)

    total = {
        r.id: overhead(r) + sum(timings.case(r, c.name) for c in collected[r.id] if not c.last)
        for r in guests
    }
    target = sum(total.values()) / count
    chunks: list[tuple[float, GuestRequest, list[CollectedCase]]] = []
    for r in guests:
        n = min(count, max(1, math.ceil(total[r.id] / target - 1e-9)))
        loads = [overhead(r)] * n
        parts: list[list[CollectedCase]] = [[] for _ in range(n)]
        tests = [c for c in collected[r.id] if not c.last]
        for c in sorted(tests, key=lambda c: -timings.case(r, c.name)):
            k = loads.index(min(loads))
            loads[k] += timings.case(r, c.name)
            parts[k].append(c)
        chunks += [(load, r, tests) for load, tests in zip(loads, parts, strict=True) if tests]
    # shard -> guest id -> (seconds, tests); two parts of a guest on one shard are one.
    shards: list[dict[str, tuple[float, list[CollectedCase]]]] = [{} for _ in range(count)]

    def ends(s: int, load: float, r: GuestRequest) -> float:
        held = sum(t for t, _ in shards[s].values())
        return held + load - (overhead(r) if r.id in shards[s] else 0.0)

    for load, r, tests in sorted(chunks, key=lambda t: (-t[0], t[1].guest_no)):
        s = min(range(count), key=lambda s: (ends(s, load, r), s))
        had, before = shards[s].get(r.id, (overhead(r), []))
        shards[s][r.id] = (had + load - overhead(r), before + tests)
    by_id = {r.id: r for r in guests}
    n_parts = {r.id: sum(r.id in on for on in shards) for r in guests}
    seen: dict[str, int] = {}
    entries = []
    for s, held in enumerate(shards):
        for gid in sorted(held, key=lambda g: by_id[g].guest_no):
            r, (load, tests) = by_id[gid], held[gid]
            order = {c.id: k for k, c in enumerate(collected[gid])}
            cases = sorted(tests, key=lambda c: order[c.id]) + [c for c in collected[gid] if c.last]
            seen[gid] = seen.get(gid, 0) + 1
            part = f"{seen[gid]}/{n_parts[gid]}" if n_parts[gid] > 1 else ""
            request = replace(r, cases=tuple(c.id for c in cases), part=part)
            entries.append(Entry(f"{s + 1}/{count}", request, load))
    return Plan(count, entries)
