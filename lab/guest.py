"""Stage 3, boot: virtme-ng guests with the lab's NICs, and their lifecycle.

``build_argv`` is the whole vng command line as a list (pure, unit-tested,
printed shell-quoted with ``--dry-run``). ``Guest`` boots it under pexpect,
waits for the shell with a timeout that reports the console tail, hands out
the ``Console`` and the NICs' host ends, collects the kernel log, and powers
off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TextIO

import pexpect

from lab import REPO, LabError
from lab.accel import Accel
from lab.console import Console, clean
from lab.images import Kernel
from lab.nics import HOST_MAC, HostEnd, NicPlan, NicVariant, find_iface_cmd, plan

# Kernel command lines guests can boot with. "debug" turns on what Debian's
# kernels offer for catching misuse of freed memory: SLUB red zones, poisoning
# and user tracking, poisoning of freed pages, and zeroing on free.
BOOT_PROFILES: dict[str, tuple[str, ...]] = {
    "default": (),
    "debug": ("slub_debug=FZPU", "page_poison=1", "init_on_free=1"),
}

# bash's prompt once the guest's shell is up (vng logs in as the host user).
PROMPT = r"[#$] $"
BOOT_TIMEOUT = {"kvm": 60.0, "tcg": 240.0}


class GuestBootError(LabError):
    pass


@dataclass(frozen=True)
class GuestSpec:
    kernel: Kernel
    nics: tuple[NicVariant, ...]
    accel: Accel
    memory: str = "1G"
    cpus: int = 2
    append: tuple[str, ...] = ()  # extra kernel command line
    rwdirs: tuple[Path, ...] = ()  # host dirs the guest may write (results)
    name: str = "ntalab"
    guest_no: int = 0  # makes MACs unique across the guests of one run
    qemu_opts: tuple[str, ...] = ()  # more QEMU arguments (the benchmark's web NIC)


def vng_binary() -> str:
    """vng from the interpreter's venv first: the lab's own pinned virtme-ng."""
    local = Path(sys.executable).parent / "vng"
    found = str(local) if local.exists() else shutil.which("vng")
    if found is None:
        raise LabError("virtme-ng's vng is not installed: run 'make deps'")
    return found


def vng_env() -> dict[str, str]:
    """vng runs its sibling scripts (virtme-run) through PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def build_argv(spec: GuestSpec, nics: Sequence[NicPlan], vng: str = "vng") -> list[str]:
    qemu_opts = [arg for nic in nics for arg in nic.qemu_args()] + list(spec.qemu_opts)
    argv = [
        vng, "--run", str(spec.kernel.run_target),
        "--name", spec.name,
        "--disable-microvm",  # the NICs are PCI devices
        "--force-9p",  # this host has no virtiofsd
        "--verbose",  # boot messages on the console log, for boot failures
        "--memory", spec.memory,
        "--cpus", str(spec.cpus),
        *spec.accel.vng_args,
    ]  # fmt: skip
    for d in spec.rwdirs:
        argv.append(f"--rwdir={d}")
    if spec.append:
        argv += ["--append", " ".join(spec.append)]
    if qemu_opts:
        argv.append(f"--qemu-opts={shlex.join(qemu_opts)}")
    return argv


