"""``ntalab bench``: NTA's zero-copy sniffer against AF_PACKET, side by side, one guest.

Under one injected load, each sniffer runs in turn, round after round (A B A B),
so slow drift of a noisy host hits all of them alike:

- ``none``: no sniffer, the cost of receiving alone;
- ``afpacket``: a TPACKET_V3 mmap ring, what libpcap/tcpdump use, in Python;
- ``tcpdump``: ``tcpdump -w /dev/null`` itself, where the host has it;
- ``nta``: pysniff reading NTA's chunks in place and committing them.

When ``nta`` is among them, the module is loaded for the whole run and
serves the NIC's receive buffers under every sniffer: they differ only in
how frames reach userspace.

The Python sniffers do the same work per frame (a CRC32 over its bytes, read
in place), so they differ only by the path the bytes take. For each trial the
guest reports the sniffer's CPU time from the moment it was ready to its exit
and the softirq time of the whole guest; the table gives their medians over
the rounds, per million frames, and the ratio to AF_PACKET from the same run.
Under TCG, absolute times are emulated time: read the ratios. Debian's
kernels account softirq time by sampling at each tick (no
IRQ_TIME_ACCOUNTING), so the softirq column needs many frames per trial to
mean much; the sniffer's own CPU time is exact.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab import LabError, accel, images, kbuild, nics, traffic
from lab.guest import Guest, GuestNic, GuestSpec
from lab.labenv import LabEnv

SNIFFERS = ("none", "afpacket", "tcpdump", "nta")


@dataclass(frozen=True)
class Load:
    name: str
    frames: int
    rate: float | None  # None: as fast as the NIC takes them (e1000 back-pressure)


@dataclass(frozen=True)
class Trial:
    load: str
    sniffer: str
    round: int
    injected: int
    inject_rate: float
    rx: int
    delivered: int
    sniffer_cpu_s: float
    softirq_s: float
    busy_s: float  # guest CPU time not idle, all CPUs


def sniffer_argv(name: str, gn: GuestNic, count: int, ready: Path) -> list[str]:
    """The meter's arguments for one sniffer: how to wait for it, and its command."""
    py = [sys.executable, "-S"]  # both Python sniffers use the standard library only
    if name == "none":
        return []
    if name == "afpacket":
        cmd = [*py, "-m", "lab.guestside.afpacket", gn.iface, str(count), "600", str(ready)]
        return ["--wait-file", str(ready), "--", *cmd]
    if name == "tcpdump":
        tcpdump = shutil.which("tcpdump") or "tcpdump"
        cmd = [tcpdump, "-i", gn.iface, "-n", "-w", "/dev/null", "-c", str(count), "-B", "2048"]
        return ["--wait-line", "listening on", "--", *cmd]
    if name == "nta":
        cmd = [*py, "-m", "pysniff", "-i", gn.iface, "-c", str(count), "--json"]
        cmd += ["--ready-file", str(ready), "--bulk"]
        return ["--wait-file", str(ready), "--", *cmd]
    raise LabError(f"unknown sniffer {name!r}; known: {', '.join(SNIFFERS)}")


def delivered(name: str, report: dict[str, Any], rx: int) -> int:
    """How many frames the sniffer saw, from its own report."""
    if name == "none":
        return rx
    if name == "tcpdump":
        for line in str(report["stderr"]).splitlines():
            if line.endswith("packets captured"):
                return int(line.split()[0])
        raise LabError(f"tcpdump printed no capture count: {report['stderr']!r}")
    frames: int = json.loads(report["stdout"])["frames"]
    return frames


