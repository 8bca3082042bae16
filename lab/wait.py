"""The one way the lab waits for something: poll a condition until it holds or time runs out.

Standard library only: guest-side programs may use it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from lab import LabError

T = TypeVar("T")


class WaitTimeout(LabError):
    """A condition did not hold in time; the message says what was awaited."""


def wait_until(
    cond: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
    failed: Callable[[], str | None] | None = None,
) -> T:
    """Calls ``cond`` until it returns something truthy, and returns that.

    ``failed``, if given, is checked on each round: a message from it ends the
    wait at once (the awaited thing can no longer happen: a process exited).
    A timeout raises WaitTimeout naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if failed is not None and (why := failed()):
            raise LabError(f"{what}: {why}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)
