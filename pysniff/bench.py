"""``python -m pysniff.bench``: packets/s of the reader's parse + commit paths, on the fake.

Only the reader's side is timed: the fake fills the ring between rounds
(its producer is Python too, and would dominate). The numbers say what the
Python side costs per frame; the module's own cost is measured in the lab.

    python -m pysniff.bench [--frames N] [--ring ENTRIES] [--size BYTES] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections.abc import Callable, Sequence

from pysniff.fake import FakeNta, ethernet
from pysniff.reader import Reader


def _simple(r: Reader) -> int:
    n = 0
    for _ in r.frames():
        n += 1
    return n


def _simple_crc(r: Reader) -> int:
    n = 0
    for f in r.frames():
        zlib.crc32(f.data)
        n += 1
    return n


def _bulk(r: Reader) -> int:
    return r.bulk().count


def _bulk_crc(r: Reader) -> int:
    b = r.bulk()
    crc = zlib.crc32
    sum(crc(v) for v in b.views())
    return b.count


PATHS: dict[str, Callable[[Reader], int]] = {
    "frames": _simple,
    "frames+crc": _simple_crc,
    "bulk": _bulk,
    "bulk+crc": _bulk_crc,
}


def measure(path: Callable[[Reader], int], frames: int, ring: int, size: int) -> float:
    """Packets per second through ``path`` followed by one commit of the batch."""
    nta = FakeNta(node_count=64, node_pages=max(1, ring // 64), ring_entries=ring)
    wire = ethernet(bytes(size - 14))
    spent, done = 0.0, 0
    with Reader([1], nta.open()) as r:
        while done < frames:
            for _ in range(min(ring, frames - done)):
                nta.deliver(1, wire)
            start = time.perf_counter()
            done += path(r)
            r.commit()
            spent += time.perf_counter() - start
    return done / spent


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pysniff.bench", description=__doc__)
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--ring", type=int, default=4096, help="ring entries (power of two)")
    p.add_argument("--size", type=int, default=64, help="frame length in bytes")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rates = {name: measure(fn, args.frames, args.ring, args.size) for name, fn in PATHS.items()}
    if args.json:
        print(json.dumps({k: round(v) for k, v in rates.items()}))
    else:
        for name, rate in rates.items():
            print(f"{name:12} {rate:12,.0f} packets/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
