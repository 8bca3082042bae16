"""The guest's serial console, driven with pexpect: the only place that owns it.

Commands run in the guest's shell with echo off and no prompt. Each command
is followed by two markers carrying a unique id: the first ends its stdout and
carries its exit code, the second ends its stderr (kept in a guest temp file
until then). Nothing waits on sleeps, and every call has a timeout. All bytes
the console prints, plus a ``# ntalab>`` line per command sent, go to the
console log of the run.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

import pexpect

from lab import LabError

# What bash prints when bracketed paste or other terminal modes flip.
_TERM_NOISE = re.compile(r"\x1b\[\?[0-9;]*[hl]|\r")


@dataclass(frozen=True)
class CmdResult:
    cmd: str
    rc: int
    stdout: str
    stderr: str
    elapsed: float


class CommandFailed(LabError):
    def __init__(self, result: CmdResult) -> None:
        self.result = result
        super().__init__(
            f"guest command failed ({result.rc}): {result.cmd}\n"
            f"stdout: {result.stdout.strip()[-2000:]}\nstderr: {result.stderr.strip()[-2000:]}"
        )


class ConsoleTimeout(LabError):
    pass


class GuestPanicked(ConsoleTimeout):
    """The guest's kernel panicked: nothing will ever answer on this console again."""


# The kernel's last line once it panicked (panic() prints it, then halts).
PANIC_END = r"---\[ end Kernel panic - not syncing: [^\r\n]*\]---"


def clean(text: str | None) -> str:
    return _TERM_NOISE.sub("", text or "")


class Console:
    def __init__(
        self,
        child: pexpect.spawn[str],
        log: TextIO,
        tail: TailSource | None = None,
        on_stuck: Callable[[], str] | None = None,
    ) -> None:
        self.child = child
        self.log = log
        self.tail = tail
        # Called when a command does not answer: what the guest's kernel says
        # about its blocked tasks, for the error (the shell itself is stuck).
        self.on_stuck = on_stuck
        self._ids = itertools.count(1)
        self._token = secrets.token_hex(3)
        # Set once the kernel panicked, or once a stuck command could not be
        # interrupted: every later command fails at once with it, instead of
        # each waiting out its timeout on a console that will not answer.
        self.panicked: ConsoleTimeout | None = None

    def setup(self, timeout: float = 30.0) -> None:
        """Quiet the shell once it is up: no echo, no prompt, kernel messages off the console.

        Oopses still reach the console (the kernel raises the console loglevel for
        them); everything else is read with dmesg. A dumb terminal keeps tools
        such as dmesg from colouring their output, and no pager waits for a key.
        """
        marker = f"@@ntalab-ready-{self._token}@@"
        self._send(
            "stty -echo; bind 'set enable-bracketed-paste off' 2>/dev/null; "
            "export TERM=dumb PAGER=cat SYSTEMD_PAGER=; "
            f"PS1=''; PS2=''; unset PROMPT_COMMAND; dmesg -n 1; echo {marker[:8]}''{marker[8:]}"
        )
        self._expect(re.escape(marker) + r"\r*\n", timeout, "shell setup")

    def run(self, cmd: str, timeout: float = 60.0, check: bool = True) -> CmdResult:
        n = f"{self._token}-{next(self._ids)}"
        err = f"/tmp/.ntalab-err-{n}"
        start = time.monotonic()
        self._send(
            f'{{ {cmd}\n}} </dev/null 2>{err}; echo "@@ntalab-out {n} $?@@"; '
            f'cat {err}; rm -f {err}; echo "@@ntalab-end {n}@@"'
        )
        self._expect(rf"@@ntalab-out {n} (\d+)@@\r*\n", timeout, cmd)
        stdout = clean(self.child.before)
        match = self.child.match
        assert isinstance(match, re.Match)
        rc = int(match.group(1))
        self._expect(rf"@@ntalab-end {n}@@\r*\n", timeout, cmd)
        result = CmdResult(cmd, rc, stdout, clean(self.child.before), time.monotonic() - start)
        # For whoever reads the log after a slow run: what each command took.
        self.log.write(f"# ntalab< rc {rc} in {result.elapsed:.1f}s\n")
        if check and rc != 0:
            raise CommandFailed(result)
        return result

    def bg(self, cmd: str, log: str) -> int:
        """Start ``cmd`` in the background (output to the guest path ``log``); its pid.

        For a simple command the pid is the program's own (the subshell execs
        it), so signals sent to it reach the program.
        """
        out = self.run(f"( {cmd} ) >{log} 2>&1 & echo $!").stdout.split()
        return int(out[-1])

    def send_raw(self, line: str) -> None:
        """A line the console does not wait on (poweroff)."""
        self._send(line)

    def monitor(self, command: str) -> None:
        """One QEMU monitor command, through the console's multiplexer (Ctrl-A c toggles)."""
        self.log.write(f"\n# ntalab monitor> {command}\n")
        self.child.send("\x01c")
        self.child.sendline(command)
        self.child.send("\x01c")

    def _send(self, line: str) -> None:
        self.log.write(f"\n# ntalab> {line}\n")
        self.log.flush()
        self.child.sendline(line)

    def _expect(self, pattern: str, timeout: float, what: str) -> None:
        if self.panicked is not None:
            raise self.panicked
        try:
            if self.child.expect([pattern, PANIC_END], timeout=timeout) == 1:
                self.panicked = GuestPanicked(
                    f"the guest's kernel panicked while running: {what}\n"
                    f"console tail:\n{self._tail()}"
                )
                raise self.panicked
        except pexpect.TIMEOUT:
            kernel = self.on_stuck() if self.on_stuck is not None else ""
            error = ConsoleTimeout(
                f"no answer from the guest within {timeout:.0f}s to: {what}\n"
                f"console tail:\n{self._tail()}{kernel}"
            )
            if not self._interrupt():
                self.panicked = ConsoleTimeout(
                    f"the console stopped answering at: {what} (Ctrl-C did not free it)"
                )
            raise error from None
        except pexpect.EOF:
            raise ConsoleTimeout(
                f"the guest went away while running: {what}\nconsole tail:\n{self._tail()}"
            ) from None

    def _interrupt(self) -> bool:
        """Free the shell from a command that does not return; whether it answers again.

        Without this, every later command queues behind the stuck one and times
        out in turn: one hung program would fail every scenario after it. Ctrl-C
        signals the shell's foreground job and flushes the lines typed ahead;
        a fresh marker shows the shell reads again. Background jobs never get it
        (they ignore SIGINT), so a scenario's own programs are not disturbed.
        """
        marker = f"@@ntalab-free-{self._token}-{next(self._ids)}@@"
        self.log.write("\n# ntalab> ^C (the command did not return)\n")
        try:
            for _ in range(2):
                self.child.send("\x03")
                self._send(f"echo {marker[:8]}''{marker[8:]}")
                if self.child.expect([re.escape(marker) + r"\r*\n", pexpect.TIMEOUT], 10) == 0:
                    return True
        except pexpect.EOF:
            pass
        return False

    def _tail(self) -> str:
        return self.tail.tail() if self.tail is not None else clean(self.child.before)[-3000:]


class TailSource(Protocol):
    def tail(self, lines: int = 40) -> str: ...
