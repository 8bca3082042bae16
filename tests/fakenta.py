"""ntadump on pysniff's fake module, on the host: the C reader tested against the same fake
as the Python one.

``tests/data/fakenta/preload.c`` (an LD_PRELOAD library) gives ntadump the
fake reader's memory when it opens ``FAKE_PATH`` and sends its ioctl(),
poll() and close() on that file here, where a thread answers each with the
``FakeDevice`` (which checks every commit as the module does). Frames come
as the fake delivers them: queued, ``burst`` at a time, at each poll.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lab import kbuild
from pysniff.fake import FakeDevice, FakeNta
from tests.conftest import missing

PRELOAD_C = Path(__file__).parent / "data" / "fakenta" / "preload.c"
KMOD = Path(__file__).resolve().parents[1] / "kmod"
FAKE_PATH = "/nonexistent/fake-nta"  # never opened for real: a miss says "no ... loaded?"
_MSG = struct.Struct("<IIiI512s")  # struct fake_msg
_REPLY = struct.Struct("<ii512s")  # struct fake_reply
_IOCTL, _POLL, _CLOSE = 1, 2, 3


def build_preload(out: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        missing("gcc not found: ntadump's host tests build it")
    lib = out / "fakenta.so"
    argv = [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(lib)]
    built = subprocess.run([*argv, str(PRELOAD_C), "-ldl"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return lib


def build_ntadump(out: Path, change: tuple[str, str] | None = None) -> Path:
    """ntadump as the lab builds it (warnings are errors); ``change`` plants a bug first:
    (text in ntadump.c, what replaces it)."""
    if shutil.which("gcc") is None:
        missing("gcc not found: ntadump's host tests build it")
    src = KMOD
    if change is not None:
        src = out / "kmod"
        (src / "ntadump").mkdir(parents=True)
        shutil.copy(KMOD / "nta_uapi.h", src)
        text = (KMOD / "ntadump" / "ntadump.c").read_text()
        assert text.count(change[0]) == 1, f"the planted change must match once: {change[0]!r}"
        (src / "ntadump" / "ntadump.c").write_text(text.replace(*change))
    return kbuild.build_ntadump(src=src, root=out).program


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: bytes
    stderr: str
    closed: bool  # ntadump closed its reader (the module would take back what it held)


class Ntadump:
    """ntadump running on a new reader of ``nta``; a context manager that kills it on exit.

    ``soon(fn)`` runs ``fn`` in the thread that answers ntadump, before it
    answers one of ntadump's polls (one function per poll, in order), so the
    fake is only ever touched by one thread while ntadump runs, and ntadump
    sees what ``fn`` did once that poll returns.
    """

    def __init__(
        self,
        program: Path,
        preload: Path,
        nta: FakeNta,
        args: Sequence[str],
        *,
        stdout: int = subprocess.PIPE,
    ) -> None:
        self.dev: FakeDevice = nta.open()
        self.closed = False
        self.error: BaseException | None = None
        self._todo: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            **os.environ, "LD_PRELOAD": str(preload), "FAKENTA_PATH": FAKE_PATH,
            "FAKENTA_MEMFD": str(self.dev.fd), "FAKENTA_LINK": str(theirs.fileno()),
        }  # fmt: skip
        self.proc = subprocess.Popen(
            [str(program), "-D", FAKE_PATH, *args], env=env, stdout=stdout,
            stderr=subprocess.PIPE, pass_fds=(self.dev.fd, theirs.fileno()),
        )  # fmt: skip
        theirs.close()  # ntadump holds the only other end: its exit ends the thread
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def soon(self, fn: Callable[[], object]) -> None:
        self._todo.put(fn)

    def _serve(self) -> None:
        try:
            while msg := self._ours.recv(_MSG.size):
                op, request, timeout_ms, length, data = _MSG.unpack(msg)
                if op == _POLL and not self._todo.empty():
                    self._todo.get()()
                self._ours.send(self._answer(op, request, timeout_ms, length, data))
        except BaseException as e:  # re-raised in wait(): a thread's error is otherwise lost
            self.error = e
            self.proc.kill()

    def _answer(self, op: int, request: int, timeout_ms: int, length: int, data: bytes) -> bytes:
        if op == _POLL:
            events = self.dev.poll(None if timeout_ms < 0 else timeout_ms)
            return _REPLY.pack(int(events), 0, b"")
        if op == _CLOSE:
            self.closed = True
            return _REPLY.pack(0, 0, b"")
        if op != _IOCTL:
            raise ValueError(f"unknown request {op} from the preload library")
        arg = bytearray(data[:length])
        try:
            self.dev.ioctl(request, arg)
        except OSError as e:
            return _REPLY.pack(-1, e.errno or 0, b"")
        return _REPLY.pack(0, 0, bytes(arg))

    def wait(self, timeout: float = 30) -> Finished:
        out, err = self.proc.communicate(timeout=timeout)
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return Finished(self.proc.returncode, out or b"", err.decode(), self.closed)

    def __enter__(self) -> Ntadump:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._thread.join(5)
        self._ours.close()
