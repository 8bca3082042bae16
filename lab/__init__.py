"""ntalab: a QEMU/virtme-ng integration lab for the NTA zero-copy sniffer module."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class LabError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback."""
