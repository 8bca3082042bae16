"""pysniff: the userspace reader of NTA's zero-copy sniffer."""
