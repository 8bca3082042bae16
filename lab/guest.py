"""Stage 3, boot: virtme-ng guests with the lab's NICs, and their lifecycle.

``build_argv`` is the whole vng command line as a list (pure, unit-tested,
printed shell-quoted with ``--dry-run``). ``Guest`` checks the kernel's
config, boots it under pexpect, waits for the shell, hands out the
``Console``, collects the kernel log and powers off. Guest networking is
``lab.guestnet``'s.

A boot is watched: a kernel that prints nothing for ``STALL_S`` before it
starts init has stalled (seen here: about one boot in four under TCG stopped
at guest time 1.5 s, after "VFS: Dquot-cache hash table entries", and
printed nothing more). That is an infrastructure event, not a finding about
the code under test: the guest is killed and booted once more, and the retry
is recorded (guest.json, and through it summary.json and the matrix). Once
init runs, userspace may be silent for long (a KASAN kernel under TCG, two
guests booting at once): only the boot timeout applies.

A boot whose kernel reported a bug before its shell came up (seen here: a
KASAN "wild-memory-access in do_raw_spin_lock" from an interrupt during
identify_cpu at guest time 1.3 s, once in many 6.12-kasan boots) is retried
the same way, for a second reason: such a guest can no longer judge NTA. The
report taints the kernel, which turns lockdep off for good, so the module's
locking bugs would go unreported (KASAN itself goes on reporting: see
``KASAN_APPEND``). The report is not NTA's either: nothing of the lab's runs
in the kernel yet. The retry records the report's title; a kernel that
reports a bug on every boot is a boot error that names it. Nothing after the
shell is up is ever retried.

The console's shell is bash without rc files (``GUEST_SHELL``): the guest
runs the host's userspace, and the host user's ~/.bashrc (a pyenv set-up,
say) is neither the lab's to depend on nor cheap under TCG.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

import pexpect

from lab import InfraError, LabError, kconfig, kernlog, paths
from lab.accel import Accel
from lab.console import Console, clean
from lab.images import Kernel
from lab.nics import HostEnd, NicPlan, NicVariant, plan
from lab.records import RETRIED_LOG, BootAttempt, BootOutcome, GuestInfo

# bash's prompt once the guest's shell is up (vng logs in as the host user).
PROMPT = r"[#$] $"
# The kernel's line as it starts init: from here on a silence is not a stall.
INIT_STARTED = " as init process"
GUEST_SHELL = """#!/bin/bash
# The guest console's shell (virtme-ng's --shell): bash without the host
# user's rc files. Written by ntalab for each guest.
exec /bin/bash --noprofile --norc -i
"""
BOOT_TIMEOUT = {"kvm": 90.0, "tcg": 300.0, "tcg-single": 600.0}
# Seconds without a byte on the console before the kernel starts init: a
# stalled boot. The longest silence of a good boot seen here under TCG, two guests
# booting at once on 2 cores, is recorded in guest.json (max_silence_s).
STALL_S = {"kvm": 20.0, "tcg": 60.0, "tcg-single": 120.0}
BOOT_ATTEMPTS = 2
# A KASAN kernel reports only its first bug unless told otherwise; a guest runs
# many tests on one boot, and each test's reports are its own (KUnit's KASAN
# tests turn multi-shot on for the same reason).
KASAN_APPEND = "kasan_multi_shot"


class GuestBootError(InfraError):
    """The guest never reached its shell: the lab could not run, NTA not loaded yet."""


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
    qemu_opts: tuple[str, ...] = ()  # more QEMU arguments (the benchmark's user-mode NIC)


def vng_binary() -> str:
    """vng from the interpreter's venv first: the lab's own pinned virtme-ng."""
    local = Path(sys.executable).parent / "vng"
    found = str(local) if local.exists() else shutil.which("vng")
    if found is None:
        raise InfraError("virtme-ng's vng is not installed: run 'make deps'")
    return found


def vng_env() -> dict[str, str]:
    """vng runs its sibling scripts (virtme-run) through PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def build_argv(
    spec: GuestSpec, nics: Sequence[NicPlan], vng: str = "vng", shell: Path | None = None
) -> list[str]:
    qemu_opts = [arg for nic in nics for arg in nic.qemu_args()] + list(spec.qemu_opts)
    qemu_opts += spec.accel.qemu_args
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
    if shell is not None:
        argv += ["--shell", str(shell)]
    if qemu_opts:
        argv.append(f"--qemu-opts={shlex.join(qemu_opts)}")
    return argv