@dataclass
class _ConsoleLog:
    """The run's console log, and its tail for error messages."""

    path: Path
    file: TextIO = field(init=False)

    def __post_init__(self) -> None:
        self.file = self.path.open("w", encoding="utf-8", errors="replace")

    def tail(self, lines: int = 40) -> str:
        self.file.flush()
        text = clean(self.path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class RxCounts:
    """A guest NIC's receive counters (/sys/class/net/IFACE/statistics)."""

    packets: int  # handed to the stack
    # Dropped by the NIC itself, its receive ring full. QEMU's rtl8139 counts
    # them in RxMissed, which 8139cp reports here.
    missed: int

    def __sub__(self, other: RxCounts) -> RxCounts:
        return RxCounts(self.packets - other.packets, self.missed - other.missed)


@dataclass(frozen=True)
class GuestNic:
    """A NIC as the guest sees it: its plan, its interface name, its host end."""

    plan: NicPlan
    iface: str
    host: HostEnd


class Guest:
    """A booted guest. Use as a context manager; everything is torn down on exit."""

    def __init__(self, spec: GuestSpec, outdir: Path, boot_timeout: float | None = None) -> None:
        self.spec = spec
        self.boot_timeout = boot_timeout or BOOT_TIMEOUT[spec.accel.name]
        self._sockdir = Path(tempfile.mkdtemp(prefix="ntalab-"))  # unix paths must be short
        self.nics = plan(spec.nics, self._sockdir, spec.guest_no)
        self.host_ends: list[HostEnd] = []
        # (driver, parameter) -> the value set in the guest now, and at boot.
        self._driver_params: dict[tuple[str, str], str] = {}
        self._driver_defaults: dict[tuple[str, str], str] = {}
        # The guest writes its kernel log and results straight into outdir.
        self.outdir = outdir.resolve()
        writable = replace(spec, rwdirs=(*spec.rwdirs, self.outdir))
        self.argv = build_argv(writable, self.nics, vng_binary())
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.console_log = _ConsoleLog(self.outdir / "console.log")
        self.child: pexpect.spawn[str] | None = None
        self.console: Console | None = None
        self.boot_seconds = 0.0

    def __enter__(self) -> Guest:
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def boot(self) -> None:
        (self.outdir / "vng-argv.txt").write_text(shlex.join(self.argv) + "\n")
        self._record_qemu_command()
        self.host_ends = [HostEnd(nic) for nic in self.nics]
        start = time.monotonic()
        self.child = pexpect.spawn(
            self.argv[0], self.argv[1:], cwd=str(REPO), encoding="utf-8",
            codec_errors="replace", dimensions=(50, 500), timeout=self.boot_timeout,
            env=vng_env(),
        )  # fmt: skip
        self.child.logfile_read = self.console_log.file
        try:
            self.child.expect(PROMPT, timeout=self.boot_timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as e:
            why = "timed out" if isinstance(e, pexpect.TIMEOUT) else "exited"
            raise GuestBootError(
                f"guest {self.spec.name} ({self.spec.kernel.name}) {why} before its shell came "
                f"up ({self.boot_timeout:.0f}s); console log {self.console_log.path}; tail:\n"
                f"{self.console_log.tail()}"
            ) from None
        self.console = Console(self.child, self.console_log.file, self.console_log)
        self.console.setup()
        self.boot_seconds = time.monotonic() - start
        self._record_guest()

    def _record_guest(self) -> None:
        """What ran, for the report: kernel, NICs, accelerator, boot time."""
        info = {
            "name": self.spec.name,
            "kernel": self.spec.kernel.name,
            "release": self.sh.run("uname -r").stdout.strip(),
            "nics": [n.variant.name for n in self.nics],
            "accel": self.spec.accel.name,
            "accel_reason": self.spec.accel.reason,
            "append": list(self.spec.append),
            "boot_s": round(self.boot_seconds, 1),
        }
        (self.outdir / "guest.json").write_text(json.dumps(info, indent=2) + "\n")

    def _record_qemu_command(self) -> None:
        """The exact QEMU command vng runs, for reproduction."""
        proc = subprocess.run(
            [*self.argv, "--dry-run"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env=vng_env(),
        )
        (self.outdir / "qemu-command.txt").write_text(proc.stdout + proc.stderr)

    @property
    def sh(self) -> Console:
        if self.console is None:
            raise LabError("guest is not booted")
        return self.console

    def setup_nics(self, promisc: bool = True) -> list[GuestNic]:
        """Load each NIC's driver, find its interface by MAC and driver, bring it up.

        IPv6 is off on them: the guest sends nothing unasked. GRO is turned
        off so that one frame on the wire is one skb, the unit
        every receiver here counts. VLAN stripping is turned off where the
        driver allows it, so the NIC hands the kernel the frame as sent (the
        core still moves the tag out of the data: receivers put it back).
        """
        loaded: set[str] = set()
        out = []
        for nic, end in zip(self.nics, self.host_ends, strict=True):
            v = nic.variant
            if v.driver not in loaded:
                self.sh.run(f"modprobe {v.driver}")
                loaded.add(v.driver)
            found = self.sh.run(find_iface_cmd(nic.mac, v.driver)).stdout.split()
            if len(found) != 1:
                listing = self.sh.run(
                    "for d in /sys/class/net/*; do echo $d $(cat $d/address) "
                    "$(readlink -f $d/device/driver); done",
                    check=False,
                ).stdout
                raise LabError(
                    f"NIC {v.name} (mac {nic.mac}) has no interface bound to {v.driver} "
                    f"in the guest; interfaces:\n{listing}"
                )
            iface = found[0]
            self.configure_iface(iface, f"{nic.guest_ip}/24", promisc)
            gn = GuestNic(nic, iface, end)
            self.sh.run(self._host_neighbour_cmd(gn))
            out.append(gn)
        self._read_driver_defaults()
        # Each driver starts with the settings of its first NIC: a guest of one
        # variant (``ntalab boot --nics e1000-cb0``) is set up for it.
        for driver in dict.fromkeys(gn.plan.variant.driver for gn in out):
            self.use_nic(next(gn for gn in out if gn.plan.variant.driver == driver))
        return out

    def _read_driver_defaults(self) -> None:
        for v in {nic.variant for nic in self.nics}:
            for param, _ in v.driver_settings:
                key = (v.driver, param)
                if key not in self._driver_params:
                    path = f"/sys/module/{v.driver}/parameters/{param}"
                    self._driver_params[key] = self.sh.run(f"cat {path}").stdout.strip()
        self._driver_defaults = dict(self._driver_params)

    def use_nic(self, gn: GuestNic) -> GuestNic:
        """Sets the driver parameters ``gn``'s variant needs; the driver's defaults for the rest.

        Only for parameters the driver reads per frame (e1000's copybreak):
        the NICs that share the driver must be idle meanwhile.
        """
        v = gn.plan.variant
        wanted = {key: value for key, value in self._driver_defaults.items() if key[0] == v.driver}
        wanted |= {(v.driver, param): value for param, value in v.driver_settings}
        for (driver, param), value in wanted.items():
            if self._driver_params[(driver, param)] != value:
                self.sh.run(f"echo {value} > /sys/module/{driver}/parameters/{param}")
                self._driver_params[(driver, param)] = value
        return gn

    def configure_iface(self, iface: str, address: str, promisc: bool) -> None:
        """IPv6 off (the guest's own DAD, MLD and RS would add frames to count), GRO
        and VLAN stripping off where the driver allows, the address, the link up."""
        self.sh.run(f"sysctl -qw net.ipv6.conf.{iface}.disable_ipv6=1")
        self.sh.run(f"ethtool -K {iface} gro off")
        self.sh.run(f"ethtool -K {iface} rxvlan off 2>/dev/null || true")
        self.sh.run(f"ip link set {iface} up" + (" promisc on" if promisc else ""))
        self.sh.run(f"ip addr add {address} dev {iface}")

    @staticmethod
    def _host_neighbour_cmd(gn: GuestNic) -> str:
        return f"ip neigh replace {gn.plan.host_ip} lladdr {HOST_MAC} dev {gn.iface} nud permanent"

    def links_down(self, gns: Sequence[GuestNic]) -> None:
        self.sh.run("; ".join(f"ip link set {gn.iface} down" for gn in gns))

    def links_up(self, gns: Sequence[GuestNic]) -> None:
        """Up again, with the host's neighbour entry: a link going down flushes its
        neighbours, permanent ones too."""
        self.sh.run(
            " && ".join(
                f"ip link set {gn.iface} up && {self._host_neighbour_cmd(gn)}" for gn in gns
            )
        )

    def bounce_nics(self, gns: Sequence[GuestNic]) -> None:
        """Links down and up: the drivers refill their receive rings from scratch."""
        self.links_down(gns)
        self.links_up(gns)

    def rx_counts(self, iface: str) -> RxCounts:
        stats = f"/sys/class/net/{iface}/statistics"
        out = self.sh.run(f"cat {stats}/rx_packets {stats}/rx_missed_errors").stdout
        packets, missed = map(int, out.split())
        return RxCounts(packets, missed)

    def save_dmesg(self, name: str = "dmesg.log") -> Path:
        """The whole kernel log, written by the guest straight into the results dir."""
        path = self.outdir / name
        self.sh.run(f"dmesg > {shlex.quote(str(path))}", timeout=60)
        return path

    def close(self) -> None:
        if self.child is not None and self.child.isalive():
            with contextlib.suppress(LabError, OSError):
                if self.console is not None:
                    self.save_dmesg()
                    self.console.send_raw("poweroff -f")
                self.child.expect(pexpect.EOF, timeout=30)
            if self.child.isalive():
                self.child.terminate(force=True)
        if self.child is not None:
            self.child.close()
            self.child = None
        for end in self.host_ends:
            end.close()
        self.host_ends = []
        self.console_log.file.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)
