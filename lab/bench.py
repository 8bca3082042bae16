"""``ntalab bench``: NTA's zero-copy sniffer against AF_PACKET, side by side, one guest.

Under one injected load, each sniffer runs in turn, round after round (A B A B),
so slow drift of a noisy host hits all of them alike:

- ``none``: no sniffer, the cost of receiving alone;
- ``afpacket``: a TPACKET_V3 mmap ring, what libpcap/tcpdump use, in Python;
- ``tcpdump``: ``tcpdump -w /dev/null`` itself, where the host has it;
- ``nta``: pysniff reading NTA's chunks in place and committing them.

Loads: injected UDP frames at a fixed rate and as fast as the NIC takes
them, and a web-server load closer to the seed's httperf run: a small HTTP
server in the guest, answering the host's requests (several clients, a
connection per request) through QEMU's user-mode network, which forwards a
loopback port: no root, no tap, no address outside the guest.

When ``nta`` is among them, the module is loaded for the whole run and
serves the NIC's receive buffers under every sniffer: they differ only in
how frames reach userspace.

Every sniffer takes received frames only (NTA publishes nothing else;
AF_PACKET is set to ignore outgoing ones, tcpdump runs with ``-Q in``).
The Python sniffers do the same work per frame (a CRC32 over its bytes, read
in place), so they differ only by the path the bytes take. For each trial the
guest reports the sniffer's CPU time from the moment it was ready to its exit
and the softirq time of the whole guest; the table gives their medians over
the rounds, per million frames, and the ratio to AF_PACKET from the same run.
Under TCG, absolute times are emulated time: read the ratios. Debian's
kernels account softirq time by sampling at each tick (no
IRQ_TIME_ACCOUNTING), so the softirq column needs many frames per trial to
mean much; the sniffer's own CPU time is the scheduler's exact runtime
(schedstat), not utime + stime, which are sampled at each tick and so skew
against a reader that wakes on a timer.
"""

from __future__ import annotations

import http.client
import json
import platform
import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab import LabError, accel, images, kbuild, nics, traffic
from lab.guest import Guest, GuestSpec
from lab.guestnet import GuestNic
from lab.guestside.reports import MeterReport
from lab.labenv import LabEnv

SNIFFERS = ("none", "afpacket", "tcpdump", "nta")
# A reader may hold as many frames as the AF_PACKET reader's ring buffers (2 MiB
# of TPACKET_V3 blocks, some 2400 of these frames), not the lab default of 256:
# 48 nodes of 64 pages leave room for that beside two e1000 rings.
NTA_BENCH_PARAMS = "node_count=48 max_shared=2048 ring_entries=4096"


@dataclass(frozen=True)
class Load:
    """Injected frames (``frames`` at ``rate``), or with ``web``, HTTP requests from the host."""

    name: str
    frames: int  # for a web load: requests
    rate: float | None  # None: as fast as the NIC takes them (e1000 back-pressure)
    web: bool = False


# The web load's NIC: an e1000 on QEMU's user-mode network, which forwards a
# loopback port of the host to the guest's HTTP server. restrict=on: the guest
# reaches nothing outside; only the forwarded connections come in.
WEB_MAC = "52:54:00:4e:fe:00"
WEB_NET = "10.77.254"
WEB_PORT = 8080
WEB_CLIENTS = 8


def web_nic_opts(host_port: int) -> tuple[str, ...]:
    netdev = (
        f"user,id=web,net={WEB_NET}.0/24,host={WEB_NET}.1,restrict=on,"
        f"hostfwd=tcp:127.0.0.1:{host_port}-{WEB_NET}.2:{WEB_PORT}"
    )
    return ("-netdev", netdev, "-device", f"e1000,netdev=web,mac={WEB_MAC}")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fetch_pages(port: int, requests: int, clients: int = WEB_CLIENTS) -> traffic.InjectResult:
    """``requests`` GETs over ``clients`` connections at a time, one connection each."""
    left = iter(range(requests))
    lock = threading.Lock()
    done = 0

    def client() -> None:
        nonlocal done
        while True:
            with lock:
                if next(left, None) is None:
                    return
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/")
                body = conn.getresponse().read()
            except OSError:
                continue  # counted as not done: the table shows fewer requests
            finally:
                conn.close()
            if len(body) == 8192:
                with lock:
                    done += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return traffic.InjectResult(done, time.monotonic() - start)


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


