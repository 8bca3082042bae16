"""pysniff: the userspace reader of NTA's zero-copy, commit-back sniffer.

- ``pysniff.abi``: the mirror of kmod/nta_uapi.h (checked against it by a C probe).
- ``pysniff.reader.Reader``: maps /dev/nta, yields frames in place, commits them.
- ``pysniff.fake.FakeNta``: the module emulated in memory, for host-only tests.
- ``pysniff.cli``: ``python -m pysniff``, tcpdump-like, with --json for the lab.
- ``pysniff.signature``: the lab's frame signature and delivery tally.
"""
