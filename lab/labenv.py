"""The environment a lab test runs against: one booted guest, its NICs, its results dir.

Tests read as plain steps against it (inject, capture, read counters); it
keeps every artefact a failure needs to be replayed (the injected pcaps,
the console and kernel logs, the exact vng/QEMU command) in ``outdir``.
"""

from __future__ import annotations

import json
import random
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import REPO, LabError, traffic
from lab.guest import Guest, GuestNic
from lab.images import Kernel


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

    def new_run_id(self) -> int:
        return self._rng.randrange(1, 1 << 32)

    @staticmethod
    def addrs(gn: GuestNic) -> traffic.Addresses:
        return traffic.Addresses.of(gn.plan)

    def guest_python(self, module: str, *args: object) -> str:
        """A command line that runs one of the lab's Python modules in the guest.

        The guest sees the host's filesystem, so the host's interpreter and the
        repository work there unchanged. One simple command (``env -C``, not
        ``cd &&``), so that run in the background its pid is the program's.
        The lab's own guest-side programs use the standard library only, so
        they skip site-packages (-S): Python starts in seconds under TCG.
        """
        flags = ["-S"] if module.startswith("lab.guestside.") else []
        argv = [sys.executable, *flags, "-m", module, *map(str, args)]
        return shlex.join(["env", "-C", str(REPO), *argv])

    def sniff_while(
        self,
        gn: GuestNic,
        run_id: int,
        batch: list[bytes],
        *pysniff_args: object,
        rate: float | None = None,
        count: int | None = None,
    ) -> dict[str, Any]:
        """Inject ``batch`` while pysniff reads it from NTA in the guest; its --json output.

        pysniff stops after ``count`` frames (default: the whole batch) or after
        its --duration, whichever the caller gave.
        """
        tag = f"nta-{gn.plan.variant.name}-{run_id}"
        out, ready = self.outdir / f"{tag}.json", self.outdir / f"ready-{tag}"
        self.save_pcap(gn, f"injected-{tag}", batch)
        args: list[object] = ["-i", gn.iface, "--json", "--ready-file", ready]
        args += ["--run-id", run_id, "--expect", len(batch), "--verify"]
        if count != 0:
            args += ["-c", count or len(batch)]
        cmd = self.guest_python("pysniff", *args, *pysniff_args) + f" >{out}"
        pid = self.guest.sh.bg(cmd, str(self.outdir / f"{tag}.log"))
        self.guest.sh.run(f"while [ ! -e {ready} ] && kill -0 {pid}; do sleep 0.1; done")
        traffic.inject(gn.host, batch, rate or gn.plan.variant.lossless_rate)
        rc = self.guest.sh.run(f"wait {pid}", timeout=300, check=False).rc
        log = (self.outdir / f"{tag}.log").read_text()
        if rc != 0:
            raise LabError(f"pysniff exited {rc} on {gn.iface}: {log[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def nta_stats(self) -> dict[str, Any]:
        """The module's counters, read through pysniff (ioctl NTA_IOC_STATS)."""
        # Generous: starting Python in a TCG guest on a loaded host can take a minute.
        out = self.guest.sh.run(
            self.guest_python("pysniff", "--stats", "--json"), timeout=180
        ).stdout
        stats: dict[str, Any] = json.loads(out)["stats_after"]
        return stats

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
        cmd = self.guest_python(
            "lab.guestside.capture", gn.iface, run_id, len(batch), out, ready, 120
        )
        pid = self.guest.sh.bg(cmd, str(self.outdir / f"capture-{tag}.log"))
        self.guest.sh.run(f"while [ ! -e {ready} ] && kill -0 {pid}; do sleep 0.1; done")
        traffic.inject(gn.host, batch, rate)
        self.guest.sh.run(f"wait {pid}", timeout=180)
        result: dict[str, object] = json.loads(out.read_text())
        return result