def sniffer_argv(name: str, iface: str, count: int, ready: Path) -> list[str]:
    """The meter's arguments for one sniffer: how to wait for it, and its command."""
    py = [sys.executable, "-S"]  # both Python sniffers use the standard library only
    if name == "none":
        return []
    if name == "afpacket":
        cmd = [*py, "-m", "lab.guestside.afpacket", iface, str(count), "600", str(ready)]
        return ["--wait-file", str(ready), "--", *cmd]
    if name == "tcpdump":
        tcpdump = shutil.which("tcpdump") or "tcpdump"
        cmd = [tcpdump, "-i", iface, "-n", "-Q", "in", "-w", "/dev/null", "-c", str(count)]
        cmd += ["-B", "2048"]
        return ["--wait-line", "listening on", "--", *cmd]
    if name == "nta":
        cmd = [*py, "-m", "pysniff", "-i", iface, "-c", str(count), "--json"]
        # --coalesce as the AF_PACKET reader's block timeout (RETIRE_TOV_MS): both
        # read in batches gathered over up to 10 ms, not a wakeup per frame.
        cmd += ["--ready-file", str(ready), "--bulk", "--coalesce", "10"]
        return ["--wait-file", str(ready), "--", *cmd]
    raise LabError(f"unknown sniffer {name!r}; known: {', '.join(SNIFFERS)}")


def delivered(name: str, report: MeterReport, rx: int) -> int:
    """How many frames the sniffer saw, from its own report."""
    if name == "none":
        return rx
    if name == "tcpdump":
        for line in report.stderr.splitlines():
            if line.endswith("packets captured"):
                return int(line.split()[0])
        raise LabError(f"tcpdump printed no capture count: {report.stderr!r}")
    frames: int = json.loads(report.stdout)["frames"]
    return frames


def run_trial(
    env: LabEnv, iface: str, sniffer: str, load: Load, rnd: int, drive: Callable[[], int]
) -> Trial:
    """One sniffer under one load. ``drive`` makes the load; it returns the frames the
    NIC must have received before the sniffer is stopped (0: whatever came)."""
    tag = f"bench-{load.name}-{sniffer}-{rnd}"
    ready, inner = env.outdir / f"{tag}.ready", env.outdir / f"{tag}.sniffer-ready"
    out = env.outdir / f"{tag}.json"
    # A web load has no frame count to stop at: the sniffer runs until stopped.
    count = 10**9 if load.web else load.frames
    argv = sniffer_argv(sniffer, iface, count, inner)
    meter = env.spawn(tag, "lab.guestside.meter", ready, *argv, out=out)
    meter.wait_file(ready)
    rx0 = rx_packets(env, iface)
    start = time.monotonic()
    sent = drive()
    elapsed = time.monotonic() - start
    stats = f"/sys/class/net/{iface}/statistics/rx_packets"
    # Wait (bounded) for the NIC to have it all and the sniffer to finish on its own.
    env.cmd(
        f"n=0; while [ $(cat {stats}) -lt {rx0 + sent} ] && [ $n -lt 200 ]; "
        f"do sleep 0.05; n=$((n+1)); done; n=0; "
        f"while [ {sniffer} != none ] && kill -0 {meter.pid} 2>/dev/null && [ $n -lt 60 ]; "
        f"do sleep 0.05; n=$((n+1)); done; kill -TERM {meter.pid} 2>/dev/null; true",
        timeout=120,
    )
    report = meter.result(MeterReport.from_json, 120)
    rx = rx_packets(env, iface) - rx0
    cpu = report.cpu_s
    injected = rx if load.web else sent
    return Trial(
        load=load.name,
        sniffer=sniffer,
        round=rnd,
        injected=injected,
        inject_rate=round(injected / elapsed) if elapsed > 0 else 0,
        rx=rx,
        delivered=delivered(sniffer, report, rx),
        sniffer_cpu_s=report.sniffer_cpu_s,
        softirq_s=float(cpu["softirq"]),
        busy_s=round(sum(v for k, v in cpu.items() if k not in ("idle", "iowait")), 3),
    )


