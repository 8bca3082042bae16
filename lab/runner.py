"""``ntalab run``: the scenario matrix, one pytest process per guest, as KUnit's runner drives
its own guests.

The matrix is kernels x NIC sets x boot profiles; each cell of it is a
guest, and each guest is one pytest process over the scenarios, given its
``GuestRequest`` in a file. Up to ``jobs`` guests run at once, the longest
first; ``--shard I/N`` runs the I-th of N disjoint parts (whole guests), so
a CI system's job matrix can spread the lab over machines and ``ntalab
report`` merge what they wrote. While it runs, every guest's progress
events are printed as lines with the elapsed time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lab import UsageError, images, kbuild, kconfig, paths, report
from lab.events import Event, EventTail
from lab.report import GuestRequest, GuestResult, RunResult

Print = Callable[[str], None]


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


def weight(req: GuestRequest, sanitizers: Collection[str]) -> int:
    """How long a guest takes, roughly: sanitizer kernels most, debug guests least."""
    if req.kernel in sanitizers:
        return 3
    return 1 if req.profile != "default" else 2


def plan(
    kernels: Sequence[str],
    nic_sets: Sequence[str],
    profiles: Sequence[str],
    accel: str,
    shard: Shard | None = None,
    sanitizers: Collection[str] = (),
) -> list[GuestRequest]:
    """Every guest of the matrix (or of one shard of it), longest first.

    ``sanitizers`` names the sanitizer (KASAN) kernels: they boot with the
    default profile only, since KASAN catches all the debug profile's slab
    poisoning does and more. Guests are numbered over the whole matrix, so
    that a guest has the same number (and MACs) whichever shard runs it.
    Shards deal the guests out round robin in that order, so each gets a like
    mix of long and short.
    """
    every = [
        GuestRequest(kernel, nic_set, profile, accel)
        for kernel in kernels
        for nic_set in nic_sets
        for profile in profiles
        if profile == "default" or kernel not in sanitizers
    ]
    every.sort(key=lambda r: (-weight(r, sanitizers), r.id))
    numbered = [
        GuestRequest(r.kernel, r.nic_set, r.profile, r.accel, guest_no=n)
        for n, r in enumerate(every)
    ]
    if shard is None:
        return numbered
    return numbered[shard.index - 1 :: shard.count]


def sanitizer_kernels(kernels: Sequence[str]) -> set[str]:
    """Those of ``kernels`` (ready to boot) whose config has KASAN."""
    manifest = images.load_manifest()
    out = set()
    for name in kernels:
        config = images.resolve(name, manifest).config
        settings = kconfig.read(config) if config is not None and config.is_file() else {}
        if settings.get("CONFIG_KASAN") == "y":
            out.add(name)
    return out


def build_modules(kernels: Sequence[str], say: Print) -> None:
    """NTA for every kernel, before any guest boots.

    The scenarios would build it anyway, but then next to running guests:
    under TCG a compiler on the host starves their vCPUs, and a NIC without
    flow control misses frames. A failed build is reported here and by the
    scenarios.
    """
    for name in kernels:
        kernel = images.kernel_for(name, progress=say)
        result = kbuild.build(kernel)
        say(f"nta for {name}: {result.status.value} in {result.elapsed:.0f}s")
    tool = kbuild.build_ntadump()
    say(f"ntadump: {tool.program}")


class Progress:
    """Prints a line per guest event, stamped with the run's elapsed time."""

    def __init__(self, say: Print) -> None:
        self.say = say
        self.start = time.monotonic()

    def line(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.start)
        self.say(f"[{elapsed // 60:2d}:{elapsed % 60:02d}] {text}")

    def event(self, e: Event) -> None:
        text = {
            "prepare": f"{e.guest}: {e.detail}",
            "boot": f"{e.guest}: booting ({e.detail})",
            "booted": f"{e.guest}: up in {e.detail}"
            + (" after an infrastructure retry (boot stalled)" if e.outcome == "retried" else ""),
            "test": f"{e.guest}: {e.test}",
            "nic": f"{e.guest}: {e.test} on {e.nic}",
            "retry": f"{e.guest}: {e.test}: set-up failed, retried once (infrastructure): "
            f"{e.detail}",
            "done": f"{e.guest}: {e.test} {report.OUTCOME_MARK.get(e.outcome, e.outcome)}"
            + (f" ({e.detail})" if e.detail else ""),
            "guest-done": f"{e.guest}: finished",
        }.get(e.kind, f"{e.guest}: {e.kind} {e.detail}")
        self.line(text)


@dataclass
class _Running:
    req: GuestRequest
    dir: Path
    proc: subprocess.Popen[bytes]
    events: EventTail
    start: float


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