def run_trial(
    env: LabEnv, gn: GuestNic, sniffer: str, load: Load, rnd: int, batch: list[bytes]
) -> Trial:
    tag = f"bench-{load.name}-{sniffer}-{rnd}"
    ready, inner = env.outdir / f"{tag}.ready", env.outdir / f"{tag}.sniffer-ready"
    out = env.outdir / f"{tag}.json"
    argv = sniffer_argv(sniffer, gn, len(batch), inner)
    cmd = env.guest_python("lab.guestside.meter", ready, *argv) + f" >{out}"
    pid = env.guest.sh.bg(cmd, str(env.outdir / f"{tag}.log"))
    env.guest.sh.run(f"while [ ! -e {ready} ] && kill -0 {pid}; do sleep 0.05; done")
    rx0 = env.guest.rx_packets(gn.iface)
    sent = traffic.inject(gn.host, batch, load.rate)
    stats = f"/sys/class/net/{gn.iface}/statistics/rx_packets"
    # Wait (bounded) for the NIC to have it all and the sniffer to finish on its own.
    env.guest.sh.run(
        f"n=0; while [ $(cat {stats}) -lt {rx0 + len(batch)} ] && [ $n -lt 200 ]; "
        f"do sleep 0.05; n=$((n+1)); done; n=0; "
        f"while [ {sniffer} != none ] && kill -0 {pid} 2>/dev/null && [ $n -lt 60 ]; "
        f"do sleep 0.05; n=$((n+1)); done; kill -TERM {pid} 2>/dev/null; wait {pid}",
        timeout=120,
    )
    rx = env.guest.rx_packets(gn.iface) - rx0
    report: dict[str, Any] = json.loads(out.read_text())
    cpu = report["cpu_s"]
    return Trial(
        load=load.name,
        sniffer=sniffer,
        round=rnd,
        injected=sent.sent,
        inject_rate=round(sent.rate),
        rx=rx,
        delivered=delivered(sniffer, report, rx),
        sniffer_cpu_s=float(report["sniffer_cpu_s"]),
        softirq_s=float(cpu["softirq"]),
        busy_s=round(sum(v for k, v in cpu.items() if k not in ("idle", "iowait")), 3),
    )