def rx_packets(env: LabEnv, iface: str) -> int:
    return int(env.cmd(f"cat /sys/class/net/{iface}/statistics/rx_packets").stdout)


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
        images.provide(manifest[kernel_name])
        if kernel_name in manifest
        else images.resolve(kernel_name, manifest)
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
    web_port = free_loopback_port() if any(ld.web for ld in loads) else None
    extra = web_nic_opts(web_port) if web_port is not None else ()
    spec = GuestSpec(kernel, nics.nic_set("e1000"), acc, name="ntalab-bench", qemu_opts=extra)
    t0 = time.monotonic()
    trials: list[Trial] = []
    with Guest(spec, out / "guest") as guest:
        boot_s = guest.boot_seconds
        env = LabEnv.up(guest, kernel, "e1000")
        gn = env.nics[0]
        web_iface = setup_web_nic(env) if web_port is not None else None
        if module is not None:
            # Loaded for every sniffer, so that all of them receive into the same
            # buffers; attached from load on, so the rings are all NTA chunks.
            served = ",".join(i for i in (gn.iface, web_iface) if i)
            env.nta.load(module, f"attach={served} {NTA_BENCH_PARAMS}", bounce=env.nics)
            if web_iface is not None:
                env.cmd(f"ip link set {web_iface} down && ip link set {web_iface} up")
        for load in loads:
            iface, drive = gn.iface, None
            if load.web:
                assert web_iface is not None and web_port is not None
                iface, drive = web_iface, web_driver(env, load, web_port)
            else:
                drive = frame_driver(env, gn, load)
            for rnd in range(rounds):
                for sniffer in sniffers:
                    trial = run_trial(env, iface, sniffer, load, rnd, drive)
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


def frame_driver(env: LabEnv, gn: GuestNic, load: Load) -> Callable[[], int]:
    # Load, not a delivery check: a thousand distinct frames, sent over again.
    distinct = traffic.frames(1, min(load.frames, 1000), env.addrs(gn), ("udp4",), seed=1)
    batch = (distinct * (load.frames // len(distinct) + 1))[: load.frames]

    def drive() -> int:
        return traffic.inject(gn.host, batch, load.rate).sent

    return drive


def setup_web_nic(env: LabEnv) -> str:
    """The user-mode NIC: found by MAC and driver, set up as the lab's own NICs are."""
    found = env.cmd(nics.find_iface_cmd(WEB_MAC, "e1000")).stdout.split()
    if len(found) != 1:
        raise LabError(f"the web load's NIC ({WEB_MAC}) has no e1000 interface in the guest")
    iface = found[0]
    env.net.configure(iface, f"{WEB_NET}.2/24", promisc=False)
    return iface


def web_driver(env: LabEnv, load: Load, port: int) -> Callable[[], int]:
    """Starts the guest's HTTP server once; each call fetches ``load.frames`` pages."""
    ready = env.outdir / "ready-httpd"
    proc = env.spawn("httpd", "lab.guestside.httpd", f"{WEB_NET}.2", WEB_PORT, ready)
    proc.wait_file(ready)
    # One request first: slirp and the guest's ARP entry for it are set up
    # before anything is measured.
    if fetch_pages(port, 1).sent != 1:
        raise LabError(f"the guest's HTTP server does not answer on 127.0.0.1:{port}")

    def drive() -> int:
        done = fetch_pages(port, load.frames)
        if done.sent < load.frames:
            print(f"    {load.frames - done.sent} of {load.frames} requests failed")
        return 0  # the frames it takes are whatever the NIC received

    return drive


def _host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()
