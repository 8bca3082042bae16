"""``python -m pysniff.bench``: what a frame costs the CLI's capture paths, on the fake.

Only the reader's side is timed, in this thread's CPU time (other processes
on a busy host do not count): between rounds the fake fills the ring and
takes the commits back, untimed (its producer is Python too, and would
dominate). Each path is the CLI's own code, and a round is one wakeup:
``--batch`` frames (the module's default wakeup is 256).

    bulk     count and CRC each frame in place (pysniff --bulk; the lab's benchmark)
    frames   a Frame each, counted (pysniff -q)
    pcap     a Frame each, written as pcap to /dev/null (pysniff -w)

``--pieces N`` publishes each frame in place as N chunks (a GRO-merged frame).
The numbers say what the Python side costs per frame; the module's own cost
is measured in the lab (``ntalab bench``).

    python -m pysniff.bench [--frames N] [--batch N] [--size BYTES] [--pieces N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

from pysniff.cli import Capture
from pysniff.fake import HEADROOM, FakeNta, ethernet
from pysniff.pcap import PcapWriter
from pysniff.reader import Reader

PATHS = ("bulk", "frames", "pcap")


def measure(path: str, frames: int, batch: int, size: int, pieces: int = 1) -> float:
    """CPU seconds per frame through ``path`` and the commit that follows it."""
    nta = FakeNta(node_count=64, node_pages=64, ring_entries=4096, max_shared=4096)
    wire = ethernet(bytes(size - 14))
    cut = -(-size // pieces)
    chain = tuple((HEADROOM, len(wire[k : k + cut])) for k in range(0, size, cut))
    spent = 0.0
    with Reader([1], nta.open()) as r, open(os.devnull, "wb") as out:
        cap = Capture({1: "lo"}, None, PcapWriter(out) if path == "pcap" else None, False)
        take = cap.take_bulk if path == "bulk" else cap.take_frames
        dev = nta.readers[0]
        while cap.frames < frames:
            for _ in range(min(batch, frames - cap.frames)):
                nta.deliver(1, wire, chain=chain)
            start = time.thread_time()
            r.commit()
            take(r, None)
            spent += time.thread_time() - start
            dev.drain()  # the module takes the commits: not the reader's time
    return spent / cap.frames


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pysniff.bench", description=__doc__)
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=256, help="frames per wakeup (at most 4096)")
    p.add_argument("--size", type=int, default=100, help="frame length in bytes")
    p.add_argument("--pieces", type=int, default=1, help="chunks per frame, in place")
    p.add_argument("--json", action="store_true", help="microseconds per frame, by path")
    args = p.parse_args(argv)
    if not 1 <= args.batch * args.pieces <= 4096:
        p.error("--batch x --pieces must fit the fake's 4096-entry ring")
    cost = {name: measure(name, args.frames, args.batch, args.size, args.pieces) for name in PATHS}
    if args.json:
        print(json.dumps({k: round(v * 1e6, 3) for k, v in cost.items()}))
    else:
        for name, seconds in cost.items():
            print(f"{name:8} {seconds * 1e6:7.3f} us/frame CPU  {1 / seconds:12,.0f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
