"""The scenario door: everything a lab test does to its guest, each change undone at its end.

As the kernel net selftests' environment object, a ``LabEnv`` is the one
door a scenario has to its guest: the ``lab_env`` and ``nta_env`` fixtures
hand one to each test, over the guest's ``lab.testbed.Testbed``. Every call
that changes the guest registers its own undo, run when the test ends, pass
or fail, last change first; a value changed twice is put back once, to what
the test found:

- the module: ``env.module`` (``set_param``, ``unload``, ``rmmod``, ``load``,
  ``try_load``, ``reload_with``, ``churn_params``); at the end NTA is loaded
  (or not) as the test found it, every parameter at its value;
- links and driver settings: ``links_down``, ``bounce``, ``set_gro``,
  ``set_rps_cpus``, ``with_driver_settings`` (a variant's driver parameters,
  set before the NIC is used), ``sysctl``, ``write`` (any sysfs value);
- objects in the guest's network: ``add_link`` (veths, bridges, tunnels),
  ``add_netns``, ``enslave``; other kernel modules: ``insmod``;
- programs: ``bkg`` (a typed request, ``lab.guestside.protocol``),
  ``pysniff``, ``ntadump``, ``tcpdump``, stopped at the end if still running;
- traffic: ``send``, ``converse``, ``sending``;
- any other guest command with an effect: ``act(command, undo=...)``.

Reading is free: ``cmd`` runs a command that changes nothing (it refuses
one that visibly does: ``lab.effects``), ``rx``, ``settled_rx``,
``module.stats`` and the like. The testbed behind the door is not a
scenario's to use (``tests/test_scenario_door.py`` holds the scenarios to
this, and the state check before each test catches what slips through).

Each test has a journal (``lab.journal``), opened as its door is: every
command and program the door runs, and below it every frame sent
(``nics.HostEnd``), module load, unload and parameter (``lab.nta``) and link
change (``lab.guestnet``), recorded in order where each happens. A failed
test's reproducer bundle (``lab.repro``) is that journal.
"""

from __future__ import annotations

import contextlib
import functools
import random
import shlex
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

from lab import LabError, kbuild, repro, traffic
from lab.checks import nic_took, quiet
from lab.console import CmdResult
from lab.effects import effect
from lab.guestnet import GuestNic
from lab.guestside.protocol import FIRST_FRAME_S, IDLE_S, Capture, Execute, Request
from lab.guestside.reports import CaptureReport
from lab.images import Kernel
from lab.journal import Journal
from lab.kconfig import Features
from lab.kernlog import Splat
from lab.nta import PARAMS, Loaded
from lab.records import EventKind, RxCounts
from lab.spawn import GuestProc
from lab.steps import Command, Spawn
from lab.testbed import Testbed
from lab.wait import wait_until
from pysniff.abi import DevStats, Stats
from pysniff.report import SniffReport


class Pace(Enum):
    """How fast frames are sent, when not at a given rate in frames/s."""

    LOSSLESS = "lossless"  # the NIC's lossless rate: paced where it has no flow control
    FLAT_OUT = "flat out"  # as fast as the host sends: a NIC without flow control misses


def _way(args: tuple[object, ...]) -> list[object]:
    """A reader's arguments, -Q in first unless they choose: the lab's checks count the
    frames it injects, and the readers (as tcpdump) default to both directions."""
    return [*args] if "-Q" in args else ["-Q", "in", *args]


