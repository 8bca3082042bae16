"""The OS layer under the Reader: open, mmap, poll, ioctl and write on /dev/nta.

The Reader only talks to a ``Device``. ``OsDevice`` is the real character
device; ``pysniff.fake.FakeNta`` hands out devices that emulate the module in
memory, so the Reader's logic (ring walking, batching, commit accounting) is
tested on a host with no module and no root.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import fcntl
import mmap
import os
import select
from typing import Protocol

from pysniff.errors import DeviceMissing, PermissionDenied, SniffError

DEFAULT_PATH = "/dev/nta"


class Events(enum.IntFlag):
    """What poll() on /dev/nta reported."""

    NONE = 0
    IN = select.POLLIN  # records are due (struct nta_wakeup's rule)
    ERR = select.POLLERR
    HUP = select.POLLHUP  # every device the reader attached is gone


_REPORTED = Events.IN | Events.ERR | Events.HUP


class _PollFd(ctypes.Structure):
    _fields_ = (("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short))


# libc's poll(), called directly: CPython's select.poll reads the clock on every call
# with a timeout (to resume after a signal), and in a guest whose clock has no vDSO
# (TCG: HPET) each read is a system call, as many as the polls themselves.
_libc = ctypes.CDLL(None, use_errno=True)
_poll = _libc.poll
_poll.argtypes = (ctypes.POINTER(_PollFd), ctypes.c_ulong, ctypes.c_int)
_poll.restype = ctypes.c_int


class Device(Protocol):
    """What the Reader needs from /dev/nta. Errors are OSErrors with the kernel's errno."""

    def map(self, offset: int, size: int, writable: bool) -> mmap.mmap:
        """A MAP_SHARED mapping of ``size`` bytes at mmap offset ``offset``."""
        ...

    def poll(self, timeout_ms: int | None) -> Events:
        """Wait for POLLIN (records due), POLLHUP or POLLERR; Events.NONE on timeout."""
        ...

    def ioctl(self, request: int, arg: bytearray) -> None:
        """ioctl with a buffer argument, which the call may fill in."""
        ...

    def write(self, data: bytes | bytearray) -> int:
        """write(2): the byte count the module returned."""
        ...

    def close(self) -> None: ...


class OsDevice:
    """The character device itself."""

    def __init__(self, path: str = DEFAULT_PATH) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DeviceMissing(
                f"{path} does not exist: is the nta module loaded? (modprobe nta, or insmod nta.ko)"
            ) from None
        except PermissionError:
            raise PermissionDenied(
                f"no permission to open {path}: it is root's (mode 0600); run as root"
            ) from None
        except OSError as e:
            raise SniffError(f"cannot open {path}: {e.strerror}") from None
        self._pollfd = _PollFd(self.fd, select.POLLIN, 0)

    def map(self, offset: int, size: int, writable: bool) -> mmap.mmap:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(self.fd, size, mmap.MAP_SHARED, prot, offset=offset)

    def poll(self, timeout_ms: int | None) -> Events:
        """One poll() system call; a signal ends it (EINTR) so the caller sees its flag."""
        ready = _poll(ctypes.byref(self._pollfd), 1, -1 if timeout_ms is None else timeout_ms)
        if ready < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                return Events.NONE
            raise OSError(err, os.strerror(err))
        return Events(self._pollfd.revents & _REPORTED) if ready else Events.NONE

    def ioctl(self, request: int, arg: bytearray) -> None:
        # mutate_flag: the kernel's answer is copied back into ``arg``.
        fcntl.ioctl(self.fd, request, arg, True)

    def write(self, data: bytes | bytearray) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def is_refusal(e: OSError) -> bool:
    """write() answers EINVAL when it accepted no commit (or the length was bad)."""
    return e.errno == errno.EINVAL
