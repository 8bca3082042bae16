"""The environment a lab test runs against: one booted guest, its NICs, its results dir.

Tests read as plain steps against it (inject, capture, read counters); it
keeps every artefact a failure needs to be replayed (the injected pcaps,
the console and kernel logs, the exact vng/QEMU command) in ``outdir``.
"""

from __future__ import annotations

import random
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import REPO, LabError, traffic
from lab.guest import Guest, GuestNic, RxCounts
from lab.images import Kernel
from lab.spawn import GuestProc, Spawner
from pysniff import signature

NTA_DEBUGFS = "/sys/kernel/debug/nta"
# Seconds without a frame after which a reader waiting for more gives up.
IDLE_S = 3


@dataclass
class LabEnv:
    guest: Guest
    nics: list[GuestNic]
    kernel: Kernel
    nic_set: str
    outdir: Path
    # Every pcap injected, in order, with the NIC variant it went to.
    pcaps: list[tuple[str, Path]] = field(default_factory=list)
    module: Path | None = None  # the NTA build loaded in the guest, if any
    module_params: str = ""
    _rng: random.Random = field(default_factory=random.Random)
    _spawner: Spawner | None = None

    def each_nic(self) -> Iterator[GuestNic]:
        """Every NIC in turn, with its variant's driver settings in force (see Guest.use_nic)."""
        for gn in self.nics:
            yield self.guest.use_nic(gn)

    def new_run_id(self) -> int:
        return self._rng.randrange(1, 1 << 32)

    @staticmethod
    def addrs(gn: GuestNic) -> traffic.Addresses:
        return traffic.Addresses.of(gn.plan)

    @staticmethod
    def guest_python() -> list[str]:
        """The command that runs one of the lab's Python modules in the guest (``+ [module]``).

        The guest sees the host's filesystem, so the host's interpreter and the
        repository work there unchanged. One simple command (``env -C``, not
        ``cd &&``), so that run in the background its pid is the program's.
        The programs run this way (the spawner, and what it forks: pysniff and
        lab.guestside.*) use the standard library only, so they skip
        site-packages (-S).
        """
        return ["env", "-C", str(REPO), sys.executable, "-S", "-m"]

    def spawn(self, name: str, module: str, *args: object, out: Path | None = None) -> GuestProc:
        """One of the lab's stdlib-only programs (pysniff, lab.guestside.*) in the guest.

        Forked from a warm interpreter (lab.guestside.spawner): it runs within
        milliseconds, where a fresh Python takes seconds under TCG. Its
        stdout goes to ``out`` (default ``<outdir>/<name>.out``), its stderr
        to ``<outdir>/<name>.log``.
        """
        if self._spawner is None:
            self._spawner = Spawner(self.guest.sh, self.guest_python(), self.outdir / "spawner")
        out = out or self.outdir / f"{name}.out"
        return self._spawner.spawn(name, module, *args, out=out, log=self.outdir / f"{name}.log")

    @staticmethod
    def wait_ready(proc: GuestProc, ready: Path, timeout: float = 120.0) -> None:
        """Until ``proc`` created its ready file; an error if it ended first."""
        deadline = time.monotonic() + timeout
        while not ready.exists():
            rc = proc.poll()
            if rc is not None or time.monotonic() > deadline:
                why = f"exited {rc}" if rc is not None else f"not ready after {timeout:.0f}s"
                raise LabError(f"{proc.name} {why}: {proc.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def signal(self, proc: GuestProc, sig: str) -> None:
        self.guest.sh.run(f"kill -{sig} {proc.pid}")

    def start_pysniff(self, gn: GuestNic, tag: str, *pysniff_args: object) -> GuestProc:
        """pysniff on ``gn`` in the background, attached and mapped when this returns.

        Its --json output is ``proc.result()``.
        """
        ready = self.outdir / f"ready-{tag}"
        args: list[object] = ["-i", gn.iface, "--json", "--ready-file", ready, *pysniff_args]
        proc = self.spawn(tag, "pysniff", *args, out=self.outdir / f"{tag}.json")
        self.wait_ready(proc, ready)
        return proc

    def sniff_while(
        self,
        gn: GuestNic,
        run_id: int,
        batch: list[bytes],
        *pysniff_args: object,
        rate: float | None = None,
    ) -> dict[str, Any]:
        """Inject ``batch`` while pysniff reads and verifies it from NTA; its --json output.

        pysniff stops after the whole batch, or once frames stop coming
        (--idle): a frame that never comes fails the caller's checks in
        seconds, not at a timeout.
        """
        tag = f"nta-{gn.plan.variant.name}-{run_id}"
        self.save_pcap(gn, f"injected-{tag}", batch)
        sn = self.start_pysniff(
            gn, tag, "--run-id", run_id, "--expect", len(batch), "--verify",
            "-c", len(batch), "--idle", IDLE_S, *pysniff_args,
        )  # fmt: skip
        traffic.inject(gn.host, batch, rate or gn.plan.variant.lossless_rate)
        return sn.result()

    def nic_took(
        self, gn: GuestNic, before: RxCounts, sent: int, timeout: float = 30.0
    ) -> RxCounts:
        """What the NIC did with the ``sent`` frames injected since ``before``, once it is done.

        Each frame either reached the stack or was dropped by the NIC itself,
        its ring full, and counted there as missed: anything else is a lost
        frame, and so is a miss on a NIC with flow control. QEMU's rtl8139 has
        none, and misses whenever the guest's vCPU is off the host CPU longer
        than its 64-entry ring lasts; no pacing rules that out on a loaded
        host. A frame the NIC took and a later layer lost is the caller's to
        find, against ``missed``.
        """
        name, deadline = gn.plan.variant.name, time.monotonic() + timeout
        while (rx := self.guest.rx_counts(gn.iface) - before).packets + rx.missed < sent:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if rx.packets + rx.missed != sent:
            raise AssertionError(f"{name}: {sent} sent, {rx.packets} received, {rx.missed} missed")
        if rx.missed and gn.plan.variant.flow_control:
            raise AssertionError(f"{name} has flow control, yet missed {rx.missed} frames")
        return rx

    @staticmethod
    def all_but_missed(nic: str, entry: dict[str, Any], sent: int, rx: RxCounts) -> set[int]:
        """A reader's verify entry shows every frame once, intact, but those the NIC missed.

        Which frames a NIC without flow control missed is not known, only how
        many (see nic_took): as many must be missing, and no more. The
        sequence numbers missing.
        """
        missing = entry.get("missing", [])
        if entry != signature.perfect(sent, missing):
            raise AssertionError(f"{nic}: {entry}, NIC {rx}")
        lost = signature.expand(missing)
        if len(lost) != rx.missed:
            raise AssertionError(f"{nic}: {len(lost)} frames lost, the NIC missed {rx.missed}")
        return lost

    def nta_stats(self) -> dict[str, int]:
        """The module's counters, from its debugfs file (the same names as NTA_IOC_STATS)."""
        text = self.guest.sh.run(f"cat {NTA_DEBUGFS}/stats").stdout
        return {key: int(value) for key, value in (line.split() for line in text.splitlines())}

    def wait_nta(self, key: str, want: int, timeout: float = 30.0) -> dict[str, int]:
        """Poll one module counter in the guest until it reads ``want``; all counters then.

        Chunks come back by the module's periodic sweep, so settled figures
        such as in_use are waited for, not read once.
        """
        self.guest.sh.run(
            f"end=$((SECONDS + {int(timeout) + 1})); while [ $SECONDS -lt $end ]; do "
            f"grep -qx '{key} {want}' {NTA_DEBUGFS}/stats && break; sleep 0.2; done",
            timeout=timeout + 30,
        )
        return self.nta_stats()

    def load_nta(self, module: Path, params: str) -> None:
        """insmod, then bounce the links so their receive rings refill from NTA's chunks.

        The drivers filled those rings before NTA existed.
        """
        sh = self.guest.sh
        sh.run(f"insmod {shlex.quote(str(module))} {params}")
        self.module, self.module_params = module, params
        sh.run("mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug")
        self.guest.bounce_nics(self.nics)

    def unload_nta(self) -> None:
        """rmmod, then bounce the links: their rings refill from the kernel's allocator."""
        self.guest.sh.run("rmmod nta")
        self.module = None
        self.guest.bounce_nics(self.nics)

    def dev_stats(self, gn: GuestNic) -> dict[str, int]:
        """NTA's counters for one device, from the debugfs devices file."""
        for line in self.guest.sh.run(f"cat {NTA_DEBUGFS}/devices").stdout.splitlines():
            name, *pairs = line.split()
            if name == gn.iface:
                # "ifindex 2 reader no allocated 5 ...": every other word a key.
                return {
                    k: int(v) for k, v in zip(pairs[::2], pairs[1::2], strict=True) if v.isdigit()
                }
        raise LabError(f"NTA does not serve {gn.iface}")

    def nta_param(self, name: str) -> int:
        return int(self.guest.sh.run(f"cat /sys/module/nta/parameters/{name}").stdout)

    def set_nta_param(self, name: str, value: int) -> int:
        """Set one of the module's writable parameters; its previous value."""
        old = self.nta_param(name)
        self.guest.sh.run(f"echo {value} > /sys/module/nta/parameters/{name}")
        return old

    def save_pcap(self, gn: GuestNic, name: str, batch: list[bytes]) -> Path:
        """Keep what is about to be injected into ``gn``, for reproducers."""
        path = self.outdir / f"{name}.pcap"
        traffic.write_pcap(path, batch)
        self.pcaps.append((gn.plan.variant.name, path))
        return path

    def capture_while(
        self, gn: GuestNic, run_id: int, batch: list[bytes], rate: float | None = None
    ) -> dict[str, object]:
        """Inject ``batch`` while the guest's AF_PACKET capture checks every frame.

        Without a ``rate``, at the NIC's lossless rate.
        """
        rate = rate or gn.plan.variant.lossless_rate
        tag = f"{gn.plan.variant.name}-{run_id}"
        out, ready = self.outdir / f"capture-{tag}.json", self.outdir / f"ready-{tag}"
        self.save_pcap(gn, f"injected-{tag}", batch)
        proc = self.spawn(
            f"capture-{tag}", "lab.guestside.capture", gn.iface, run_id, len(batch), out, ready, 120
        )
        self.wait_ready(proc, ready)
        traffic.inject(gn.host, batch, rate)
        return proc.result(180, out)
