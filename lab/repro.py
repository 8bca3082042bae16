"""Reproducer bundles: what a failed lab test did, replayable in a VM.

A bundle is a directory holding ``bundle.json`` (kernel, NIC set,
accelerator, kernel command line, the kernel reports the test caused, each
whole, and the test's journal: its steps in order, see ``lab.steps``), the
pcap of every send call the journal lists, a copy of each module build it
loaded, and the test's console and kernel logs. Nothing in it is there
because a test remembered to save it: the journal is recorded at the choke
points (``lab.journal``).

``ntalab repro BUNDLE`` boots the same kernel with the same NICs and replays
the steps in order: the module loaded, unloaded and its parameters set as
the test did, links taken down and up, frames sent per NIC at the rate they
were sent (in the background where the test sent them from a thread while
it went on), commands run and programs started (in the background where the
test started them so); then leaves the developer in the guest's shell
(``--no-shell``: prints the splats the replay caused and exits 1 if there
were any). ``--repeat N`` replays it N times, each in a guest of its own,
and prints how often it reproduced (``lab.repeat``). The replay's own
journal is in ``replay/journal/``: the same steps, as the replay did them.

Bundles of labs before the journal (pcaps and commands) are refused, with
a message that says so: run the test again for a bundle that replays it.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, assert_never

from lab import ExitStatus, InfraError, UsageError, accel, images, nics, repeat, steps, traffic
from lab.console import CommandFailed
from lab.guest import Guest, GuestSpec
from lab.guestnet import GuestNic
from lab.journal import Journal
from lab.kernlog import Splat
from lab.spawn import GuestProc
from lab.steps import Command, Frames, Links, Load, Param, Spawn, Step, Unload
from lab.testbed import Testbed

BUNDLE_FILE = "bundle.json"
REPLAYS = "replays.json"  # the record of repeated replays
# 1: the pcaps tests saved, and commands run after them (no "format" field); 2: a journal
# whose programs were given a ready file's path; 3: programs given typed requests, their
# readiness said through lab.guestside.protocol.
FORMAT = 3
COMMAND_TIMEOUT_S = 300.0  # a replayed command's (the test's own timeout is not recorded)


@dataclass(frozen=True)
class Bundle:
    test: str
    kernel: str
    release: str
    nic_set: str
    accel: str
    append: list[str]
    reason: str
    outdir: str  # the guest results dir the test ran in: paths under it are the replay's
    steps: list[Step] = field(default_factory=list)  # the test's journal
    splats: list[Splat] = field(default_factory=list)  # the kernel reports, whole
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"steps": [steps.to_dict(s) for s in self.steps]}


def write(
    env: Testbed,
    test: str,
    journal: Journal,
    reason: str,
    root: Path,
    splats: Sequence[Splat] = (),
) -> Path:
    """The steps of ``journal`` so far, with everything they use, in ``root/<guest>-<test>``;
    the bundle's directory (named after the guest too: guests of one run share ``root``)."""
    safe = test.replace("/", "_").replace("[", "-").rstrip("]")
    out = root / f"{env.outdir.name}-{safe}"
    out.mkdir(parents=True, exist_ok=True)
    modules: dict[str, str] = {}  # a build's path -> its file name in the bundle
    kept: list[Step] = []
    for step in journal.steps:
        if isinstance(step, Frames):
            shutil.copy2(journal.directory / step.pcap, out / step.pcap)
        elif isinstance(step, Load):
            if step.module not in modules:
                name = Path(step.module).name
                name = f"{len(modules)}-{name}" if name in modules.values() else name
                shutil.copy2(step.module, out / name)
                modules[step.module] = name
            step = Load(modules[step.module], step.params, step.t)
        kept.append(step)
    for log in (env.guest.console_log.path, env.guest.save_dmesg()):
        if log.is_file():
            shutil.copy2(log, out / log.name)
    bundle = Bundle(
        test=test,
        kernel=env.kernel.name,
        release=env.kernel.release,
        nic_set=env.nic_set,
        accel=env.guest.spec.accel.name,
        append=list(env.guest.spec.append),
        reason=reason[-4000:],
        outdir=str(env.outdir),
        steps=kept,
        splats=list(splats),
    )
    (out / BUNDLE_FILE).write_text(json.dumps(bundle.to_dict(), indent=2) + "\n")
    return out


