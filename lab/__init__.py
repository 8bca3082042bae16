"""ntalab: a QEMU/virtme-ng integration lab for the NTA zero-copy sniffer module."""


class LabError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback and exits 1."""


class UsageError(LabError):
    """A bad argument (an unknown kernel, NIC or shard): the CLI exits 2, as argparse does."""
