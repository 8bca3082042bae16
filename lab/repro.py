"""Reproducer bundles: what a failed lab test needs to be replayed in a VM.

A bundle is a directory holding ``bundle.json`` (kernel, NIC set, accelerator,
kernel command line, module parameters, guest commands), a copy of the
module build the test ran, the pcaps it injected in order, and its console
and kernel logs. ``ntalab repro BUNDLE`` boots the same kernel with the same
NICs, loads the same module, replays the pcaps NIC by NIC, runs the
commands, and leaves the developer in the guest's shell (``--no-shell``:
prints the splats the replay caused and exits 1 if there were any).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab import ExitStatus, InfraError, UsageError, accel, images, nics, traffic
from lab.guest import Guest, GuestSpec
from lab.testbed import Testbed

BUNDLE_FILE = "bundle.json"


@dataclass(frozen=True)
class Injected:
    nic: str  # variant name
    pcap: str  # file name inside the bundle


@dataclass(frozen=True)
class Bundle:
    test: str
    kernel: str
    release: str
    nic_set: str
    accel: str
    append: list[str]
    module: str | None  # file name inside the bundle
    module_params: str
    injected: list[Injected]
    reason: str
    commands: list[str] = field(default_factory=list)  # shell, run after the pcaps


def write(
    env: Testbed,
    test: str,
    pcaps: list[tuple[str, Path]],
    reason: str,
    root: Path,
    params: str | None = None,
    commands: Sequence[str] = (),
) -> Path:
    """Copy everything ``test`` used into ``root/<guest>-<test>``; the bundle's directory
    (named after the guest too: guests of one run share ``root``).

    ``params`` replaces the parameters the module was loaded with (a test that
    set one later says so); ``commands`` are what the guest must run to trigger
    the failure once the pcaps are replayed.
    """
    safe = test.replace("/", "_").replace("[", "-").rstrip("]")
    out = root / f"{env.outdir.name}-{safe}"
    out.mkdir(parents=True, exist_ok=True)
    injected = []
    for n, (nic, pcap) in enumerate(pcaps):
        name = f"{n:03d}-{pcap.name}"
        shutil.copy2(pcap, out / name)
        injected.append(Injected(nic, name))
    module = None
    if env.nta.loaded is not None:
        module = env.nta.loaded.module.name
        params = env.nta.loaded.params if params is None else params
        shutil.copy2(env.nta.loaded.module, out / module)
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
        module=module,
        module_params=params or "",
        injected=injected,
        reason=reason[-4000:],
        commands=list(commands),
    )
    (out / BUNDLE_FILE).write_text(json.dumps(asdict(bundle), indent=2) + "\n")
    return out


def load(path: Path) -> Bundle:
    file = path / BUNDLE_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
        data["injected"] = [Injected(**i) for i in data["injected"]]
        return Bundle(**data)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UsageError(f"{file} is not a reproducer bundle: {e}") from e


def replay(path: Path, interactive: bool = True, accel_override: str | None = None) -> int:
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
    with Guest(spec, root / "replay") as guest:
        env = Testbed.up(guest, kernel, bundle.nic_set)
        by_variant = {n.name: n for n in env.nics}
        if bundle.module:
            env.nta.load(root / bundle.module, bundle.module_params, bounce=env.nics)
        for item in bundle.injected:
            nic = env.net.use(by_variant[item.nic])
            frames = traffic.read_pcap(root / item.pcap)
            sent = env.send(nic, frames, nic.rate)
            print(f"  {nic.iface} ({item.nic}): {sent.sent} frames from {item.pcap}")
        for command in bundle.commands:
            result = env.cmd(command, check=False)
            print(f"  $ {command}: exit {result.rc}")
        if interactive:
            print("guest shell (no prompt); Ctrl-] leaves")
            child = guest.child_or_fail()
            child.logfile_read = None
            child.interact()
            return 0
        guest.save_dmesg("replay-dmesg.log")
        splats = guest.new_splats()
    for splat in splats:
        print(f"  {splat}")
    print(f"replay {'reproduced splats' if splats else 'ran clean'}; logs in {root / 'replay'}")
    return ExitStatus.FINDING if splats else ExitStatus.PASSED