def load(path: Path) -> Bundle:
    file = path / BUNDLE_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
        if data.get("format", 1) != FORMAT:
            raise UsageError(
                f"{file} is a bundle of an older lab (format {data.get('format', 1)}: its "
                "guest programs took arguments this lab's do not); this lab replays format "
                f"{FORMAT} only: run the test again for a bundle this lab replays"
            )
        data["steps"] = [steps.from_dict(s) for s in data["steps"]]
        data["splats"] = [Splat.from_dict(s) for s in data.get("splats", [])]
        return Bundle(**data)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UsageError(f"{file} is not a reproducer bundle: {e}") from e


Boot = Callable[[GuestSpec, Path], Guest]


def replay(
    path: Path,
    interactive: bool = True,
    accel_override: str | None = None,
    times: int = 1,
    until_fail: bool = False,
    boot: Boot = Guest,
) -> int:
    """Replay a bundle in a guest: then its shell (``interactive``), or the kernel reports
    it caused (exit 1 if any). Repeated (``times`` > 1 or ``until_fail``), each replay boots
    a guest of its own, without a shell, and the rate is printed."""
    repeat.check_times(times)  # before anything is fetched or booted
    bundle = load(path)
    root = path if path.is_dir() else path.parent
    kernel = images.kernel_for(bundle.kernel)
    if kernel.release != bundle.release:
        raise InfraError(
            f"{bundle.kernel} is now {kernel.release}, the bundle ran {bundle.release}"
        )
    acc = accel.choose(accel_override) if accel_override else accel.Accel(bundle.accel, "bundle")
    spec = GuestSpec(kernel, nics.nic_set(bundle.nic_set), acc, append=tuple(bundle.append))
    print(f"replaying {bundle.test} on {kernel.release} ({bundle.nic_set}, {acc.name})")
    if times > 1 or until_fail:

        def once(n: int) -> repeat.Attempt:
            out = root / f"replay-{n}"
            splats = replay_once(bundle, root, spec, out, boot)
            return repeat.Attempt(bool(splats), [s.name for s in splats], logs=str(out))

        done = repeat.repeat(once, times, until_fail, record=root / REPLAYS)
        return done.verdict.status
    if interactive:
        with boot(spec, root / "replay") as guest:
            _drive(Testbed.up(guest, kernel, bundle.nic_set), bundle, root)
            print("guest shell (no prompt); Ctrl-] leaves")
            child = guest.child_or_fail()
            child.logfile_read = None
            child.interact()
        return ExitStatus.PASSED
    splats = replay_once(bundle, root, spec, root / "replay", boot)
    for splat in splats:
        print(f"  {splat}")
    print(f"replay {'reproduced splats' if splats else 'ran clean'}; logs in {root / 'replay'}")
    return ExitStatus.FINDING if splats else ExitStatus.PASSED


def replay_once(bundle: Bundle, root: Path, spec: GuestSpec, out: Path, boot: Boot) -> list[Splat]:
    """One replay in a fresh guest (its logs in ``out``): the kernel reports it caused."""
    with boot(spec, out) as guest:
        _drive(Testbed.up(guest, spec.kernel, bundle.nic_set), bundle, root)
        guest.save_dmesg("replay-dmesg.log")
        return guest.new_splats()


