"""ntalab: a QEMU/virtme-ng integration lab for the NTA zero-copy sniffer module.

The lab's errors and what each means for an exit status live here, in one
place: a CI system must tell a finding (exit 1) from the lab failing to run
(exit 3), which it retries, without reading any file.
"""

from enum import IntEnum


class ExitStatus(IntEnum):
    """``ntalab``'s exit status."""

    PASSED = 0  # done, every scenario passed
    FINDING = 1  # a scenario failed, or a replayed bundle reproduced its kernel report
    USAGE = 2  # bad usage (as argparse): an unknown option, kernel, NIC or shard
    LAB = 3  # the lab could not run: a guest did not boot, a build failed, a tool is missing
    INTERRUPTED = 130  # Ctrl-C or SIGTERM


class LabError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback.

    Raised in a scenario, it is the scenario's failure (a guest command that
    failed, a wait that ran out): a finding. Reaching the CLI, the lab could
    not do what it was asked (exit 3).
    """


class UsageError(LabError):
    """A bad argument (an unknown kernel, NIC or shard): exit 2, as argparse does."""


class InfraError(LabError):
    """The lab itself could not run, in a scenario too: a guest that did not boot, a kernel
    or module that did not build, a missing tool or kernel. Never a finding about NTA."""


def exit_status(error: BaseException) -> ExitStatus:
    """The exit status of a command that ended with ``error``: the one map from one to the
    other. Anything else than these is a bug of the lab's: it could not run (3)."""
    if isinstance(error, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(error, UsageError):
        return ExitStatus.USAGE
    return ExitStatus.LAB
