"""Guest programs started warm by ``lab.guestside.spawner``, as background processes.

One spawner runs per guest, started on first use. Its state directory lives
in the guest's results dir, which the guest writes through the shared
filesystem, so the host waits for pid, ready and exit files by looking at
them: no console round trip per poll.

A ``GuestProc`` is a context manager, as the kernel net selftest library's
``bkg()``: leaving the ``with`` (or the test that started it, see
``LabEnv.bkg``) stops a process still running, SIGTERM first, then SIGKILL.
A test that fails half-way never leaves a reader attached for the next one.
A program started with a ready file (``lab.guestside.protocol``) is waited
for with ``wait_ready``.
"""

from __future__ import annotations

import itertools
import secrets
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from lab import LabError
from lab.console import Console
from lab.guestside.spawner import NO_READY
from lab.wait import WaitTimeout, wait_until

START_TIMEOUT = 180.0  # a cold Python importing everything, under TCG, on a loaded host
READY_TIMEOUT = 120.0  # a program attaching, binding or starting to listen, under TCG
STOP_GRACE_S = 10.0

R = TypeVar("R")


@dataclass
class GuestProc:
    """A program running in the guest: its pid there, its files here."""

    name: str
    pid: int
    out: Path
    log: Path
    rc_file: Path
    sh: Console = field(repr=False)
    ready_file: Path | None = None  # $NTALAB_READY: the file it creates once ready

    def poll(self) -> int | None:
        """Its exit status once it ended (128 + N for signal N), else None."""
        text = self.rc_file.read_text() if self.rc_file.exists() else ""
        return int(text) if text.strip() else None

    def log_tail(self) -> str:
        return self.log.read_text()[-2000:] if self.log.exists() else "-"

    def wait(self, timeout: float = 300.0) -> int:
        wait_until(
            lambda: self.poll() is not None,
            timeout,
            f"{self.name} (pid {self.pid}) to exit (its log: {self.log})",
        )
        rc = self.poll()
        assert rc is not None
        return rc

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the program said it is ready (``protocol.ready()``); an error if it ended
        first."""
        if self.ready_file is None:
            raise LabError(f"{self.name} was started without a ready file: it cannot say")
        self.wait_file(self.ready_file, timeout, "be ready")

    def wait_file(self, path: Path, timeout: float = READY_TIMEOUT, what: str = "") -> None:
        """Until the program created ``path`` (a step it announces); an error if it ended
        first."""
        wait_until(
            path.exists,
            timeout,
            f"{self.name} to {what or 'create ' + path.name}",
            failed=self._ended,
        )

    def wait_line(self, line: str, timeout: float = 30.0) -> None:
        """Until its stderr (the log, written by the guest through 9p) has ``line``; an
        error if it ended first."""
        wait_until(
            lambda: self.log.exists() and line in self.log.read_text(),
            timeout,
            f"{line!r} from {self.name}",
            failed=self._ended,
        )

    def _ended(self) -> str | None:
        rc = self.poll()
        return None if rc is None else f"exited {rc}: {self.log_tail()}"

    def result(
        self, parse: Callable[[str], R], timeout: float = 300.0, path: Path | None = None
    ) -> R:
        """Its report (in ``path``, default its stdout), parsed, once it exited 0.

        Any other exit is an error that carries the end of its log.
        """
        rc = self.wait(timeout)
        if rc != 0:
            raise LabError(f"{self.name} exited {rc}: {self.log_tail()}")
        return parse((path or self.out).read_text())

    def signal(self, sig: str) -> None:
        self.sh.run(f"kill -{sig} {self.pid}", check=False)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after a grace period; its exit status. No-op once ended."""
        rc = self.poll()
        if rc is not None:
            return rc
        self.signal("TERM")
        try:
            return self.wait(STOP_GRACE_S)
        except WaitTimeout:
            self.signal("KILL")
            return self.wait(STOP_GRACE_S)

    def __enter__(self) -> GuestProc:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Spawner:
    """The guest's warm interpreter, started on first use; ``stop`` ends it and its children."""

    def __init__(self, sh: Console, python: list[str], state: Path) -> None:
        self.sh = sh
        self.python = python  # the command line that runs ``python -m`` in the guest
        self.state = state
        # In the guest's /tmp (a FIFO cannot live on the shared results dir);
        # named per spawner, so that two never read each other's requests.
        self.fifo = f"/tmp/ntalab-spawner-{secrets.token_hex(4)}.fifo"
        self._ids = itertools.count()
        self._pid: int | None = None

    def _start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        ready = self.state / "ready"
        ready.unlink(missing_ok=True)
        self.sh.run(f"rm -f {self.fifo}; mkfifo {self.fifo}")
        argv = [*self.python, "lab.guestside.spawner", self.fifo, str(self.state)]
        self.sh.bg(shlex.join(argv), str(self.state / "spawner.log"))
        log = self.state / "spawner.log"
        wait_until(ready.exists, START_TIMEOUT, f"the guest's spawner (log {log})", interval=0.1)
        self._pid = int(ready.read_text())

    def spawn(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        out: Path,
        log: Path,
        ready: bool = False,
    ) -> GuestProc:
        """``python -m module args`` in the guest, stdout to ``out`` and stderr to ``log``;
        with ``ready``, given a ready file to create (``GuestProc.wait_ready``)."""
        if self._pid is None:
            self._start()
        request = f"{name}-{next(self._ids)}"
        pid_file = self.state / f"{request}.pid"
        ready_file = self.state / f"{request}.ready" if ready else None
        line = shlex.join([request, str(out), str(log), str(ready_file or NO_READY), module, *args])
        self.sh.run(f"printf '%s\\n' {shlex.quote(line)} > {self.fifo}")
        wait_until(pid_file.exists, 30, f"the guest's spawner to start {name}", interval=0.02)
        pid = int(pid_file.read_text())
        return GuestProc(name, pid, out, log, self.state / f"{request}.rc", self.sh, ready_file)

    def stop(self) -> None:
        """Ends the spawner and every program it started still running (its process group)."""
        if self._pid is not None:
            self.sh.run(f"kill -TERM -- -{self._pid} 2>/dev/null; rm -f {self.fifo}", check=False)
            self._pid = None
