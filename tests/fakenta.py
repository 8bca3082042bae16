"""ntadump on pysniff's fake module, on the host: the C reader tested against the same fake
as the Python one.

``tests/data/fakenta/preload.c`` (an LD_PRELOAD library) gives ntadump the
fake reader's memory when it opens ``FAKE_PATH`` and sends its ioctl(),
poll() and close() on that file here, where a thread answers each with the
``FakeDevice`` (which checks every commit as the module does). Frames come
as the fake delivers them: queued, ``burst`` at a time, at each poll.

A pytest plugin of the host tests (tests/conftest.py): its fixtures
``preload`` and ``ntadump`` (the clean build) are built once a session. A
test module's checks each run ntadump and fail if it errs;
``planted_bugs_caught`` makes the test that shows each check fails on the
bug it guards, planted in ntadump.c.
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

import pytest

from lab import kbuild
from pysniff.fake import FakeDevice, FakeNta
from tests.conftest import missing

PRELOAD_C = Path(__file__).parent / "data" / "fakenta" / "preload.c"
KMOD = Path(__file__).resolve().parents[1] / "kmod"
FAKE_PATH = "/nonexistent/fake-nta"  # never opened for real: a miss says "no ... loaded?"
_MSG = struct.Struct("<IIiI512s")  # struct fake_msg
_REPLY = struct.Struct("<ii512s")  # struct fake_reply
_IOCTL, _POLL, _CLOSE = 1, 2, 3
WAIT_S = 10.0  # a run here takes well under a second; a planted bug may hang it ...
PLANTED_WAIT_S = 4.0  # ... so a run of a planted build is not waited for as long

# A check: runs ntadump (the program given) on the preload library, in a test's directory.
Check = Callable[[Path, Path, Path], None]
# A bug planted in ntadump.c: what it is, (its text, what replaces it), the check catching it.
Planted = tuple[str, tuple[str, str], Check]


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


@pytest.fixture(scope="session")
def preload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LD_PRELOAD library that puts ntadump on the fake."""
    return build_preload(tmp_path_factory.mktemp("fakenta"))


@pytest.fixture(scope="session")
def ntadump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ntadump as the lab builds it."""
    return build_ntadump(tmp_path_factory.mktemp("ntadump"))


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
    sees what ``fn`` did once that poll returns. ``wait_s`` is how long a run may
    take.
    """

    wait_s = WAIT_S

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

    def wait(self) -> Finished:
        out, err = self.proc.communicate(timeout=self.wait_s)
        self._thread.join(self.wait_s)
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


def planted_bugs_caught(planted: Sequence[Planted]) -> Callable[..., None]:
    """A test module's ``test_a_planted_bug_is_caught``: for each of ``planted``, ntadump
    built with the bug fails the check (an assertion, or a run that does not end); the
    module's ``preload`` fixture gives the preload library."""

    @pytest.mark.parametrize(("change", "check"), [p[1:] for p in planted],
                             ids=[p[0] for p in planted])  # fmt: skip
    def test_a_planted_bug_is_caught(
        change: tuple[str, str], check: Check, preload: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:  # fmt: skip
        monkeypatch.setattr(Ntadump, "wait_s", PLANTED_WAIT_S)
        program = build_ntadump(tmp_path / "planted", change)
        with pytest.raises((AssertionError, subprocess.TimeoutExpired)):
            check(program, preload, tmp_path)

    return test_a_planted_bug_is_caught
