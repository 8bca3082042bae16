"""The environment a lab test runs against: one booted guest, its NICs, NTA, its results dir.

As the kernel net selftest library's environment object, it is the one door
tests use: ``env.net`` (the guest's NICs), ``env.nta`` (the module), and the
steps below. Every test gets a fresh cleanup stack (``defer``): background
programs (``bkg``), module parameters (``set_param``) and links taken down
(``links_down``) are put back when the test ends, whether it passed or not,
so a failed test never leaves a reader attached or a limit lowered for the
next one. Each test also gets a journal (``lab.journal``): every frame sent
to the guest, every module load, unload and parameter change, every link
change, command and program started, in order, recorded where each happens;
a failed test's reproducer bundle (``lab.repro``) is that journal.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab import LabError, kbuild, paths, traffic
from lab.checks import nic_took, quiet
from lab.console import CmdResult
from lab.events import EventLog
from lab.guest import Guest
from lab.guestnet import GuestNet, GuestNic
from lab.guestside.reports import CaptureReport
from lab.images import Kernel
from lab.journal import Journal
from lab.kernlog import Splat
from lab.nta import NtaModule
from lab.records import EventKind, RxCounts
from lab.spawn import GuestProc, Spawner
from lab.steps import Command, Links, Load, Spawn, Step
from lab.wait import wait_until
from pysniff.abi import Stats
from pysniff.report import SniffReport

# Seconds without a frame after which a reader waiting for more gives up, and
# how long it waits for the first (the link bounce after attaching comes first).
# Neither is paid when all goes well: a reader given a count stops at its last
# frame, and waits IDLE_S only for frames that never come (a NIC without flow
# control missed them, or the pool had no chunk). A reader without a count
# (capture_both in tests/lab/test_capture.py, beside tcpdump) does pay it, once:
# tcpdump hands frames over in TPACKET_V3 blocks retired after 1 s (libpcap's
# default timeout), so that is the time its last block needs to reach its
# file before it is stopped.
IDLE_S = 3
FIRST_FRAME_S = 60


def guest_python() -> list[str]:
    """The command that runs one of the lab's Python modules in the guest (``+ [module]``).

    The guest sees the host's filesystem, so the host's interpreter and the
    lab's packages work there unchanged. One simple command (``env``, no
    ``cd &&``), so that run in the background its pid is the program's. The
    programs run this way (the spawner, and what it forks: pysniff and
    lab.guestside.*) use the standard library only, so they skip
    site-packages (-S) and find the lab's packages by PYTHONPATH.
    """
    return ["env", f"PYTHONPATH={paths.IMPORT_ROOT}", sys.executable, "-S", "-m"]


def _way(args: tuple[object, ...]) -> list[object]:
    """A reader's arguments, -Q in first unless they choose: the lab's checks count the
    frames it injects, and the readers (as tcpdump) default to both directions."""
    return [*args] if "-Q" in args else ["-Q", "in", *args]


class LabEnv:
    def __init__(
        self,
        guest: Guest,
        nics: list[GuestNic],
        net: GuestNet,
        kernel: Kernel,
        nic_set: str,
        outdir: Path,
        events: EventLog | None = None,
    ) -> None:
        self.guest = guest
        self.nics = nics
        self.net = net
        self.nta = NtaModule(guest.sh, net)
        self.kernel = kernel
        self.nic_set = nic_set
        self.outdir = outdir
        self.events = events
        self.journal: Journal | None = None  # the current test's
        self._rng = random.Random()
        self._spawner: Spawner | None = None
        self._stack: contextlib.ExitStack | None = None
        self._splats: list[Splat] = []  # seen by expect_splat, not of the kind expected
        self.test = ""

    @classmethod
    def up(
        cls, guest: Guest, kernel: Kernel, nic_set: str, events: EventLog | None = None
    ) -> LabEnv:
        """The environment of a booted guest, its NICs set up."""
        net = GuestNet(guest.sh, guest.features)
        nics = net.setup(guest.nics, guest.host_ends, promisc=True)
        return cls(guest, nics, net, kernel, nic_set, guest.outdir, events)

    def close(self) -> None:
        """Ends the guest programs the lab started (a guest that powers off ends them too;
        a fake guest on the host would not)."""
        if self._spawner is not None:
            self._spawner.stop()
            self._spawner = None

    # -- a test's life --------------------------------------------------------------

    @contextlib.contextmanager
    def test_scope(self, name: str) -> Iterator[Journal]:
        """Runs every cleanup deferred during the test when it ends, pass or fail; the
        test's journal (its cleanups in it too), closed once they ran."""
        self.test = name
        safe = name.replace("/", "_").replace("[", "-").rstrip("]")
        journal = Journal(name, self.outdir, self.outdir / "journal" / safe, self._state())
        self._attach(journal)
        try:
            with contextlib.ExitStack() as stack:
                self._stack = stack
                try:
                    yield journal
                finally:
                    self._stack = None
        finally:
            self._attach(None)
            journal.close()

    def _state(self) -> list[Step]:
        """What a test begins with, as steps: the module the session loaded (then the links
        bounced, as every load here does)."""
        if self.nta.loaded is None:
            return []
        names = tuple(n.name for n in self.nics)
        loaded = self.nta.loaded
        bounce = [Links(names, up=False), Links(names, up=True)] if names else []
        return [Load(str(loaded.module), loaded.params), *bounce]

    def _attach(self, journal: Journal | None) -> None:
        """The choke points record into ``journal`` (None: into nothing)."""
        self.journal = journal
        self.nta.journal = journal
        self.net.journal = journal
        for nic in self.nics:
            nic.host.journal = journal

    def _record(self, step: Step) -> None:
        if self.journal is not None:
            self.journal.add(step)

    def expect_splat(self, kind: str, timeout: float = 30.0) -> list[Splat]:
        """Wait for a kernel report of ``kind`` (a planted bug's); the reports of that kind.

        Reports of other kinds seen meanwhile stay unexpected: the test still
        fails on them (``unexpected_splats``).
        """
        got: list[Splat] = []

        def seen() -> list[Splat]:
            for s in self.guest.new_splats():
                (got if s.kind == kind else self._splats).append(s)
            return got

        return wait_until(seen, timeout, f"a {kind} report in the guest's kernel log", 1.0)

    def unexpected_splats(self) -> list[Splat]:
        """Every kernel report since the last look that no test expected."""
        found = self._splats + self.guest.new_splats()
        self._splats = []
        return found

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` when the current test ends (last deferred, first run)."""
        if self._stack is None:
            raise LabError("defer() outside a test")
        self._stack.callback(fn, *args)

    def progress(self, kind: EventKind, **fields: str) -> None:
        if self.events is not None:
            self.events(kind, test=self.test, **fields)

    # -- NICs ---------------------------------------------------------------------

    def use(self, nic: GuestNic) -> GuestNic:
        """``nic`` with its variant's driver settings in force (see GuestNet.use)."""
        self.progress(EventKind.NIC, nic=nic.name)
        return self.net.use(nic)

    def each_nic(self) -> Iterator[GuestNic]:
        for nic in self.nics:
            yield self.use(nic)

    def rx(self, nic: GuestNic) -> RxCounts:
        return self.net.rx_counts(nic)

    def nic_took(
        self, nic: GuestNic, before: RxCounts, sent: int, timeout: float = 30.0
    ) -> RxCounts:
        """What the NIC did with the ``sent`` frames injected since ``before``, once it is done."""

        def settled() -> bool:
            d = self.rx(nic) - before
            return d.packets + d.missed >= sent

        # Judged below either way: a shortfall is named with the counters.
        with contextlib.suppress(LabError):
            wait_until(settled, timeout, f"{nic.name} to take {sent} frames", interval=0.2)
        rx = self.rx(nic) - before
        nic_took(nic.name, sent, rx, nic.flow_control)
        return rx

    def links_down(self, nics: list[GuestNic]) -> None:
        """Links down until the test ends (or ``net.links_up``)."""
        self.net.links_down(nics)
        self.defer(self.net.links_up, nics)

    # -- the module -----------------------------------------------------------------

    def set_param(self, name: str, value: int) -> None:
        """One of NTA's writable parameters, for the rest of the test."""
        old = self.nta.set_param(name, value)
        self.defer(self._restore_param, name, old)

    def quiesced(self, leaked: int | None = None, timeout: float = 30.0) -> Stats:
        """No chunk leaked: with the links down, only ``leaked`` chunks are still in use
        (default: those NTA's fault injection leaked on purpose, which stay in use for good).

        While the links are up the drivers' rings and the stack hold NTA buffers,
        a number that differs by one from one quiet moment to the next (seen
        here: 574, 575, 574). Taking the links down frees them all, so in_use
        has one exact expected value.
        """
        if leaked is None:
            leaked = self.nta.stats().fault_leaked
        self.net.links_down(self.nics)
        try:
            stats = self.nta.wait(f"in_use {leaked}", lambda s: s.in_use == leaked, timeout)
        except LabError:  # judged below, with the figures
            stats = self.nta.stats()
        finally:
            self.net.links_up(self.nics)
        quiet(stats, leaked)
        return stats

    def _restore_param(self, name: str, value: int) -> None:
        if self.nta.loaded is not None:
            self.nta.set_param(name, value)

    # -- programs in the guest -----------------------------------------------------------

    def cmd(self, command: str, timeout: float = 60.0, check: bool = True) -> CmdResult:
        """A shell command in the guest (a step of the test's journal)."""
        self._record(Command(command))
        return self.guest.sh.run(command, timeout=timeout, check=check)

    def bg(self, command: str, log: Path) -> int:
        """A shell command in the background, its output to ``log``, killed when the test
        ends if still running; its pid (for ``kill -0``: the test's own kills go by the
        stop it deferred, since a replay's pids differ)."""
        self._record(Command(command, background=True, log=str(log)))
        pid = self.guest.sh.bg(command, str(log))
        self.defer(self.guest.sh.run, f"kill -TERM {pid} 2>/dev/null", 10.0, False)
        return pid

    def spawn(self, name: str, module: str, *args: object, out: Path | None = None) -> GuestProc:
        """One of the lab's stdlib-only programs (pysniff, lab.guestside.*) in the guest.

        Forked from a warm interpreter (lab.guestside.spawner): it runs within
        milliseconds, where a fresh Python takes seconds under TCG. Its stdout
        goes to ``out`` (default ``<outdir>/<name>.out``), its stderr to
        ``<outdir>/<name>.log``. Prefer ``bkg``, which stops it with the test.
        """
        return self._spawn(Spawn(name, module, tuple(map(str, args))), out)

    def _spawn(self, step: Spawn, out: Path | None) -> GuestProc:
        """The program ``step`` names, started (a step of the test's journal)."""
        if self._spawner is None:
            self._spawner = Spawner(self.guest.sh, guest_python(), self.outdir / "spawner")
        self._record(step)
        return self._spawner.spawn(
            step.name, step.module, *step.args,
            out=out or self.outdir / f"{step.name}.out", log=self.outdir / f"{step.name}.log",
        )  # fmt: skip

    def bkg(
        self,
        name: str,
        module: str,
        *args: object,
        ready: Path | None = None,
        out: Path | None = None,
    ) -> GuestProc:
        """A program in the background, stopped when the test ends if still running.

        With ``ready``, the program is given that path and this returns once it exists.
        """
        step = Spawn(name, module, tuple(map(str, args)), str(ready) if ready else None)
        proc = self._spawn(step, out)
        self.defer(proc.stop)
        if ready is not None:
            proc.wait_file(ready)
        return proc

    def pysniff(self, nic: GuestNic, tag: str, *args: object, refill: bool = True) -> GuestProc:
        """pysniff on ``nic`` in the background, attached and mapped when this returns.

        Each reader has a pool of its own, and a device it attaches has its
        receive ring full of buffers it got before: with ``refill`` the link
        is bounced once the reader is attached, so that every frame after
        this lands in the reader's pool. Its --json report is
        ``proc.result(SniffReport.from_json)``. It captures what the NIC receives
        (-Q in, what the lab injects) unless ``args`` say otherwise.
        """
        ready = self.outdir / f"ready-{tag}"
        argv: list[object] = ["-i", nic.iface, "--json", "--ready-file", ready, *_way(args)]
        proc = self.bkg(tag, "pysniff", *argv, ready=ready, out=self.outdir / f"{tag}.json")
        if refill:
            self.net.bounce([nic])
        return proc

    @property
    def ntadump_program(self) -> str:
        """ntadump, built on the host (the guest runs the host's userspace)."""
        return str(kbuild.build_ntadump().program)

    def ntadump(self, nics: list[GuestNic], tag: str, *args: object) -> GuestProc:
        """ntadump on ``nics`` in the background, attached when this returns (its summary
        is on stderr, ``proc.log``); -Q in unless ``args`` say otherwise."""
        ifaces = [a for n in nics for a in ("-i", n.iface)]
        argv = [*ifaces, *_way(args)]
        proc = self.bkg(tag, "lab.guestside.execute", self.ntadump_program, *argv)
        proc.wait_line("ntadump: listening on")
        return proc

    def sniff_while(
        self,
        nic: GuestNic,
        run_id: int,
        batch: list[bytes],
        *args: object,
        rate: float | None = None,
    ) -> SniffReport:
        """Inject ``batch`` while pysniff reads and verifies it from NTA; its report.

        pysniff stops after the whole batch, or once frames stop coming
        (--idle): a frame that never comes fails the caller's checks in
        seconds, not at a timeout.
        """
        tag = f"nta-{nic.name}-{run_id}"
        sn = self.pysniff(
            nic, tag, "--run-id", run_id, "--expect", len(batch), "--verify",
            "-c", len(batch), "--idle", IDLE_S, "--first-frame-timeout", FIRST_FRAME_S, *args,
        )  # fmt: skip
        traffic.inject(nic.host, batch, rate or nic.rate)
        return sn.result(SniffReport.from_json)

    def capture_while(
        self, nic: GuestNic, run_id: int, batch: list[bytes], rate: float | None = None
    ) -> CaptureReport:
        """Inject ``batch`` while the guest's AF_PACKET capture checks every frame.

        Without a ``rate``, at the NIC's lossless rate.
        """
        tag = f"{nic.name}-{run_id}"
        out, ready = self.outdir / f"capture-{tag}.json", self.outdir / f"ready-{tag}"
        proc = self.bkg(
            f"capture-{tag}", "lab.guestside.capture", nic.iface, run_id, len(batch), out, ready,
            120, ready=ready,
        )  # fmt: skip
        traffic.inject(nic.host, batch, rate or nic.rate)
        return proc.result(CaptureReport.from_json, 180, out)

    # -- traffic --------------------------------------------------------------------

    def new_run_id(self) -> int:
        return self._rng.randrange(1, 1 << 32)

    @staticmethod
    def addrs(nic: GuestNic) -> traffic.Addresses:
        return traffic.Addresses(nic.mac, nic.guest_ip, nic.host_ip)

    def inject(
        self, nic: GuestNic, batch: list[bytes], rate: float | None = None
    ) -> traffic.InjectResult:
        """Sent at ``rate`` (default: the NIC's lossless rate); the journal keeps them."""
        return traffic.inject(nic.host, batch, rate or nic.rate)
