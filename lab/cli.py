"""``ntalab`` / ``python -m lab``: each stage of the lab, callable on its own.

Exit status: 0 done (every test passed), 1 a failed run or a lab error
(a guest that never booted, a build that failed), 2 bad usage (an unknown
option, kernel, NIC or shard), 130 interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lab import (
    LabError,
    UsageError,
    accel,
    bench,
    images,
    kbuild,
    nics,
    paths,
    repro,
    runner,
    traffic,
)
from lab import report as reports
from lab.guest import BOOT_PROFILES, Guest, GuestSpec, build_argv
from lab.guestnet import GuestNet
from lab.nics import HostEnd, NicPlan


def _kernel_names(given: Sequence[str] | None) -> list[str]:
    return list(given) if given else images.default_kernels()


def cmd_images(args: argparse.Namespace) -> int:
    manifest = images.load_manifest()
    if args.action == "list":
        rows = images.describe(manifest)
        width = max(len(r.name) for r in rows)
        for r in rows:
            print(f"{r.name:<{width}}  {r.kind:<28} {r.version:<20} {r.state}")
        return 0
    names = args.names or [
        n
        for n, e in manifest.items()
        if isinstance(e, images.PackagedEntry) == (args.action == "fetch")
    ]
    for name in names:
        entry = images.entry(name, manifest)
        if images.is_ready(entry):
            print(f"{name}: ready")
            continue
        kernel = images.provide(entry)
        print(f"{name}: {kernel.vmlinuz}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    failed = False
    manifest = images.load_manifest()
    for name in _kernel_names(args.kernel):
        kernel = (
            images.provide(manifest[name]) if name in manifest else images.resolve(name, manifest)
        )
        result = kbuild.build(kernel)
        for line in result.warnings:
            print(f"  {line}")
        print(f"{kernel.name}: {result.status.value} in {result.elapsed:.1f}s -> {result.module}")
        bad = result.status is kbuild.BuildStatus.FAILED
        if bad:
            print(f"  build log: {result.log}")
        failed |= bad or (args.werror and result.status is kbuild.BuildStatus.WARNINGS)
    print(f"ntadump: {kbuild.build_ntadump().program}")
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
    outdir = Path(args.out) if args.out else paths.new_results_dir("boot")
    print(
        f"accelerator: {spec.accel.name} ({spec.accel.reason}); console log: {outdir}/console.log"
    )
    with Guest(spec, outdir) as guest:
        net = GuestNet(guest.sh, guest.features)
        for nic in net.setup(guest.nics, guest.host_ends, promisc=True):
            print(f"  {nic.name}: guest {nic.iface} mac {nic.mac}")
            print(f"    inject: ntalab inject --guest-sock {guest.nics[nic.index].guest_sock} "
                  f"--mac {nic.mac} --count 100")  # fmt: skip
        if args.module:
            guest.sh.run(f"insmod {shlex.quote(str(Path(args.module).resolve()))}")
        if args.exec:
            result = guest.sh.run(args.exec, timeout=args.timeout, check=False)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.rc
        print("interactive shell: the console has no prompt; type commands, Ctrl-] leaves.")
        child = guest.child_or_fail()
        child.logfile_read = None
        child.interact()
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
    manifest = images.load_manifest()
    kernels = _kernel_names(args.kernel)
    for name in kernels:
        if name not in manifest:
            images.resolve(name, manifest)  # a path must be a kernel
    out = Path(args.out).resolve() if args.out else paths.new_results_dir()
    runner.link_latest(out)
    result = runner.run_matrix(
        kernels=kernels,
        nic_sets=args.nics or list(nics.NIC_SETS),
        profiles=args.boot_profile or list(BOOT_PROFILES),
        accel=args.accel,
        out=out,
        jobs=args.jobs,
        shard=runner.Shard.parse(args.shard) if args.shard else None,
        pytest_args=[a for a in args.pytest_args if a != "--"],
    )
    print(f"\n{reports.printable(result)}\nresults: {out}  total: {result.elapsed_s:.0f}s")
    return 0 if result.passed else 1


def cmd_report(args: argparse.Namespace) -> int:
    runs = []
    for d in args.dirs:
        path = Path(d)
        if not (path / reports.SUMMARY).is_file():
            raise UsageError(f"{path} has no {reports.SUMMARY}: not an 'ntalab run' results dir")
        runs.append(reports.RunResult.load(path))
    try:
        merged = reports.merge(runs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out).resolve() if args.out else paths.new_results_dir("report")
    reports.write(merged, out)
    print(f"{reports.printable(merged)}\nmerged {len(runs)} runs into {out}")
    return 0 if merged.passed else 1


def bench_loads(args: argparse.Namespace) -> tuple[bench.Load, ...]:
    """The loads the options ask for, in the order they run; UsageError for bad ones."""
    for name in ("rounds", "frames", "rate", "max_frames", "sweep_frames", "web_requests",
                 "bulk_mib", "bulk_connections"):  # fmt: skip
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, not {value}")
    try:
        sizes = [int(s) for s in args.sweep_sizes.split(",") if s.strip()]
    except ValueError:
        raise UsageError(
            f"--sweep-sizes takes a comma list of bytes, not {args.sweep_sizes!r}"
        ) from None
    for size in sizes:
        if not bench.SWEEP_MIN <= size <= bench.SWEEP_MAX:
            raise UsageError(
                f"--sweep-sizes: {size} is not a frame size ({bench.SWEEP_MIN}..{bench.SWEEP_MAX})"
            )
    every: list[bench.Load] = [
        bench.FrameLoad("fixed", args.frames, args.rate),
        *(bench.FrameLoad(f"fixed-{n}", args.sweep_frames, args.rate, n) for n in sizes),
        bench.FrameLoad("max", args.max_frames or 3 * args.frames, None),
        bench.WebLoad(args.web_requests),
        bench.BulkLoad(args.bulk_mib, args.bulk_connections),
    ]
    by_name = {ld.name: ld for ld in every}
    wanted = (
        [n.strip() for n in args.loads.split(",") if n.strip()] if args.loads else list(by_name)
    )
    unknown = [n for n in wanted if n not in by_name]
    if unknown or not wanted:
        what = f"unknown load {unknown[0]!r}" if unknown else "no load given"
        raise UsageError(f"--loads: {what}; known: {', '.join(by_name)}")
    return tuple(ld for ld in every if ld.name in wanted)


def cmd_bench(args: argparse.Namespace) -> int:
    # Checked before anything is built or booted: a typo costs nothing.
    config = bench.BenchConfig(
        kernel=args.kernel,
        rounds=args.rounds,
        loads=bench_loads(args),
        sniffers=tuple(bench.sniffers.parse(args.sniffers)),
        accel=args.accel,
    )
    out = Path(args.out).resolve() if args.out else paths.new_results_dir("bench")
    return bench.run_bench(config, out)


def cmd_repro(args: argparse.Namespace) -> int:
    return repro.replay(Path(args.bundle), interactive=not args.no_shell, accel_override=args.accel)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ntalab", description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    # Options several commands share, declared once.
    kernels = argparse.ArgumentParser(add_help=False)
    kernels.add_argument(
        "-k", "--kernel", action="append", help="manifest name, bzImage or build tree (repeatable)"
    )
    acc = argparse.ArgumentParser(add_help=False)
    acc.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", help="results directory (default ./results/<time>)")
    guest = argparse.ArgumentParser(add_help=False, parents=[acc])
    guest.add_argument("--nics", default="all", help="NIC set or comma list of variants")
    guest.add_argument("--memory", default="1G")
    guest.add_argument("--cpus", type=int, default=2)
    guest.add_argument("--append", action="append", default=[], help="kernel command line")

    im = sub.add_parser("images", help="list, fetch or build guest kernels from the manifest")
    im.add_argument("action", choices=["list", "fetch", "build"])
    im.add_argument("names", nargs="*", help="manifest names (default: every one of that kind)")
    im.set_defaults(func=cmd_images)

    b = sub.add_parser("build", parents=[kernels], help="build NTA against guest kernels (W=1)")
    b.add_argument("--werror", action="store_true", help="fail on any compiler warning")
    b.set_defaults(func=cmd_build)

    bo = sub.add_parser(
        "boot", parents=[guest, out], help="boot a guest with the NICs, for a developer"
    )
    bo.add_argument("-k", "--kernel", required=True, help="manifest name, bzImage or build tree")
    bo.add_argument("--module", help="insmod this .ko after boot")
    bo.add_argument("--exec", help="run this shell command, print its output, power off")
    bo.add_argument("--timeout", type=float, default=600.0, help="for --exec")
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

    r = sub.add_parser(
        "run",
        parents=[kernels, acc, out],
        help="run the scenario matrix: a pytest process per guest",
    )
    r.add_argument("--nics", action="append", help="NIC set or comma list (default: all)")
    r.add_argument(
        "--boot-profile", action="append", choices=list(BOOT_PROFILES), help="default: all"
    )
    r.add_argument("-j", "--jobs", type=int, default=runner.default_jobs(), help="guests at once")
    r.add_argument("--shard", help="I/N: run only the I-th of N parts of the matrix (whole guests)")
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser(
        "report", parents=[out], help="merge results dirs (shards) into one report"
    )
    rep.add_argument("dirs", nargs="+", help="results directories of 'ntalab run'")
    rep.set_defaults(func=cmd_report)

    be = sub.add_parser(
        "bench",
        parents=[acc, out],
        help="what capture costs the guest: NTA's readers vs AF_PACKET's and tcpdump",
    )
    be.add_argument("-k", "--kernel", default="debian-6.1", help="manifest name, bzImage or tree")
    be.add_argument("--rounds", type=int, default=3, help="A B A B rounds per load")
    be.add_argument(
        "--loads",
        help="comma list of fixed, fixed-<size> (the sweep), max, web, bulk (default: all)",
    )
    be.add_argument(
        "--sniffers",
        default=",".join(bench.SNIFFERS),
        help=f"comma list of {', '.join(bench.SNIFFERS)} (default: all); each round runs "
        "them in that order",
    )
    be.add_argument("--frames", type=int, default=20000, help="frames per fixed-rate trial")
    be.add_argument("--rate", type=float, default=2000.0, help="the fixed loads, frames/s")
    be.add_argument(
        "--sweep-sizes", default="64,512,1514", help="frame sizes of the sweep (bytes, no FCS)"
    )
    be.add_argument("--sweep-frames", type=int, default=10000, help="frames per sweep trial")
    be.add_argument(
        "--max-frames", type=int, help="frames per flat-out trial (default 3 x --frames)"
    )
    be.add_argument("--web-requests", type=int, default=600, help="HTTP requests per web trial")
    be.add_argument("--bulk-mib", type=int, default=24, help="MiB downloaded per bulk trial")
    be.add_argument(
        "--bulk-connections", type=int, default=4, help="TCP connections of the bulk load"
    )
    be.add_argument(
        "--icount", type=int, help="TCG: -icount shift=N (guest time counts instructions)"
    )
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
    except UsageError as e:
        print(f"ntalab: error: {e}", file=sys.stderr)
        return 2
    except LabError as e:
        print(f"ntalab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
