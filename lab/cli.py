"""``ntalab`` / ``python -m lab``: each stage of the lab, callable on its own.

ntalab images list|fetch [NAME...]
ntalab build [-k KERNEL]... [--werror]
ntalab boot -k KERNEL [--nics SET] [--exec CMD] [--dry-run]
ntalab inject --sock DIR/NIC ... (frames into a guest started by 'boot')
ntalab run [-k KERNEL]... [--nics SET]... [pytest args]
ntalab repro BUNDLE
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lab import REPO, LabError, accel, bench, images, kbuild, nics, repro, scenarios, traffic
from lab.guest import BOOT_PROFILES, Guest, GuestSpec, build_argv
from lab.nics import HostEnd, NicPlan


def _kernels(specs: Sequence[str] | None) -> list[images.Kernel]:
    manifest = images.load_manifest()
    return [images.resolve(s, manifest) for s in (specs or list(manifest))]


def cmd_images(args: argparse.Namespace) -> int:
    manifest = images.load_manifest()
    if args.action == "list":
        rows = images.describe(manifest)
        width = max(len(r[0]) for r in rows)
        for name, release, version, state in rows:
            print(f"{name:<{width}}  {release:<24} {version:<20} {state}")
        return 0
    for name in args.names or list(manifest):
        if name not in manifest:
            raise LabError(f"unknown kernel {name!r}; known: {', '.join(manifest)}")
        entry = manifest[name]
        if images.is_fetched(entry):
            print(f"{name}: already fetched")
            continue
        print(f"{name}: fetching {len(entry.packages)} packages at {entry.version} ...", flush=True)
        kernel = images.fetch(entry)
        print(f"{name}: {kernel.vmlinuz}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    failed = False
    for kernel in _kernels(args.kernel):
        result = kbuild.build(kernel)
        for line in result.warnings:
            print(f"  {line}")
        print(f"{kernel.name}: {result.status.value} in {result.elapsed:.1f}s -> {result.module}")
        bad = result.status is kbuild.BuildStatus.FAILED
        if bad:
            print(f"  build log: {result.log}")
        failed |= bad or (args.werror and result.status is kbuild.BuildStatus.WARNINGS)
    return 1 if failed else 0


def _spec(args: argparse.Namespace, kernel: images.Kernel) -> GuestSpec:
    return GuestSpec(
        kernel=kernel,
        nics=nics.nic_set(args.nics),
        accel=accel.choose(args.accel),
        memory=args.memory,
        cpus=args.cpus,
        append=tuple(args.append),
    )


def cmd_boot(args: argparse.Namespace) -> int:
    kernel = images.resolve(args.kernel)
    spec = _spec(args, kernel)
    if args.dry_run:
        plans = nics.plan(spec.nics, Path("/tmp/ntalab-dry-run"))
        print(shlex.join(build_argv(spec, plans)))
        return 0
    outdir = Path(args.out or REPO / "results" / f"boot-{time.strftime('%Y%m%d-%H%M%S')}")
    print(
        f"accelerator: {spec.accel.name} ({spec.accel.reason}); console log: {outdir}/console.log"
    )
    with Guest(spec, outdir) as guest:
        for gn in guest.setup_nics(promisc=True):
            print(f"  {gn.plan.variant.name}: guest {gn.iface} mac {gn.plan.mac}")
            print(
                f"    inject: ntalab inject --guest-sock {gn.plan.guest_sock} "
                f"--mac {gn.plan.mac} --count 100"
            )
        if args.module:
            guest.sh.run(f"insmod {shlex.quote(str(Path(args.module).resolve()))}")
        if args.exec:
            result = guest.sh.run(args.exec, timeout=args.timeout, check=False)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.rc
        print("interactive shell: the console has no prompt; type commands, Ctrl-] leaves.")
        assert guest.child is not None
        guest.child.logfile_read = None
        guest.child.interact()
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    """Frames into a NIC of a guest that 'ntalab boot' started (for reproducing by hand)."""
    # QEMU takes frames from any sender; replies still go to the boot command's socket.
    own = Path(tempfile.mkdtemp(prefix="ntalab-inject-")) / "h.sock"
    plan = NicPlan(0, nics.variant("e1000"), args.mac, Path(args.guest_sock), own)
    end = HostEnd(plan)
    try:
        if args.pcap:
            batch = traffic.read_pcap(Path(args.pcap))
        else:
            addrs = traffic.Addresses(guest_mac=args.mac)
            batch = traffic.frames(args.run_id, args.count, addrs, args.kinds.split(","))
        result = traffic.inject(end, batch, args.rate)
    finally:
        end.close()
    print(f"sent {result.sent} frames in {result.elapsed:.2f}s ({result.rate:.0f}/s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    for spec in args.nics or ():
        nics.nic_set(spec)  # an unknown variant fails here, not in every guest
    return scenarios.run_matrix(
        kernels=args.kernel or list(images.load_manifest()),
        nic_sets=args.nics or list(nics.NIC_SETS),
        profiles=args.boot_profile or list(BOOT_PROFILES),
        accel_override=args.accel,
        pytest_args=args.pytest_args,
        results=Path(args.out) if args.out else None,
        jobs=args.jobs,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    loads = [bench.Load("fixed", args.frames, args.rate), bench.Load("max", args.frames, None)]
    if args.web_requests:
        loads.append(bench.Load("web", args.web_requests, None, web=True))
    out = Path(args.out or REPO / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    sniffers = args.sniffers.split(",")
    return bench.run_bench(args.kernel, args.rounds, loads, sniffers, args.accel, out)


def cmd_repro(args: argparse.Namespace) -> int:
    return repro.replay(Path(args.bundle), interactive=not args.no_shell, accel_override=args.accel)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ntalab", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    im = sub.add_parser("images", help="list or fetch guest kernels from the manifest")
    im.add_argument("action", choices=["list", "fetch"])
    im.add_argument("names", nargs="*", help="manifest names (default: all)")
    im.set_defaults(func=cmd_images)

    b = sub.add_parser("build", help="build the NTA module against guest kernels (W=1)")
    b.add_argument("-k", "--kernel", action="append", help="name, bzImage or build tree")
    b.add_argument("--werror", action="store_true", help="fail on any compiler warning")
    b.set_defaults(func=cmd_build)

    def guest_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--nics", default="all", help="NIC set or comma list of variants")
        sp.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
        sp.add_argument("--memory", default="1G")
        sp.add_argument("--cpus", type=int, default=2)
        sp.add_argument("--append", action="append", default=[], help="kernel command line")

    bo = sub.add_parser("boot", help="boot a guest with the NICs attached, for a developer")
    bo.add_argument("-k", "--kernel", required=True, help="name, bzImage or build tree")
    guest_opts(bo)
    bo.add_argument("--module", help="insmod this .ko after boot")
    bo.add_argument("--exec", help="run this shell command, print its output, power off")
    bo.add_argument("--timeout", type=float, default=600.0, help="for --exec")
    bo.add_argument("--out", help="directory for the console log (default results/boot-*)")
    bo.add_argument("--dry-run", action="store_true", help="print the vng command only")
    bo.set_defaults(func=cmd_boot)

    inj = sub.add_parser("inject", help="send signed frames (or a pcap) into a booted guest")
    inj.add_argument(
        "--guest-sock", required=True, help="the NIC's guest socket ('boot' prints it)"
    )
    inj.add_argument("--mac", default="52:54:00:4e:00:00", help="the NIC's MAC")
    inj.add_argument("--count", type=int, default=100)
    inj.add_argument("--kinds", default="udp4", help=f"comma list of {','.join(traffic.KINDS)}")
    inj.add_argument("--run-id", type=int, default=1)
    inj.add_argument("--rate", type=float, help="frames per second (default: as fast as taken)")
    inj.add_argument("--pcap", help="replay this pcap instead")
    inj.set_defaults(func=cmd_inject)

    r = sub.add_parser("run", help="run the scenario matrix (kernels x NIC sets) with pytest")
    r.add_argument("-k", "--kernel", action="append", help="manifest names (default: all)")
    r.add_argument("--nics", action="append", help="NIC set or comma list (default: all)")
    r.add_argument(
        "--boot-profile", action="append", choices=list(BOOT_PROFILES), help="default: all"
    )
    r.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    r.add_argument("--out", help="results directory (default results/<timestamp>)")
    r.add_argument(
        "-j", "--jobs", type=int, default=os.cpu_count() or 1, help="guests booted at once"
    )
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    r.set_defaults(func=cmd_run)

    be = sub.add_parser("bench", help="NTA vs AF_PACKET vs tcpdump CPU cost, side by side")
    be.add_argument("-k", "--kernel", default="debian-6.1")
    be.add_argument("--rounds", type=int, default=2, help="A B A B rounds per load")
    be.add_argument("--frames", type=int, default=20000, help="frames per trial")
    be.add_argument("--rate", type=float, default=2000.0, help="the fixed load, frames/s")
    be.add_argument("--sniffers", default=",".join(bench.SNIFFERS))
    be.add_argument(
        "--web-requests", type=int, default=600, help="HTTP requests per web trial (0: no web load)"
    )
    be.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    be.add_argument("--out", help="results directory (default results/bench-<timestamp>)")
    be.set_defaults(func=cmd_bench)

    rp = sub.add_parser("repro", help="replay a failed scenario's reproducer bundle in a guest")
    rp.add_argument("bundle")
    rp.add_argument("--no-shell", action="store_true", help="replay, report, power off")
    rp.add_argument("--accel", choices=["auto", "kvm", "tcg"], help="default: the bundle's")
    rp.set_defaults(func=cmd_repro)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LabError as e:
        print(f"ntalab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
