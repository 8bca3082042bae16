"""Which QEMU accelerator to use: KVM only where it really runs guest code.

/dev/kvm existing is not enough: under nested virtualization it can exist and
hang the guest. KVM is chosen only if the CPU advertises vmx or svm, /dev/kvm
opens, and a bounded probe sees SeaBIOS print through QEMU's debug console
under KVM (so guest code really executed). Everything else means TCG.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

PROBE_TIMEOUT_S = 10.0
QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Accel:
    # "kvm", "tcg", or "tcg-single": TCG with one host thread for every vCPU (QEMU's
    # -accel tcg,thread=single), which rules out a vCPU running code another vCPU is
    # rewriting at that very moment (the 6.12 text-patching question).
    name: str
    reason: str

    @property
    def vng_args(self) -> list[str]:
        return [] if self.name == "kvm" else ["--disable-kvm"]

    @property
    def qemu_args(self) -> list[str]:
        """QEMU options of its own (vng chooses no accelerator once KVM is disabled)."""
        return ["-accel", "tcg,thread=single"] if self.name == "tcg-single" else []


def cpu_has_virt(cpuinfo: str) -> bool:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return "vmx" in flags or "svm" in flags
    return False


def probe_kvm(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Boot SeaBIOS under KVM; True once it prints, False on silence or error."""
    argv = [
        QEMU, "-accel", "kvm", "-machine", "pc", "-nodefaults", "-display", "none",
        "-m", "64", "-chardev", "stdio,id=dbg", "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        out = proc.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
    except OSError:
        return False
    return b"SeaBIOS" in out


def detect(cpuinfo_path: Path = Path("/proc/cpuinfo"), dev: Path = Path("/dev/kvm")) -> Accel:
    if not cpu_has_virt(cpuinfo_path.read_text()):
        return Accel("tcg", "cpu has no vmx/svm flag")
    if not os.access(dev, os.R_OK | os.W_OK):
        return Accel("tcg", f"{dev} missing or not accessible")
    if not probe_kvm():
        return Accel("tcg", f"KVM probe did not run guest code within {PROBE_TIMEOUT_S:.0f}s")
    return Accel("kvm", "vmx/svm present and the KVM probe ran")


def choose(override: str | None) -> Accel:
    """``--accel`` wins; otherwise detect."""
    if override in ("kvm", "tcg", "tcg-single"):
        return Accel(override, "--accel")
    if override not in (None, "auto"):
        raise ValueError(f"--accel must be kvm, tcg, tcg-single or auto, not {override!r}")
    return detect()