def _drive(bed: Testbed, bundle: Bundle, root: Path) -> None:
    """The bundle's steps, in order, in a booted guest (journaled as a test's are: its
    journal is in ``<outdir>/journal``); what the replay started is stopped at its end."""
    with bed.journaled(f"replay-{Path(bundle.outdir).name}-{bundle.test}"):
        player = _Player(bed, bundle, root)
        try:
            for n, step in enumerate(bundle.steps):
                player.play(n, step)
        finally:
            player.join()
            player.stop()


class _Player:
    """Replays steps one by one; frames the test sent from a thread, from a thread."""

    def __init__(self, env: Testbed, bundle: Bundle, root: Path) -> None:
        self.env = env
        self.bundle = bundle
        self.root = root
        self.by_variant = {n.name: n for n in env.nics}
        self.senders: dict[str, threading.Thread] = {}  # per NIC: its background frames
        self.procs: list[GuestProc] = []  # the programs it started

    def nic(self, name: str) -> GuestNic:
        try:
            return self.by_variant[name]
        except KeyError:
            raise UsageError(
                f"the bundle sends to NIC {name}; the guest has {', '.join(self.by_variant)}"
            ) from None

    def here(self, text: str) -> str:
        """Paths into the test's results dir, into the replay's (the test's artefacts stay
        as they are); the dir's name whole, not a prefix of another name."""
        old = re.escape(self.bundle.outdir.rstrip("/")) + r"(?![\w.-])"
        return re.sub(old, lambda _: str(self.env.outdir), text)

    def join(self, nic: str | None = None) -> None:
        """Until the background frames of ``nic`` (default: every NIC's) are sent."""
        for name in [nic] if nic is not None else list(self.senders):
            sender = self.senders.pop(name, None)
            if sender is not None:
                sender.join()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def play(self, n: int, step: Step) -> None:
        say = f"  [{n:3d} +{step.t:7.2f}s]"
        try:
            print(f"{say} {self._play(step)}", flush=True)
        except CommandFailed as e:  # the test may have failed there too: go on, as it did
            print(f"{say} failed ({e.result.rc}): {e.result.cmd}", flush=True)

    def _play(self, step: Step) -> str:
        env = self.env
        if isinstance(step, Frames):
            self.join(step.nic)  # one send call at a time per NIC, as in the test
            nic = env.net.use(self.nic(step.nic))
            frames = traffic.read_pcap(self.root / step.pcap)
            rate = f"{step.rate:g}/s" if step.rate else "as fast as taken"
            what = f"{nic.iface} ({step.nic}): {len(frames)} frames, {rate}, from {step.pcap}"
            if step.background:
                sender = threading.Thread(target=env.send, args=(nic, frames, step.rate))
                sender.start()
                self.senders[step.nic] = sender
                return what + " (background)"
            sent = env.send(nic, frames, step.rate)
            return what + f": {sent.sent} sent"
        if isinstance(step, Load):
            env.nta.load(self.root / step.module, step.params)
            return f"insmod {step.module} {step.params}"
        if isinstance(step, Unload):
            return f"rmmod nta: exit {env.nta.rmmod().rc}"
        if isinstance(step, Param):
            env.nta.set_param(step.name, step.value)
            return f"{step.name}={step.value}"
        if isinstance(step, Links):
            links = [self.nic(name) for name in step.nics]
            (env.net.links_up if step.up else env.net.links_down)(links)
            return f"links {'up' if step.up else 'down'}: {', '.join(n.iface for n in links)}"
        if isinstance(step, Command):
            cmd = self.here(step.cmd)
            env.record(Command(cmd))
            return f"$ {cmd}: exit {env.cmd(cmd, COMMAND_TIMEOUT_S, check=False).rc}"
        if isinstance(step, Spawn):
            args = [self.here(a) for a in step.args]
            env.record(Spawn(step.name, step.module, tuple(args), step.ready))
            proc = env.spawn(step.name, step.module, args, step.ready)
            self.procs.append(proc)
            if step.ready:
                proc.wait_ready()
            return f"{step.module} {' '.join(args)} & (pid {proc.pid})"
        assert_never(step)