def _start(req: GuestRequest, out: Path, scenarios: Path, pytest_args: Sequence[str]) -> _Running:
    gdir = out / req.dirname
    gdir.mkdir(parents=True, exist_ok=True)
    (gdir / "events.jsonl").unlink(missing_ok=True)
    req.save(gdir / "request.json")
    argv = [
        sys.executable, "-m", "pytest", *selection(scenarios, pytest_args), "-m", "lab",
        "-p", "lab.pytest_plugin", "-p", "no:cacheprovider",
        "--lab-request", str(gdir / "request.json"), "-q",
    ]  # fmt: skip
    (gdir / "pytest-argv.txt").write_text(" ".join(argv) + "\n")
    with (gdir / "pytest.log").open("wb") as log:
        # A session of its own: its QEMU goes with it when the run is stopped (_stop).
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=paths.IMPORT_ROOT,
            start_new_session=True,
        )  # fmt: skip
    return _Running(req, gdir, proc, EventTail(gdir / "events.jsonl"), time.monotonic())


def _finish(r: _Running) -> GuestResult:
    rc = r.proc.wait()
    path = r.dir / report.RESULTS
    log = (r.dir / "pytest.log").read_text(errors="replace")[-3000:]
    if not path.is_file():
        seconds = time.monotonic() - r.start
        return GuestResult(r.req, [], None, f"pytest exited {rc} with no results:\n{log}", seconds)
    result = GuestResult.load(path)
    if rc not in (0, 1) and not result.error:  # 1: tests failed, recorded as such
        result = replace(result, error=f"pytest exited {rc}:\n{log}")
    return result


STOP_WAIT_S = 60.0  # for a guest's pytest to tear its guest down after SIGINT


def _stop(running: Sequence[_Running]) -> None:
    """Interrupt every guest's pytest (its fixtures then power the guest off), and kill
    what is left of a guest's process group after STOP_WAIT_S."""
    for r in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r.proc.pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_WAIT_S
    for r in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            r.proc.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r.proc.pid, signal.SIGKILL)  # QEMU, should the guest outlive pytest
        r.proc.wait()


def _interrupt(_signo: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_guests(
    requests: Sequence[GuestRequest],
    out: Path,
    jobs: int,
    scenarios: Path,
    pytest_args: Sequence[str],
    progress: Progress,
) -> list[GuestResult]:
    """Every guest's pytest process, ``jobs`` at a time, progress printed as it comes.

    Interrupted (Ctrl-C, or SIGTERM from a CI system), it stops every guest it
    started before it gives up: nothing is left running.
    """
    waiting = list(requests)
    running: list[_Running] = []
    done: list[GuestResult] = []
    term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                running.append(_start(waiting.pop(0), out, scenarios, pytest_args))
            time.sleep(0.5)
            for r in list(running):
                for e in r.events.new():
                    progress.event(e)
                if r.proc.poll() is not None:
                    for e in r.events.new():
                        progress.event(e)
                    running.remove(r)
                    result = _finish(r)
                    done.append(result)
                    if result.error:
                        progress.line(f"{r.req.id}: {result.error.splitlines()[0]}")
    except BaseException:
        _stop(running)
        raise
    finally:
        signal.signal(signal.SIGTERM, term)
    return sorted(done, key=lambda g: g.request.id)


def run_matrix(
    kernels: Sequence[str],
    nic_sets: Sequence[str],
    profiles: Sequence[str],
    accel: str,
    out: Path,
    jobs: int,
    shard: Shard | None = None,
    pytest_args: Sequence[str] = (),
    scenarios: Path | None = None,
    say: Print = print,
) -> RunResult:
    """Run the matrix (or one shard of it) and write its reports in ``out``."""
    progress = Progress(lambda text: say(text))
    build_modules(sorted(set(kernels)), progress.line)
    requests = plan(kernels, nic_sets, profiles, accel, shard, sanitizer_kernels(kernels))
    progress.line(
        f"{len(requests)} guests" + (f" (shard {shard})" if shard else "") + f", {jobs} at a time; "
        f"results in {out}"
    )
    start = time.monotonic()
    guests = run_guests(
        requests, out, jobs, scenarios or paths.sources().scenarios, pytest_args, progress
    )
    result = RunResult(guests, round(time.monotonic() - start, 1), str(shard) if shard else "")
    report.write(result, out)
    return result


def link_latest(out: Path) -> None:
    """``results/latest`` -> the last run, when it is under ./results."""
    latest = paths.results_root() / "latest"
    if out.parent == latest.parent:
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)


def default_jobs() -> int:
    return os.cpu_count() or 1
