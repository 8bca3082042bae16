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
    gn = lab_env.nics[0]
    run_id = lab_env.new_run_id()
    batch = traffic.frames(run_id, FRAMES, lab_env.addrs(gn), ("udp4", "tcp6"), seed=run_id)
    ready = lab_env.outdir / f"ready-afpacket-{run_id}"
    out = lab_env.outdir / f"afpacket-{run_id}.json"
    cmd = lab_env.guest_python("lab.guestside.afpacket", gn.iface, FRAMES, 120, ready)
    pid = lab_env.guest.sh.bg(f"{cmd} >{out}", str(lab_env.outdir / f"afpacket-{run_id}.log"))
    lab_env.guest.sh.run(f"while [ ! -e {ready} ] && kill -0 {pid}; do sleep 0.1; done")

    traffic.inject(gn.host, batch, gn.plan.variant.lossless_rate)

    lab_env.guest.sh.run(f"wait {pid}", timeout=180)
    got = json.loads(out.read_text())
    assert (got["frames"], got["kernel_drops"]) == (FRAMES, 0)
    assert got["bytes"] == sum(map(len, batch))
    assert got["crc_sum"] == sum(map(zlib.crc32, batch))
