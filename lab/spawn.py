"""The host side of ``lab.guestside.spawner``: start guest programs warm, wait for them.

One spawner runs per guest, started on first use. Its state directory lives
in the guest's results dir, which the guest writes through the shared
filesystem, so the host waits for pid and exit files by looking at them:
no console round trip per poll.
"""

from __future__ import annotations

import itertools
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import LabError
from lab.console import Console

FIFO = "/tmp/ntalab-spawner.fifo"
START_TIMEOUT = 180.0  # a cold Python importing everything, under TCG, on a loaded host


@dataclass
class GuestProc:
    """A program running in the guest: its pid there, its files here."""

    name: str
    pid: int
    out: Path
    log: Path
    rc_file: Path

    def poll(self) -> int | None:
        """Its exit status once it ended (128 + N for signal N), else None."""
        text = self.rc_file.read_text() if self.rc_file.exists() else ""
        return int(text) if text.strip() else None

    def result(self, timeout: float = 300.0, path: Path | None = None) -> dict[str, Any]:
        """Its JSON report (in ``path``, default its stdout) once it exited 0.

        Any other exit is an error that carries the end of its log.
        """
        rc = self.wait(timeout)
        if rc != 0:
            raise LabError(f"{self.name} exited {rc}: {self.log.read_text()[-2000:]}")
        report: dict[str, Any] = json.loads((path or self.out).read_text())
        return report

    def wait(self, timeout: float = 300.0) -> int:
        deadline = time.monotonic() + timeout
        while (rc := self.poll()) is None:
            if time.monotonic() > deadline:
                raise LabError(
                    f"{self.name} (pid {self.pid}) still running after {timeout:.0f}s; "
                    f"its log: {self.log.read_text()[-2000:] if self.log.exists() else '-'}"
                )
            time.sleep(0.05)
        return rc


class Spawner:
    def __init__(self, sh: Console, python: list[str], state: Path) -> None:
        self.sh = sh
        self.python = python  # the command line that runs ``python -m`` in the guest
        self.state = state
        self._ids = itertools.count()
        self._started = False

    def _start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        ready = self.state / "ready"
        ready.unlink(missing_ok=True)
        self.sh.run(f"rm -f {FIFO}; mkfifo {FIFO}")
        argv = [*self.python, "lab.guestside.spawner", FIFO, str(self.state)]
        self.sh.bg(shlex.join(argv), str(self.state / "spawner.log"))
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if time.monotonic() > deadline:
                log = (self.state / "spawner.log").read_text()[-2000:]
                raise LabError(f"the guest's spawner never got ready: {log}")
            time.sleep(0.1)
        self._started = True

    def close(self) -> None:
        """Stop the server (a guest powering off does it too); children run on."""
        if self._started:
            self.sh.run(f"kill {int((self.state / 'ready').read_text())}", check=False)
            self._started = False

    def spawn(self, name: str, module: str, *args: object, out: Path, log: Path) -> GuestProc:
        """``python -m module args`` in the guest, stdout to ``out`` and stderr to ``log``."""
        if not self._started:
            self._start()
        request = f"{name}-{next(self._ids)}"
        pid_file = self.state / f"{request}.pid"
        line = shlex.join([request, str(out), str(log), module, *map(str, args)])
        self.sh.run(f"printf '%s\\n' {shlex.quote(line)} > {FIFO}")
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            if time.monotonic() > deadline:
                raise LabError(f"the guest's spawner did not start {name}")
            time.sleep(0.02)
        pid = int(pid_file.read_text())
        return GuestProc(name, pid, out, log, self.state / f"{request}.rc")
