"""The NTA module in a guest: load, unload, parameters and counters, through one channel.

Everything goes through the guest's console: ``insmod``/``rmmod``, the
module's parameters in /sys/module/nta/parameters, and its counters in
/sys/kernel/debug/nta (the same names as NTA_IOC_STATS). Counters come back
typed (``pysniff.abi.Stats``/``DevStats``). Chunks come back by the
module's reclaim, so settled figures are waited for (``wait``), not read
once. Loads, unloads and parameter changes are steps of the test's journal
(``journal``, set by ``LabEnv.test_scope``), recorded before they run.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab import LabError
from lab.console import CmdResult, CommandFailed, Console
from lab.guestnet import GuestNet, GuestNic, Link
from lab.journal import Journal
from lab.steps import Load, Param, Step, Unload
from lab.wait import wait_until
from pysniff.abi import ABI_VERSION, DevStats, Stats

DEBUGFS = "/sys/kernel/debug/nta"
PARAMS = "/sys/module/nta/parameters"


@dataclass(frozen=True)
class Loaded:
    """The module build loaded in the guest, and how."""

    module: Path
    params: str


class NtaModule:
    def __init__(self, sh: Console, net: GuestNet) -> None:
        self.sh = sh
        self.net = net
        self.loaded: Loaded | None = None
        self.journal: Journal | None = None

    def _record(self, step: Step) -> None:
        if self.journal is not None:
            self.journal.add(step)

    def load(self, module: Path, params: str, bounce: Sequence[Link] = ()) -> None:
        """insmod, then bounce ``bounce``: their receive rings refill from NTA's chunks.

        The drivers filled those rings before NTA existed.
        """
        result = self.insmod(module, params)
        if result.rc != 0:
            raise CommandFailed(result)
        self.sh.run("mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug")
        version = self.version_line()
        if f" abi {ABI_VERSION} " not in version:
            raise LabError(f"{module} is not NTA ABI {ABI_VERSION} as pysniff is: {version!r}")
        if bounce:
            self.net.bounce(bounce)

    def insmod(self, module: Path, params: str) -> CmdResult:
        """insmod as it comes: the caller judges a refusal. Loaded on success."""
        self._record(Load(str(module), params))
        result = self.sh.run(f"insmod {shlex.quote(str(module))} {params}", check=False)
        if result.rc == 0:
            self.loaded = Loaded(module, params)
        return result

    def rmmod(self) -> CmdResult:
        """rmmod as it comes: the caller judges a refusal. Unloaded on success."""
        self._record(Unload())
        result = self.sh.run("rmmod nta", check=False)
        if result.rc == 0:
            self.loaded = None
        return result

    def unload(self, bounce: Sequence[Link] = ()) -> None:
        """rmmod (an error if refused), then bounce: the rings refill from the kernel's."""
        result = self.rmmod()
        if result.rc != 0:
            raise LabError(f"rmmod nta refused: {result.stderr.strip()}")
        if bounce:
            self.net.bounce(bounce)

    def version_line(self) -> str:
        return self.sh.run("dmesg | grep 'nta: version' | tail -1").stdout.strip()

    def stats(self) -> Stats:
        return Stats.from_text(self.sh.run(f"cat {DEBUGFS}/stats").stdout)

    def wait(self, what: str, cond: Callable[[Stats], bool], timeout: float = 30.0) -> Stats:
        """Read the counters until ``cond`` holds of them; the counters then."""

        def settled() -> Stats | None:
            s = self.stats()
            return s if cond(s) else None

        return wait_until(settled, timeout, f"NTA counters: {what}", 0.2)

    def dev_stats(self, nic: GuestNic) -> DevStats:
        """NTA's counters for one device, from the debugfs devices file."""
        for line in self.sh.run(f"cat {DEBUGFS}/devices").stdout.splitlines():
            name, *pairs = line.split()
            if name == nic.iface:
                # "ifindex 2 reader slot0 allocated 5 ...": every other word a key.
                values = {
                    k: int(v) for k, v in zip(pairs[::2], pairs[1::2], strict=True) if v.isdigit()
                }
                return DevStats(**values)
        raise LabError(f"NTA does not serve {nic.iface}")

    def param(self, name: str) -> int:
        """A numeric or boolean parameter (Y/N read as 1/0, as the kernel accepts them)."""
        text = self.sh.run(f"cat {PARAMS}/{name}").stdout.strip()
        return int(text == "Y") if text in ("Y", "N") else int(text)

    def set_param(self, name: str, value: int) -> int:
        """Set one of the module's writable parameters; its previous value."""
        old = self.param(name)
        self._record(Param(name, value))
        self.sh.run(f"echo {value} > {PARAMS}/{name}")
        return old
