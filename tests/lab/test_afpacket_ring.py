"""The benchmark's AF_PACKET baseline reads every frame, byte-exact, from its ring."""

from __future__ import annotations

import json
import zlib

import pytest

from lab import traffic
from lab.labenv import LabEnv

FRAMES = 3000


@pytest.mark.lab
def test_tpacket_v3_ring_sees_every_frame(lab_env: LabEnv) -> None:
    gn = lab_env.guest.use_nic(lab_env.nics[0])
    run_id = lab_env.new_run_id()
    batch = traffic.frames(run_id, FRAMES, lab_env.addrs(gn), ("udp4", "tcp6"), seed=run_id)
    ready = lab_env.outdir / f"ready-afpacket-{run_id}"
    out = lab_env.outdir / f"afpacket-{run_id}.json"
    proc = lab_env.spawn(
        f"afpacket-{run_id}", "lab.guestside.afpacket", gn.iface, FRAMES, 120, ready, out=out
    )
    lab_env.wait_ready(proc, ready)

    traffic.inject(gn.host, batch, gn.plan.variant.lossless_rate)

    assert proc.wait(180) == 0, proc.log.read_text()
    got = json.loads(out.read_text())
    assert (got["frames"], got["kernel_drops"]) == (FRAMES, 0)
    assert got["bytes"] == sum(map(len, batch))
    assert got["crc_sum"] == sum(map(zlib.crc32, batch))