def summarize(trials: list[Trial]) -> list[dict[str, Any]]:
    """Medians per (load, sniffer), costs per million frames, ratios to AF_PACKET."""
    rows: list[dict[str, Any]] = []
    for load in dict.fromkeys(t.load for t in trials):
        group = [t for t in trials if t.load == load]
        base_softirq = (
            statistics.median(t.softirq_s for t in group if t.sniffer == "none")
            if any(t.sniffer == "none" for t in group)
            else 0.0
        )
        per: dict[str, dict[str, Any]] = {}
        for sniffer in dict.fromkeys(t.sniffer for t in group):
            ts = [t for t in group if t.sniffer == sniffer]
            frames = statistics.median(t.delivered for t in ts) or 1
            cpu = statistics.median(t.sniffer_cpu_s for t in ts)
            softirq = statistics.median(t.softirq_s for t in ts)
            per[sniffer] = {
                "load": load,
                "sniffer": sniffer,
                "rounds": len(ts),
                "injected": statistics.median(t.injected for t in ts),
                "rate": statistics.median(t.inject_rate for t in ts),
                "delivered": frames,
                "drops": max(0, statistics.median(t.injected - t.delivered for t in ts)),
                "sniffer_cpu_s": cpu,
                "softirq_s": softirq,
                "sniffer_s_per_mframe": cpu / frames * 1e6,
                "total_s_per_mframe": (cpu + softirq - base_softirq) / frames * 1e6,
            }
        ref = per.get("afpacket")
        for row in per.values():
            row["ratio_to_afpacket"] = (
                round(row["total_s_per_mframe"] / ref["total_s_per_mframe"], 3)
                if ref and ref["total_s_per_mframe"] > 0 and row["sniffer"] != "none"
                else None
            )
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'load':<8} {'sniffer':<9} {'rate/s':>7} {'injected':>8} {'delivered':>9} {'drops':>6} "
        f"{'cpu s':>6} {'softirq s':>9} {'s/Mframe':>9} {'total s/Mf':>10} {'vs afpacket':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['ratio_to_afpacket']:.2f}x" if r["ratio_to_afpacket"] else "-"
        lines.append(
            f"{r['load']:<8} {r['sniffer']:<9} {r['rate']:>7.0f} {r['injected']:>8.0f} "
            f"{r['delivered']:>9.0f} {r['drops']:>6.0f} {r['sniffer_cpu_s']:>6.2f} "
            f"{r['softirq_s']:>9.2f} {r['sniffer_s_per_mframe']:>9.1f} "
            f"{r['total_s_per_mframe']:>10.1f} {ratio:>11}"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = list(dict.fromkeys(r["load"] for r in rows))
    sniffers = [s for s in SNIFFERS if s != "none" and any(r["sniffer"] == s for r in rows)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(sniffers), 1)
    for i, s in enumerate(sniffers):
        by_load = {r["load"]: r for r in rows if r["sniffer"] == s}
        xs = [j + i * width for j in range(len(loads))]
        ax1.bar(
            xs,
            [by_load[ld]["total_s_per_mframe"] if ld in by_load else 0 for ld in loads],
            width,
            label=s,
        )
        ax2.bar(
            xs,
            [
                by_load[ld]["delivered"] / max(by_load[ld]["injected"], 1) if ld in by_load else 0
                for ld in loads
            ],
            width,
            label=s,
        )
    for ax, label in (
        (ax1, "CPU s per million frames (sniffer + softirq)"),
        (ax2, "frames delivered / injected"),
    ):
        ax.set_xticks([j + width * (len(sniffers) - 1) / 2 for j in range(len(loads))], loads)
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_bench(
    kernel_name: str,
    rounds: int,
    loads: list[Load],
    sniffers: list[str],
    accel_override: str | None,
    out: Path,
) -> int:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = images.load_manifest()
    kernel = (
        images.fetch(manifest[kernel_name])
        if kernel_name in manifest
        else images.resolve(kernel_name)
    )
    acc = accel.choose(accel_override)
    if "tcpdump" in sniffers and shutil.which("tcpdump") is None:
        print("tcpdump is not installed on the host (the guest runs its userspace): skipped")
        sniffers = [s for s in sniffers if s != "tcpdump"]
    module = None
    if "nta" in sniffers:
        built = kbuild.build(kernel)
        if built.module is None:
            raise LabError(f"NTA did not build for {kernel.name}: see {built.log}")
        module = built.module
    spec = GuestSpec(kernel, nics.nic_set("e1000"), acc, name="ntalab-bench")
    t0 = time.monotonic()
    trials: list[Trial] = []
    with Guest(spec, out / "guest") as guest:
        boot_s = guest.boot_seconds
        env = LabEnv(guest, guest.setup_nics(promisc=True), kernel, "e1000", guest.outdir)
        gn = env.nics[0]
        if module is not None:
            # Loaded for every sniffer, so that all of them receive into the same
            # buffers; attached from load on, so the ring is all NTA chunks.
            env.load_nta(module, f"attach={gn.iface}")
        for load in loads:
            batch = traffic.frames(1, load.frames, env.addrs(gn), ("udp4",), seed=1)
            for rnd in range(rounds):
                for sniffer in sniffers:
                    trial = run_trial(env, gn, sniffer, load, rnd, batch)
                    print(
                        f"  {load.name} round {rnd} {sniffer:<9} "
                        f"delivered {trial.delivered}/{trial.injected} "
                        f"cpu {trial.sniffer_cpu_s:.2f}s softirq {trial.softirq_s:.2f}s",
                        flush=True,
                    )
                    trials.append(trial)
    rows = summarize(trials)
    where = f"{acc.name} ({acc.reason}); host cpu {platform.processor() or platform.machine()}"
    result = {
        "kernel": kernel.release,
        "accel": acc.name,
        "accel_reason": acc.reason,
        "host": _host_cpu(),
        "boot_s": round(boot_s, 1),
        "total_s": round(time.monotonic() - t0, 1),
        "rows": rows,
        "trials": [asdict(t) for t in trials],
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out / "bench.png", f"NTA vs AF_PACKET, {kernel.release}, {acc.name}, {_host_cpu()}")
    print(f"\n{table(rows)}\n\naccelerator: {where}")
    print(f"guest boot {boot_s:.0f}s, bench {result['total_s']:.0f}s; results: {out}")
    return 0


def _host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()
