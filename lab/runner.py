"""``ntalab run``: the scenario matrix, one pytest process per guest, as KUnit's runner drives
its own guests.

The matrix is kernels x NIC sets x boot profiles; each cell of it is a
guest, and each guest is one pytest process over the scenarios, given its
``GuestRequest`` in a file. Up to ``jobs`` guests run at once, the longest
first; ``--shard I/N`` runs the I-th shard of a plan (``lab.plan``) that
spreads the guests' scenarios over N machines of a CI job matrix, and
``ntalab report`` merges what they wrote. While it runs, every guest's
progress events are printed as lines with the elapsed time. ``--repeat N``
runs the same guests N times, each time booted afresh (``lab.repeat``
counts).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from lab import images, kbuild, paths, plan, repeat, report
from lab.events import Event, EventTail
from lab.records import (
    RESULTS,
    BootOutcome,
    EventKind,
    GuestRequest,
    GuestResult,
    LeftOut,
    Outcome,
    RunResult,
)

Print = Callable[[str], None]

# What a boot retried (BootOutcome.retried) went through, for the progress line.
RETRIED_WHY = {BootOutcome.STALL: "boot stalled", BootOutcome.SPLAT: "kernel bug during boot"}


def sanitizer_kernels(kernels: Sequence[str]) -> set[str]:
    """Those of ``kernels`` that are sanitizer (KASAN) kernels, known without fetching one."""
    manifest = images.load_manifest()
    return {name for name in kernels if images.has_kasan(name, manifest)}


def build_modules(kernels: Sequence[str], say: Print, kmod: Path | None = None) -> None:
    """NTA for every kernel, before any guest boots; from ``kmod`` if given (a bisect
    step's sources), else from this checkout's.

    The scenarios would build it anyway, but then next to running guests:
    under TCG a compiler on the host starves their vCPUs, and a NIC without
    flow control misses frames. A failed build is reported here and by the
    scenarios.
    """
    for name in kernels:
        result = kbuild.build(images.kernel_for(name, progress=say), src=kmod)
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
        retried = ""
        if e.kind is EventKind.BOOTED and e.outcome:
            why = RETRIED_WHY.get(BootOutcome(e.outcome), e.outcome)
            retried = f" after an infrastructure retry ({why})"
        done = f" {Outcome(e.outcome).mark}" if e.kind is EventKind.DONE else ""
        text = {
            EventKind.PREPARE: f"{e.guest}: {e.detail}",
            EventKind.BOOT: f"{e.guest}: booting ({e.detail})",
            EventKind.BOOTED: f"{e.guest}: up in {e.detail}{retried}",
            EventKind.TEST: f"{e.guest}: {e.test}",
            EventKind.NIC: f"{e.guest}: {e.test} on {e.nic}",
            EventKind.RETRY: f"{e.guest}: {e.test}: set-up failed, retried once (infrastructure): "
            f"{e.detail}",
            EventKind.RESTORED: f"{e.guest}: {e.test}: {e.detail}",
            EventKind.DONE: f"{e.guest}: {e.test}{done}" + (f" ({e.detail})" if e.detail else ""),
            EventKind.GUEST_DONE: f"{e.guest}: finished",
        }[e.kind]
        self.line(text)


@dataclass
class _Running:
    req: GuestRequest
    dir: Path
    proc: subprocess.Popen[bytes]
    events: EventTail
    start: float


def _start(req: GuestRequest, out: Path, scenarios: Path, pytest_args: Sequence[str]) -> _Running:
    gdir = out / req.dirname
    gdir.mkdir(parents=True, exist_ok=True)
    (gdir / "events.jsonl").unlink(missing_ok=True)
    req.save(gdir / "request.json")
    argv = plan.pytest_argv(gdir / "request.json", scenarios, pytest_args)
    (gdir / "pytest-argv.txt").write_text(" ".join(argv) + "\n")
    with (gdir / "pytest.log").open("wb") as log:
        # A session of its own, killed whole when the run is stopped (_stop); its QEMU
        # is in the console pty's session, found by kill_qemu_of.
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=paths.IMPORT_ROOT,
            start_new_session=True,
        )  # fmt: skip
    return _Running(req, gdir, proc, EventTail(gdir / "events.jsonl"), time.monotonic())


NOTHING_SELECTED = 5  # pytest's exit status when no test was collected


def _finish(r: _Running) -> GuestResult:
    rc = r.proc.wait()
    path = r.dir / RESULTS
    log = (r.dir / "pytest.log").read_text(errors="replace")[-3000:]
    if not path.is_file():
        seconds = time.monotonic() - r.start
        return GuestResult(r.req, [], None, f"pytest exited {rc} with no results:\n{log}", seconds)
    result = GuestResult.load(path)
    # 1: tests failed, recorded as such; 5: the selection (-k, the boot profile) left
    # this guest nothing to run, which is no error (a run where no guest ran anything is
    # no pass either: RunResult.verdict).
    if rc not in (0, 1, NOTHING_SELECTED) and not result.error:
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
            os.killpg(r.proc.pid, signal.SIGKILL)
        r.proc.wait()
        kill_qemu_of(r.dir)


def kill_qemu_of(gdir: Path) -> list[int]:
    """SIGKILL every QEMU still running for the guest whose results are in ``gdir``; their pids.

    pexpect starts vng (which forks QEMU) in a session of its own, the console's
    pty, so killing pytest's process group does not reach QEMU: a guest wedged
    past STOP_WAIT_S outlived ``ntalab run``. Its command line names ``gdir``
    (the guest's writable results directory), which finds it.
    """
    killed = []
    mark = str(gdir.resolve()).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if b"qemu" in Path(argv[0].decode(errors="replace")).name.encode() and any(
            mark in a for a in argv
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed


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
    return sorted(done, key=lambda g: (g.request.id, g.request.part))


def plan_shards(
    whole: Sequence[GuestRequest],
    count: int,
    scenarios: Path,
    pytest_args: Sequence[str],
    timings: plan.Timings,
    jobs: int,
) -> plan.Plan:
    """The guests' scenarios over ``count`` shards: each guest's tests collected on the host
    (``jobs`` pytest processes at a time, nothing booted), then balanced."""
    with (
        tempfile.TemporaryDirectory(prefix="ntalab-plan-") as work,
        ThreadPoolExecutor(max(1, jobs)) as pool,
    ):
        found = pool.map(lambda r: plan.collect(r, scenarios, pytest_args, Path(work)), whole)
        collected = dict(zip((r.id for r in whole), found, strict=True))
    return plan.balance(whole, collected, count, timings)


def _prepare(
    requests: Sequence[GuestRequest],
    out: Path,
    jobs: int,
    shard: str,
    left_out: Sequence[LeftOut],
    progress: Progress,
) -> None:
    """What a run says first (the kernels it leaves out), then every module built."""
    for x in left_out:
        progress.line(f"left out: {x.kernel} ({x.reason})")
    for kmod in sorted({r.kmod for r in requests}):
        kernels = sorted({r.kernel for r in requests if r.kmod == kmod})
        build_modules(kernels, progress.line, Path(kmod) if kmod else None)
    progress.line(
        f"{len(requests)} guests" + (f" (shard {shard})" if shard else "") + f", {jobs} at a time; "
        f"results in {out}"
    )


def run_matrix(
    requests: Sequence[GuestRequest],
    out: Path,
    jobs: int,
    pytest_args: Sequence[str] = (),
    scenarios: Path | None = None,
    say: Print = print,
    shard: str = "",
    plan_digest: str = "",
    left_out: Sequence[LeftOut] = (),
) -> RunResult:
    """Run these guests (the matrix, or one shard of a plan) and write the reports in ``out``."""
    progress = Progress(lambda text: say(text))
    _prepare(requests, out, jobs, shard, left_out, progress)
    return _run_once(
        requests, out, jobs, scenarios, pytest_args, progress, shard, plan_digest, left_out
    )


def _run_once(
    requests: Sequence[GuestRequest],
    out: Path,
    jobs: int,
    scenarios: Path | None,
    pytest_args: Sequence[str],
    progress: Progress,
    shard: str,
    plan_digest: str,
    left_out: Sequence[LeftOut],
) -> RunResult:
    """The guests run once (their modules built), the reports written in ``out``."""
    start = time.monotonic()
    guests = run_guests(
        requests, out, jobs, scenarios or paths.sources().scenarios, pytest_args, progress
    )
    result = RunResult(
        guests,
        round(time.monotonic() - start, 1),
        shards=[shard] if shard else [],
        plan=plan_digest,
        left_out=list(left_out),
    )
    report.write(result, out)
    return result


def _attempt(result: RunResult, out: Path) -> repeat.Attempt:
    """A run as one repetition: it reproduced if a test failed (a finding), or caused a
    kernel report; a guest or test the lab could not run, or a run that ran no test, is the
    lab's error (the run tells nothing)."""
    splats = [t for g in result.guests for c in g.cases for t in c.splats]
    failed = [
        f"{g.request.id}: {c.name} {c.outcome.mark}"
        for g in result.guests
        for c in g.cases
        if c.outcome is Outcome.FAIL and not c.splats
    ]
    errors = [f"{g.request.id}: {g.error.splitlines()[0]}" for g in result.guests if g.error]
    errors += [
        f"{g.request.id}: {c.name} {c.outcome.mark}: {c.message}"
        for g in result.guests
        for c in g.cases
        if c.outcome is Outcome.ERROR
    ]
    if not result.ran and not errors:
        errors.append("no test ran (the selection matched none)")
    reproduced = bool(splats or failed)
    return repeat.Attempt(reproduced, splats, failed, str(out), result.elapsed_s, errors)


def run_repeated(
    requests: Sequence[GuestRequest],
    out: Path,
    jobs: int,
    times: int,
    until_fail: bool,
    pytest_args: Sequence[str] = (),
    scenarios: Path | None = None,
    say: Print = print,
    shard: str = "",
    plan_digest: str = "",
    left_out: Sequence[LeftOut] = (),
) -> repeat.Repeated:
    """These guests (a scenario, with -k) ``times`` times, each time booted afresh, each
    run's results in ``out/<n>`` (its own matrix, summary.json, bundles), the record in
    ``out/repeat.json``: how often it failed. Modules are built once, before the first."""
    repeat.check_times(times)
    progress = Progress(lambda text: say(text))
    _prepare(requests, out, jobs, shard, left_out, progress)

    def once(n: int) -> repeat.Attempt:
        run_out = out / str(n)
        run_out.mkdir(parents=True, exist_ok=True)
        progress.line(f"run {n} of {times}: results in {run_out}")
        result = _run_once(
            requests, run_out, jobs, scenarios, pytest_args, progress, shard, plan_digest,
            left_out,
        )  # fmt: skip
        return _attempt(result, run_out)

    return repeat.repeat(once, times, until_fail, out / repeat.RECORD, progress.line)


def link_latest(out: Path) -> None:
    """``results/latest`` -> the last run (created), when it is under ./results."""
    out.mkdir(parents=True, exist_ok=True)
    latest = paths.results_root() / "latest"
    if out.parent == latest.parent:
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)
