"""Runs inside a guest: a reader that looks at everything its mapping shows, not just its frames.

    python -m lab.guestside.poolscan --iface I --marker-hex H --frames N --other I

(``protocol.PoolScan``).

Attaches IFACE, reads and commits FRAMES frames (or until frames stop
coming), then searches every pool it maps (each device's it attached, as
meta.pools[] names them) whole: for MARKER (bytes that only
another reader's device received), and for 8-byte words that look like
kernel addresses, counted apart for the skb_shared_info area at the end of
each chunk (where the stack keeps its pointers) and everywhere else. It
also asks for OTHER_IFACE's counters, which it did not attach. Prints a
ScanReport.
"""

from __future__ import annotations

import re
import sys
import time

from lab.guestside import protocol
from lab.guestside.reports import ScanReport, dumps
from pysniff.errors import NoSuchInterface
from pysniff.reader import Reader

# SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) on x86_64 (6.1 and 6.12).
SHINFO = 320
# The top two bytes of a little-endian x86_64 kernel address are ff ff, and its
# third is at least 0x80 (the direct map, vmemmap, vmalloc, the kernel's text).
KERNEL_WORD = re.compile(rb"(?=[\x80-\xff]\xff\xff)")


def kernel_words(view: memoryview, chunk: int) -> tuple[int, int]:
    """(in shared-info areas, elsewhere): aligned words that look like kernel addresses."""
    data = bytes(view)
    inside = elsewhere = 0
    for m in KERNEL_WORD.finditer(data):
        start = m.start() - 5
        if start % 8 or data[start : start + 8] == b"\xff" * 8:
            continue
        if start % chunk >= chunk - SHINFO:
            inside += 1
        else:
            elsewhere += 1
    return inside, elsewhere


def main(argv: list[str]) -> int:
    req = protocol.PoolScan.from_argv(argv)
    marker, want = bytes.fromhex(req.marker_hex), req.frames
    with Reader([req.iface]) as r:
        protocol.ready()
        got, last = 0, None
        while got < want:
            # Bounds only: a count ends it when no frame is lost.
            timeout = protocol.FIRST_FRAME_S if last is None else protocol.IDLE_S
            if not r.wait(timeout):
                break
            for _ in r.frames():
                got += 1
                last = time.monotonic()
        r.commit()
        r.map_pools()  # a pool no frame named yet is searched too
        pools = [memoryview(m) for m in r.pool_maps if m is not None]
        hits = sum(bytes(view).count(marker) for view in pools)
        words = [kernel_words(view, r.meta.chunk_size) for view in pools]
        inside, elsewhere = sum(w[0] for w in words), sum(w[1] for w in words)
        pool_bytes = sum(len(view) for view in pools)
        for view in pools:
            view.release()
        try:
            r.dev_stats(req.other)
            other_refused = False
        except NoSuchInterface:
            other_refused = True
        report = ScanReport(
            frames=got,
            pool_bytes=pool_bytes,
            marker_hits=hits,
            kernel_words_shinfo=inside,
            kernel_words_elsewhere=elsewhere,
            other_dev_stats_refused=other_refused,
        )
    print(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
