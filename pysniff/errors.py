"""The errors pysniff raises: each says what went wrong and what to do about it."""

from __future__ import annotations


class SniffError(Exception):
    """A problem the user can act on; the CLI prints it as one line and exits 1."""


class DeviceMissing(SniffError):
    """/dev/nta does not exist: the module is not loaded."""


class PermissionDenied(SniffError):
    """/dev/nta exists but this user may not open it (it is root's, mode 0600)."""


class AbiMismatch(SniffError):
    """The module speaks another ABI than this pysniff mirrors."""


class NoSuchInterface(SniffError):
    """An interface name or index that does not exist, or that NTA cannot attach."""


class OutputError(SniffError):
    """The capture's output cannot be written (its reader went away, the disk is full)."""


class FilterError(SniffError):
    """A filter expression that does not compile, or a program the module refuses."""