class LabEnv:
    """One test's door to its guest (see the module's docstring); a context manager whose
    end runs the test's undos."""

    def __init__(self, bed: Testbed, test: str) -> None:
        self._bed = bed
        self.test = test
        self.module = ModuleHandle(self, bed)
        self.journal: Journal | None = None  # open from __enter__ on
        self._stack = contextlib.ExitStack()
        self._saved: set[str] = set()  # what the test changed, its undo registered once
        self._splats: list[Splat] = []  # seen by expect_splat, not of the kind expected
        self._rng = random.Random()

    def __enter__(self) -> LabEnv:
        self.journal = self._bed.open_journal(self.test)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._stack.close()  # the undos are steps of the journal too
        finally:
            self._bed.close_journal()

    # -- what the test runs on (read-only) ----------------------------------------------

    @property
    def nics(self) -> tuple[GuestNic, ...]:
        return self._bed.nics

    def needs_nics(self, *names: str, driver: str | None = None, count: int = 0) -> list[GuestNic]:
        """The NICs a guest-wide scenario works on: those ``names`` (in that order), else the
        first ``count`` of ``driver`` (any driver: None). A guest booted without them (``ntalab
        run --nics e1000``) is a LabError that says what the scenario needs, not a lookup
        failing inside the test."""
        have = [n for n in self.nics if driver is None or n.variant.driver == driver]
        found = [n for name in names for n in have if n.name == name] if names else have[:count]
        if len(found) < (len(names) or count):
            wanted = ", ".join(names) if names else f"{count} {driver or 'NICs'}"
            raise LabError(
                f"this scenario needs {wanted}; the guest has "
                f"{', '.join(n.name for n in self.nics) or 'no NIC'}: run it with --nics all"
            )
        return found

    @property
    def kernel(self) -> Kernel:
        return self._bed.kernel

    @property
    def features(self) -> Features:
        return self._bed.guest.features

    @property
    def outdir(self) -> Path:
        return self._bed.outdir

    @property
    def ntadump_program(self) -> str:
        """ntadump, built on the host (the guest runs the host's userspace)."""
        return str(kbuild.build_ntadump().program)

    # -- the test's life ---------------------------------------------------------------

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` when the test ends (last deferred, first run)."""
        self._stack.callback(fn, *args)

    def _once(self, key: str, undo: Callable[[], Any]) -> None:
        """``undo`` deferred, unless ``key`` was changed before in this test: the first
        change's undo puts back what the test found."""
        if key not in self._saved:
            self._saved.add(key)
            self.defer(undo)

    def expect_splat(self, kind: str, timeout: float = 30.0) -> list[Splat]:
        """Wait for a kernel report of ``kind`` (a planted bug's); the reports of that kind.

        Reports of other kinds seen meanwhile stay unexpected: the test still
        fails on them (``unexpected_splats``).
        """
        got: list[Splat] = []

        def seen() -> list[Splat]:
            for s in self._bed.new_splats():
                (got if s.kind == kind else self._splats).append(s)
            return got

        return wait_until(seen, timeout, f"a {kind} report in the guest's kernel log", 1.0)

    def unexpected_splats(self) -> list[Splat]:
        """Every kernel report since the last look that no test expected."""
        found = self._splats + self._bed.new_splats()
        self._splats = []
        return found

    def keep_reproducer(self, name: str, reason: str, splats: Sequence[Splat] = ()) -> Path:
        """A reproducer bundle of the journal so far (``ntalab repro``); its directory. The
        plugin's for a test that failed; a test's own for a failure it expected and so does
        not fail on (a planted bug's report)."""
        assert self.journal is not None
        root = self.outdir.parent / "repro"
        return repro.write(self._bed, name, self.journal, reason, root, splats)

    # -- guest commands --------------------------------------------------------------------

    def cmd(self, command: str, timeout: float = 60.0, check: bool = True) -> CmdResult:
        """A guest command that changes nothing (a LabError for one that visibly does)."""
        why = effect(command)
        if why is not None:
            raise LabError(
                f"env.cmd is for commands that change nothing, and {why}: {command!r}. Use "
                "env.act(command, undo=...) or the door's call for it (links_down, set_gro, "
                "sysctl, write, add_link, module.set_param...)"
            )
        self._record(Command(command))
        return self._bed.cmd(command, timeout, check)

    def _record(self, step: Command | Spawn) -> None:
        self._bed.record(step)

    def act(
        self, command: str, *, undo: str | None, timeout: float = 60.0, check: bool = True
    ) -> CmdResult:
        """A guest command with an effect, and the command that undoes it when the test
        ends (``undo=None``: nothing to undo, it says so)."""
        result = self._change(command, timeout, check)
        if undo is not None:
            self.defer(self._change, undo, 60.0, False)
        return result

    def _change(self, command: str, timeout: float, check: bool) -> CmdResult:
        """Every shell command that changes state goes through here."""
        self._record(Command(command))
        return self._bed.cmd(command, timeout, check)

    def _net(self, change: Callable[..., object], *args: Any) -> None:
        """Every change of the guest's links and driver settings goes through here (the
        testbed's GuestNet, which records it)."""
        change(*args)

    def write(self, path: str, value: object) -> None:
        """A sysfs or procfs value for the rest of the test."""
        old = self._bed.cmd(f"cat {path}").stdout.strip()
        self._change(f"echo {value} > {path}", 60.0, True)
        self._once(f"write {path}", lambda: self._change(f"echo {old} > {path}", 60.0, True))

    def sysctl(self, name: str, value: object) -> None:
        """A sysctl for the rest of the test."""
        self.write("/proc/sys/" + name.replace(".", "/"), value)

    # -- NICs -------------------------------------------------------------------------------

    def with_driver_settings(self, nic: GuestNic) -> GuestNic:
        """``nic``, its variant's driver parameters in force (e1000's copybreak, read per
        frame and driver-wide: the NICs sharing the driver must be idle meanwhile).

        Set before every use, not undone: each use sets what it needs.
        """
        if self._bed.events is not None:
            self._bed.events(EventKind.NIC, test=self.test, nic=nic.name)
        self._net(self._bed.net.use, nic)
        return nic

    def each_nic(self) -> Iterator[GuestNic]:
        for nic in self.nics:
            yield self.with_driver_settings(nic)

    def rx(self, nic: GuestNic) -> RxCounts:
        return self._bed.rx(nic)

    def settled_rx(
        self, nic: GuestNic, before: RxCounts, sent: int, timeout: float = 30.0
    ) -> RxCounts:
        """What the NIC did with the ``sent`` frames sent since ``before``, once it is done
        (each received or missed), judged (``checks.nic_took``)."""

        def settled() -> bool:
            d = self.rx(nic) - before
            return d.packets + d.missed >= sent

        # Judged below either way: a shortfall is named with the counters.
        with contextlib.suppress(LabError):
            wait_until(settled, timeout, f"{nic.name} to take {sent} frames", interval=0.2)
        rx = self.rx(nic) - before
        nic_took(nic.name, sent, rx, nic.flow_control)
        return rx

    def links_down(self, nics: Sequence[GuestNic]) -> None:
        """Links down until the test ends (or ``links_up``)."""
        self._net(self._bed.net.links_down, nics)
        self.defer(self._net, self._bed.net.links_up, nics)

    def links_up(self, nics: Sequence[GuestNic]) -> None:
        """Up, with the host as neighbour and carrier: as the documented state has them."""
        self._net(self._bed.net.links_up, nics)

    def bounce(self, nics: Sequence[GuestNic]) -> None:
        """Links down and up: the drivers refill their receive rings from scratch."""
        self._net(self._bed.net.bounce, nics)

    def set_gro(self, nic: GuestNic, on: bool) -> None:
        """GRO on or off for the rest of the test (off in the documented state)."""
        self._net(self._bed.net.set_gro, nic, on)
        self._once(f"gro {nic.iface}", lambda: self._net(self._bed.net.set_gro, nic, False))

    def set_rps_cpus(self, nic: GuestNic, mask: str) -> None:
        """Receive packet steering over the CPUs of ``mask`` (hex), for the rest of the test."""
        old = self._bed.net.rps_cpus(nic)
        self._net(self._bed.net.set_rps_cpus, nic, mask)
        self._once(f"rps {nic.iface}", lambda: self._net(self._bed.net.set_rps_cpus, nic, old))

    def add_link(self, name: str, spec: str) -> str:
        """``ip link add NAME SPEC`` (a veth, a bridge, a tunnel), deleted when the test ends
        (a veth's peer with it); its name."""
        self.act(f"ip link add {name} {spec}", undo=f"ip link del {name}")
        return name

    def delete_link(self, name: str) -> None:
        """A link ``add_link`` made, deleted now (its undo then finds nothing to do)."""
        self._change(f"ip link del {name}", 60.0, True)

    def add_netns(self, name: str) -> str:
        """A network namespace, deleted when the test ends; its name."""
        self.act(f"ip netns add {name}", undo=f"ip netns del {name}")
        return name

    def enslave(self, nic: GuestNic, master: str) -> None:
        """``nic`` a port of ``master`` (a bridge ``add_link`` made) until the test ends,
        then free and up again with its neighbour."""
        self._change(f"ip link set {nic.iface} master {master}", 60.0, True)
        self.defer(self._net, self._bed.net.links_up, [nic])
        self.defer(self._change, f"ip link set {nic.iface} nomaster", 60.0, True)

    def insmod(self, module: Path, params: str = "") -> KernelModule:
        """Another kernel module (a test module, a minimal build), removed when the test
        ends if still loaded."""
        km = KernelModule(self, module.stem)
        self._change(f"insmod {shlex.quote(str(module))} {params}", 60.0, True)
        self.defer(km.remove)
        return km

    # -- programs in the guest ---------------------------------------------------------------

    def bkg(
        self, name: str, request: Request, ready: bool = False, out: Path | None = None
    ) -> GuestProc:
        """A guest program in the background, stopped when the test ends if still running.

        With ``ready``, this returns once the program said it is ready (the
        protocol of ``lab.guestside.protocol``).
        """
        return self._start(name, request.MODULE, request.to_argv(), ready, out)

    def _start(
        self, name: str, module: str, argv: Sequence[str], ready: bool, out: Path | None
    ) -> GuestProc:
        args = tuple(str(a) for a in argv)
        self._record(Spawn(name, module, args, ready))
        proc = self._bed.spawn(name, module, args, ready, out)
        self.defer(proc.stop)
        if ready:
            proc.wait_ready()
        return proc

    def pysniff(
        self,
        nic: GuestNic | str,
        tag: str,
        *flags: object,
        idle: float | None = None,
        refill: bool = True,
    ) -> GuestProc:
        """pysniff on ``nic`` (a lab NIC, or any interface by name) in the background
        (``flags``: its own), attached and mapped when this returns; its --json report is
        ``proc.result(SniffReport.from_json)``. It captures what the NIC receives (-Q in,
        what the lab sends) unless ``flags`` say otherwise.

        With ``idle``, it stops once no frame came for that long (it waits
        FIRST_FRAME_S for the first): a frame that never comes fails the
        caller's checks in seconds, not at a timeout. The first reader of a
        device makes its pool, and the device's receive ring is full of
        buffers it got before: with ``refill`` the link is bounced once the
        reader is attached, so that every frame after this lands in the
        pool. A reader joining others already capturing passes
        ``refill=False``: a bounce would cut into their captures.
        """
        iface = nic if isinstance(nic, str) else nic.iface
        argv: list[object] = ["-i", iface, "--json", *_way(flags)]
        if idle is not None:
            argv += ["--idle", idle, "--first-frame-timeout", FIRST_FRAME_S]
        proc = self._start(tag, "pysniff", list(map(str, argv)), True, self.outdir / f"{tag}.json")
        if refill and not isinstance(nic, str):
            self.bounce([nic])
        return proc

    def ntadump(self, nics: Sequence[GuestNic], tag: str, *flags: object) -> GuestProc:
        """ntadump on ``nics`` in the background, attached when this returns (its summary
        is on stderr, ``proc.log``); -Q in unless ``flags`` say otherwise."""
        ifaces = [a for n in nics for a in ("-i", n.iface)]
        cmd = (self.ntadump_program, *ifaces, *map(str, _way(flags)))
        return self.bkg(tag, Execute("ntadump: listening on", cmd), ready=True)

    def tcpdump(self, nic: GuestNic, tag: str, *flags: object) -> GuestProc:
        """tcpdump on ``nic`` in the background, capturing when this returns (its counts
        are on stderr once it is stopped)."""
        cmd = ("tcpdump", "-i", nic.iface, *map(str, flags))
        return self.bkg(tag, Execute("listening on", cmd), ready=True)

    def sniff_while(
        self,
        nic: GuestNic,
        run_id: int,
        batch: list[bytes],
        *flags: object,
        rate: float | Pace = Pace.LOSSLESS,
    ) -> SniffReport:
        """Send ``batch`` while pysniff reads and verifies it from NTA; its report.

        pysniff stops after the whole batch, or once frames stop coming: a
        frame that never comes fails the caller's checks in seconds.
        """
        tag = f"nta-{nic.name}-{run_id}"
        sn = self.pysniff(
            nic, tag, "--run-id", run_id, "--expect", len(batch), "--verify", "-c", len(batch),
            *flags, idle=IDLE_S,
        )  # fmt: skip
        self.send(nic, batch, rate)
        return sn.result(SniffReport.from_json)

    def capture_while(
        self, nic: GuestNic, run_id: int, batch: list[bytes], rate: float | Pace = Pace.LOSSLESS
    ) -> CaptureReport:
        """Send ``batch`` while the guest's AF_PACKET capture checks every frame."""
        tag = f"capture-{nic.name}-{run_id}"
        proc = self.bkg(tag, Capture(nic.iface, run_id, len(batch)), ready=True)
        self.send(nic, batch, rate)
        return proc.result(CaptureReport.from_json, 180)

    # -- traffic ---------------------------------------------------------------------------

    def new_run_id(self) -> int:
        return self._rng.randrange(1, 1 << 32)

    @staticmethod
    def addrs(nic: GuestNic) -> traffic.Addresses:
        return traffic.Addresses(nic.mac, nic.guest_ip, nic.host_ip)

    @staticmethod
    def _rate(nic: GuestNic, rate: float | Pace) -> float | None:
        if rate is Pace.LOSSLESS:
            return nic.rate
        return None if rate is Pace.FLAT_OUT else float(rate)

    def send(
        self, nic: GuestNic, frames: Sequence[bytes], rate: float | Pace = Pace.LOSSLESS
    ) -> traffic.InjectResult:
        """Frames into ``nic`` from the host."""
        return self._bed.send(nic, frames, self._rate(nic, rate))

    def converse(
        self,
        nic: GuestNic,
        frames: Sequence[bytes],
        count: int,
        want: Callable[[bytes], bool],
        rate: float | Pace = Pace.LOSSLESS,
        timeout: float = 30.0,
        quiet: float | None = None,
    ) -> list[bytes]:
        """Send ``frames`` and collect up to ``count`` frames the guest sends back that
        ``want`` (see ``traffic.converse``)."""
        return self._bed.converse(nic, frames, count, want, self._rate(nic, rate), timeout, quiet)

    def sending(
        self, nic: GuestNic, frames: Sequence[bytes], rate: float | Pace = Pace.LOSSLESS
    ) -> contextlib.AbstractContextManager[traffic.Sustained]:
        """``frames`` sent over and over from a thread until the block ends (traffic under
        which the test does something else); how many went so far."""
        return self._bed.sustained(nic, frames, self._rate(nic, rate))

    # -- the module, settled ---------------------------------------------------------------

    def quiesced(self, leaked: int | None = None, timeout: float = 30.0) -> Stats:
        """No chunk leaked: with the links down, only ``leaked`` chunks are still in use
        (default: those NTA's fault injection leaked on purpose, which stay in use for good).

        While the links are up the drivers' rings and the stack hold NTA buffers,
        a number that differs by one from one quiet moment to the next (seen
        here: 574, 575, 574). Taking the links down frees them all, so in_use
        has one exact expected value.
        """
        nta, net = self._bed.nta, self._bed.net
        if leaked is None:
            leaked = nta.stats().fault_leaked
        self._net(net.links_down, self.nics)
        try:
            stats = nta.wait(f"in_use {leaked}", lambda s: s.in_use == leaked, timeout)
        except LabError:  # judged below, with the figures
            stats = nta.stats()
        finally:
            self._net(net.links_up, self.nics)
        quiet(stats, leaked)
        return stats


class ModuleHandle:
    """NTA in the guest, for one test: its counters, and changes that undo themselves.

    The first change a test makes to the module's state registers its undo:
    at the end NTA is loaded (or not) as the test found it, with the same
    build and parameters; unloading in a test schedules the reload. Each
    parameter a test sets is put back to its value before the test.
    """

    def __init__(self, env: LabEnv, bed: Testbed) -> None:
        self._env = env
        self._bed = bed

    # -- reading ----------------------------------------------------------------------------

    @property
    def loaded(self) -> Loaded | None:
        """The build loaded, and its load parameters; None when NTA is not loaded."""
        return self._bed.nta.loaded

    def stats(self) -> Stats:
        return self._bed.nta.stats()

    def wait(self, what: str, cond: Callable[[Stats], bool], timeout: float = 30.0) -> Stats:
        """The counters, once ``cond`` holds of them."""
        return self._bed.nta.wait(what, cond, timeout)

    def dev_stats(self, nic: GuestNic) -> DevStats:
        return self._bed.nta.dev_stats(nic)

    def param(self, name: str) -> int:
        return self._bed.nta.param(name)

    # -- changing -----------------------------------------------------------------------------

    def _changed(self) -> None:
        """Before every change of the module (a journal's one line): the undo of its load
        state, once (the parameters each have theirs)."""
        start = self._bed.nta.loaded
        self._env._once("module", lambda: self._put_back(start))

    def _put_back(self, start: Loaded | None) -> None:
        nta, nics = self._bed.nta, self._bed.nics
        if nta.loaded == start:
            return
        if nta.loaded is not None:
            nta.unload(bounce=nics)
        if start is not None:
            nta.load(start.module, start.params, bounce=nics)

    def set_param(self, name: str, value: int) -> None:
        """One of NTA's writable parameters, for the rest of the test."""
        self._changed()
        old = self._bed.nta.set_param(name, value)
        self._env._once(f"param {name}", lambda: self._restore_param(name, old))

    def _restore_param(self, name: str, value: int) -> None:
        if self._bed.nta.loaded is not None:
            self._bed.nta.set_param(name, value)

    def churn_params(self, values: dict[str, Sequence[int]], rounds: int) -> None:
        """Each parameter of ``values`` written each of its values in turn, ``rounds`` times,
        in one guest command (as fast as the guest's shell writes); each put back to its
        value before the test when it ends."""
        self._changed()
        for name in values:
            old = self._bed.nta.param(name)
            self._env._once(f"param {name}", functools.partial(self._restore_param, name, old))
        loop = " ".join(f"echo {v} > {PARAMS}/{p};" for p, vs in values.items() for v in vs)
        self._env._change(f"for i in $(seq {rounds}); do {loop} done", 120.0 + rounds, True)

    def load(self, params: str | None = None) -> None:
        """The run's build, with ``params`` (default: the run's); every NIC bounced."""
        run = self._run()
        self._changed()
        self._bed.nta.load(run.module, run.params if params is None else params, self._bed.nics)

    def try_load(self, params: str) -> CmdResult:
        """insmod of the run's build with ``params``, as it comes: the caller judges a
        refusal (loaded on success, and unloaded when the test ends)."""
        run = self._run()
        self._changed()
        return self._bed.nta.insmod(run.module, params)

    def unload(self) -> None:
        """rmmod (a LabError if refused), then every NIC bounced: the rings refill from the
        kernel's allocator."""
        self._changed()
        self._bed.nta.unload(bounce=self._bed.nics)

    def rmmod(self) -> CmdResult:
        """rmmod as it comes: the caller judges a refusal (no bounce)."""
        self._changed()
        return self._bed.nta.rmmod()

    def reload_with(self, params: str) -> None:
        """Unloaded, then loaded again with ``params``, until the test ends."""
        self.unload()
        self.load(params)

    def _run(self) -> Loaded:
        run = self._bed.run_module
        if run is None:
            raise LabError("NTA was not loaded for this run: the test needs the nta_env fixture")
        return run.loaded


class KernelModule:
    """A kernel module a test loaded (``LabEnv.insmod``)."""

    def __init__(self, env: LabEnv, name: str) -> None:
        self._env = env
        self.name = name

    @property
    def loaded(self) -> bool:
        result = self._env.cmd(f"grep -q '^{self.name} ' /proc/modules", check=False)
        return result.rc == 0

    def rmmod(self) -> None:
        self._env._change(f"rmmod {self.name}", 60.0, True)

    def remove(self) -> None:
        """rmmod, if still loaded."""
        if self.loaded:
            self.rmmod()