class ConsoleLog:
    """The run's console log: every byte the guest prints, when it last printed, its tail.

    pexpect writes what it reads here (``logfile_read``); the boot watchdog
    reads ``last_output``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("w", encoding="utf-8", errors="replace")
        self.last_output = time.monotonic()
        self.max_silence = 0.0
        self.init_started = False  # the kernel printed INIT_STARTED
        self._edge = ""  # the end of the text so far: a line may come in pieces

    def write(self, text: str) -> None:
        now = time.monotonic()
        self.max_silence = max(self.max_silence, now - self.last_output)
        self.last_output = now
        self.file.write(text)
        if not self.init_started:
            seen = self._edge + text
            self.init_started = INIT_STARTED in seen
            self._edge = seen[-len(INIT_STARTED) :]

    def flush(self) -> None:
        self.file.flush()

    def silence(self) -> float:
        return time.monotonic() - self.last_output

    def longest_silence(self) -> float:
        """Including the one still going on (a stall's)."""
        return max(self.max_silence, self.silence())

    def text(self) -> str:
        """Everything printed so far, terminal noise removed."""
        self.file.flush()
        return clean(self.path.read_text(encoding="utf-8", errors="replace"))

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def close(self) -> None:
        self.file.close()


class Guest:
    """A booted guest. Use as a context manager; everything is torn down on exit.

    ``launcher`` replaces vng (tests boot a fake guest that stalls on purpose).
    """

    def __init__(
        self,
        spec: GuestSpec,
        outdir: Path,
        boot_timeout: float | None = None,
        stall_s: float | None = None,
        launcher: Sequence[str] | None = None,
    ) -> None:
        self.boot_timeout = boot_timeout or BOOT_TIMEOUT[spec.accel.name]
        self.stall_s = stall_s or STALL_S[spec.accel.name]
        # Checked before anything boots: a kernel that lacks what the lab
        # needs is named with everything it lacks.
        self.features: kconfig.Features = spec.kernel.features([v.driver for v in spec.nics])
        if self.features.kasan and KASAN_APPEND not in spec.append:
            spec = replace(spec, append=(*spec.append, KASAN_APPEND))
        self.spec = spec
        self._sockdir = Path(tempfile.mkdtemp(prefix="ntalab-"))  # unix paths must be short
        self.nics = plan(spec.nics, self._sockdir, spec.guest_no)
        # The host ends of the NICs, bound before QEMU starts sending to them.
        self.host_ends: list[HostEnd] = []
        self._own_launcher = launcher is not None
        # The guest writes its kernel log and results straight into outdir.
        self.outdir = outdir.resolve()
        writable = replace(spec, rwdirs=(*spec.rwdirs, self.outdir))
        self.outdir.mkdir(parents=True, exist_ok=True)
        shell = self.outdir / "guest-shell"
        shell.write_text(GUEST_SHELL)
        shell.chmod(0o755)
        self.argv = (
            [*launcher] if launcher else build_argv(writable, self.nics, vng_binary(), shell)
        )
        self.console_log = ConsoleLog(self.outdir / "console.log")
        self.child: pexpect.spawn[str] | None = None
        self.console: Console | None = None
        self.attempts: list[BootAttempt] = []
        self.info: GuestInfo | None = None
        self._scanned: dict[Path, tuple[int, int]] = {}  # log -> (bytes, lines) scanned

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

    @property
    def boot_seconds(self) -> float:
        return self.attempts[-1].seconds if self.attempts else 0.0

    def boot(self) -> None:
        (self.outdir / "vng-argv.txt").write_text(shlex.join(self.argv) + "\n")
        self._record_qemu_command()
        self.host_ends = [HostEnd(nic) for nic in self.nics]
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            result = self._boot_once()
            self.attempts.append(result)
            if result.outcome is BootOutcome.OK:
                break
            self._kill()
            if not result.outcome.retried or attempt == BOOT_ATTEMPTS:
                self._record_guest("")
                raise GuestBootError(self._boot_failure(result))
            # Keep the failed attempt's log; the retry writes a new console.log.
            self.console_log.close()
            kept = self.outdir / f"console-{RETRIED_LOG[result.outcome]}-{attempt}.log"
            self.console_log.path.rename(kept)
            self.attempts[-1] = replace(result, console_log=kept.name)
            self.console_log = ConsoleLog(self.outdir / "console.log")
        self.console = Console(
            self.child_or_fail(), self.console_log.file, self.console_log, self._stuck_report
        )
        self.console.setup()
        self._watch_kernel()
        self._record_guest(self.sh.run("uname -r").stdout.strip())

    def _watch_kernel(self) -> None:
        """Stream the kernel log into the results as it is written, and let it name stuck tasks.

        The console's shell is what hangs when the kernel does, so the log must
        already be on its way out: kmsg.log grows while the guest runs. Blocked
        tasks are reported after 20 s (not Debian's 120) and SysRq is enabled
        so that a stuck command can ask for every blocked task's stack.
        """
        self.sh.run(
            "sysctl -qw kernel.sysrq=1 kernel.hung_task_timeout_secs=20 2>/dev/null; "
            f"cat /dev/kmsg > {shlex.quote(str(self.kmsg_log))} 2>/dev/null &"
        )

    @property
    def kmsg_log(self) -> Path:
        return self.outdir / "kmsg.log"

    def new_splats(self) -> list[kernlog.Splat]:
        """Splats in what the kernel logged (kmsg.log) and the console printed since the last
        call. Both files only grow, so each call reads on from where the last one stopped
        (whole lines only): a splat is reported once, by the test during which it came.
        A console round trip first gives the guest's stream time to catch up."""
        self.sh.run("true")
        self.console_log.flush()
        found = []
        for path, convert in ((self.kmsg_log, kernlog.kmsg_text), (self.console_log.path, clean)):
            if not path.is_file():
                continue
            offset, lines = self._scanned.get(path, (0, 0))
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            data = data[: data.rfind(b"\n") + 1]
            text = convert(data.decode("utf-8", errors="replace"))
            found += [s.shifted(lines) for s in kernlog.scan(text, str(path))]
            self._scanned[path] = (offset + len(data), lines + data.count(b"\n"))
        return found

    def _stuck_report(self) -> str:
        """A stuck command's context: SysRq w (blocked tasks) and l (CPU backtraces)."""
        with contextlib.suppress(OSError, pexpect.ExceptionPexpect):
            self.sh.monitor("sendkey alt-sysrq-w")
            self.sh.monitor("sendkey alt-sysrq-l")
            # A failed command's path only: nothing says when the kernel is done
            # printing what SysRq asked for, and a stuck guest may never be.
            time.sleep(5)
        with contextlib.suppress(OSError):
            lines = self.kmsg_log.read_text(errors="replace").splitlines()
            return "\nkernel log tail (kmsg.log):\n" + "\n".join(
                line.partition(";")[2] or line for line in lines[-80:]
            )
        return ""

    def child_or_fail(self) -> pexpect.spawn[str]:
        if self.child is None:
            raise LabError("guest is not running")
        return self.child

    def _boot_once(self) -> BootAttempt:
        """Start the guest and wait for its shell, watching for silence."""
        start = time.monotonic()
        self.console_log.last_output = start
        self.child = pexpect.spawn(
            self.argv[0], self.argv[1:], cwd=str(paths.IMPORT_ROOT), encoding="utf-8",
            codec_errors="replace", dimensions=(50, 500), env=vng_env(),
        )  # fmt: skip
        self.child.logfile_read = self.console_log
        outcome = BootOutcome.OK
        while True:
            try:
                self.child.expect(PROMPT, timeout=min(5.0, self.stall_s))
                break
            except pexpect.EOF:
                outcome = BootOutcome.EXIT
                break
            except pexpect.TIMEOUT:
                log = self.console_log
                if log.silence() >= self.stall_s and not log.init_started:
                    outcome = BootOutcome.STALL
                    break
                if time.monotonic() - start >= self.boot_timeout:
                    outcome = BootOutcome.TIMEOUT
                    break
        text = self.console_log.text()
        # The console has every kernel message up to debug (vng boots with
        # loglevel=7), so a report made while booting is in it.
        splats = kernlog.scan(text, self.console_log.path.name) if outcome is BootOutcome.OK else []
        tail = text.splitlines()[-3:]
        return BootAttempt(
            outcome=BootOutcome.SPLAT if splats else outcome,
            seconds=round(time.monotonic() - start, 1),
            last_line=tail[-1] if tail else "",
            max_silence_s=round(self.console_log.longest_silence(), 1),
            console_log=self.console_log.path.name,
            splat=splats[0].name if splats else "",
        )

    def _boot_failure(self, a: BootAttempt) -> str:
        what = {
            BootOutcome.STALL: f"stalled: printed nothing for {self.stall_s:.0f}s before it "
            f"started init (and on the {len(self.attempts) - 1} attempt(s) before)",
            BootOutcome.SPLAT: "reported a kernel bug while booting, before any test ran, on "
            f"every attempt ({len(self.attempts)}): {a.splat}",
            BootOutcome.TIMEOUT: f"was not up within {self.boot_timeout:.0f}s",
            BootOutcome.EXIT: "exited before its shell came up",
        }[a.outcome]
        return (
            f"guest {self.spec.name} ({self.spec.kernel.name}) {what}; "
            f"console log {self.console_log.path}; tail:\n{self.console_log.tail()}"
        )

    def _record_guest(self, release: str) -> None:
        """What ran, for the report: kernel, NICs, accelerator, every boot attempt."""
        self.info = GuestInfo(
            name=self.spec.name,
            kernel=self.spec.kernel.name,
            release=release,
            nics=[n.variant.name for n in self.nics],
            accel=self.spec.accel.name,
            accel_reason=self.spec.accel.reason,
            append=list(self.spec.append),
            boot_s=self.boot_seconds,
            attempts=list(self.attempts),
        )
        self.info.save(self.outdir / "guest.json")

    def _record_qemu_command(self) -> None:
        """The exact QEMU command vng runs, for reproduction."""
        if self._own_launcher:
            return
        proc = subprocess.run(
            [*self.argv, "--dry-run"],
            cwd=paths.IMPORT_ROOT,
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

    def save_dmesg(self, name: str = "dmesg.log") -> Path:
        """The whole kernel log, written by the guest straight into the results dir."""
        path = self.outdir / name
        self.sh.run(f"dmesg > {shlex.quote(str(path))}", timeout=60)
        return path

    def _kill(self) -> None:
        if self.child is not None:
            with contextlib.suppress(OSError, pexpect.ExceptionPexpect):
                self.child.terminate(force=True)
            with contextlib.suppress(OSError, pexpect.ExceptionPexpect):
                self.child.close()
            self.child = None

    def close(self) -> None:
        """Save the kernel log and power off; kill QEMU if it does not go. Never raises."""
        if self.child is not None and self.child.isalive():
            with contextlib.suppress(LabError, OSError, pexpect.ExceptionPexpect):
                if self.console is not None:
                    self.save_dmesg()
                    self.console.send_raw("poweroff -f")
                self.child.expect(pexpect.EOF, timeout=30)
        self._kill()
        self.console = None
        for end in self.host_ends:
            end.close()
        self.host_ends = []
        self.console_log.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)
