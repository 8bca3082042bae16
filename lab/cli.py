"""``ntalab`` / ``python -m lab``: each stage of the lab, callable on its own.

Exit status: 0 done (every test passed), 1 a finding (a scenario failed, a
replayed bundle reproduced its report), 2 bad usage (an unknown option,
kernel, NIC or shard), 3 the lab could not run (a guest that never booted, a
build that failed, a missing tool or kernel), 130 interrupted.
"""

# Each command imports the stages it drives when it runs, not here: the parser,
# every --help and the STDLIB_ONLY commands need nothing but the standard
# library (no scapy, pexpect or pytest), and tests/test_layers.py holds them to it.
# A new command is a cmd_<name> function and its subparser below; if it needs
# only the standard library, its name goes in STDLIB_ONLY.

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from lab import ExitStatus, LabError, UsageError, exit_status
from lab.records import ACCELS, BOOT_PROFILES, NIC_SETS, SUMMARY, RunResult

# Commands that run with only the standard library importable.
STDLIB_ONLY = ("report", "measurements")


def cmd_images(args: argparse.Namespace) -> int:
    from lab import images

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
    from lab import images, kbuild

    failed, warned = [], False
    for name in args.kernel or images.default_kernels():
        kernel = images.kernel_for(name)
        result = kbuild.build(kernel)
        for line in result.warnings:
            print(f"  {line}")
        print(f"{kernel.name}: {result.status.value} in {result.elapsed:.1f}s -> {result.module}")
        if result.status is kbuild.BuildStatus.FAILED:
            print(f"  build log: {result.log}")
            failed.append(kernel.name)
        warned |= result.status is kbuild.BuildStatus.WARNINGS
    print(f"ntadump: {kbuild.build_ntadump().program}")
    if failed:
        raise LabError(f"NTA did not build for {', '.join(failed)}")
    return ExitStatus.FINDING if args.werror and warned else ExitStatus.PASSED


def cmd_boot(args: argparse.Namespace) -> int:
    from lab import accel, images, nics, paths
    from lab.guest import Guest, GuestSpec, build_argv
    from lab.guestnet import GuestNet

    spec = GuestSpec(
        kernel=images.kernel_for(args.kernel),
        nics=nics.nic_set(args.nics),
        accel=accel.choose(args.accel),
        memory=args.memory,
        cpus=args.cpus,
        append=tuple(args.append),
    )
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
        for nic in net.setup(guest.nics, promisc=True):
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
    from lab import nics, traffic

    # QEMU takes frames from any sender; replies still go to the boot command's socket.
    own = Path(tempfile.mkdtemp(prefix="ntalab-inject-")) / "h.sock"
    plan = nics.NicPlan(0, nics.variant("e1000"), args.mac, Path(args.guest_sock), own)
    end = nics.HostEnd(plan)
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
    from lab import images, nics, paths, plan, report, runner

    if args.json and not args.list:
        raise UsageError("--json goes with --list")
    shard = plan.Shard.parse(args.shard) if args.shard else None
    if args.plan and shard is None and not args.list:
        raise UsageError("--plan needs --shard I/N: which shard of it to run")
    for spec in args.nics or ():
        nics.nic_set(spec)  # an unknown variant fails here, not in every guest
    manifest = images.load_manifest()
    kernels = args.kernel or images.default_kernels(manifest)
    left_out = [] if args.kernel or args.plan else images.left_out(manifest)
    for name in kernels:
        if name not in manifest:
            images.resolve(name, manifest)  # a path must be a kernel
    jobs = args.jobs or os.cpu_count() or 1
    pytest_args = [a for a in args.pytest_args if a != "--"]
    scenarios = paths.sources().scenarios
    the_plan = plan.Plan.load(Path(args.plan)) if args.plan else None
    whole = (
        []
        if the_plan is not None
        else plan.guests(
            kernels,
            args.nics or list(NIC_SETS),
            args.boot_profile or list(BOOT_PROFILES),
            args.accel,
            runner.sanitizer_kernels(kernels),
        )
    )
    if the_plan is None and (args.list or shard is not None):
        latest = paths.results_root() / "latest" / "summary.json"
        given = Path(args.timings) if args.timings else latest if latest.is_file() else None
        count = shard.count if shard else 1
        timings = plan.Timings.load(given)
        the_plan = runner.plan_shards(whole, count, scenarios, pytest_args, timings, jobs)
    if args.list:
        assert the_plan is not None
        for x in left_out:  # a run says so in its first lines, and in its matrix
            print(f"ntalab: left out: {x.kernel} ({x.reason})", file=sys.stderr)
        print(json.dumps(the_plan.to_json(), indent=2) if args.json else the_plan.text())
        return ExitStatus.PASSED

    requests = the_plan.shard(shard) if the_plan is not None and shard is not None else whole
    out = Path(args.out).resolve() if args.out else paths.new_results_dir()
    runner.link_latest(out)
    result = runner.run_matrix(
        requests,
        out,
        jobs,
        pytest_args,
        scenarios,
        shard=str(shard) if shard else "",
        plan_digest=the_plan.digest if the_plan is not None else "",
        left_out=left_out,
    )
    print(f"\n{report.printable(result)}\nresults: {out}  total: {result.elapsed_s:.0f}s")
    return result.verdict.status


def cmd_report(args: argparse.Namespace) -> int:
    from lab import paths, report

    runs = _runs(args.dirs)
    try:
        merged = report.merge(runs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out).resolve() if args.out else paths.new_results_dir("report")
    report.write(merged, out)
    print(f"{report.printable(merged)}\nmerged {len(runs)} runs into {out}")
    return merged.verdict.status


def _runs(dirs: Sequence[str]) -> list[RunResult]:
    """The RunResult of each ``ntalab run`` results dir, or a UsageError naming the bad one."""
    runs = []
    for d in dirs:
        path = Path(d)
        if not (path / SUMMARY).is_file():
            raise UsageError(f"{path} has no {SUMMARY}: not an 'ntalab run' results dir")
        try:
            runs.append(RunResult.load(path))
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{path / SUMMARY} is not an 'ntalab run' summary: {e!r}") from None
    return runs


def cmd_measurements(args: argparse.Namespace) -> int:
    from lab import measurements, paths, report

    if not args.dirs and not args.bench:
        raise UsageError("give results dirs of 'ntalab run', a --bench bench.json, or both")
    run = None
    if args.dirs:
        try:
            run = report.merge(_runs(args.dirs))
        except ValueError as e:
            raise UsageError(str(e)) from None
    bench = None
    if args.bench:
        try:
            bench = measurements.load_bench(Path(args.bench))
        except ValueError as e:
            raise UsageError(str(e)) from None
    out = Path(args.out) if args.out else paths.sources().root / "docs" / "measurements.md"
    command = shlex.join(["ntalab", "measurements", *args.dirs]
                         + (["--bench", args.bench] if args.bench else []))  # fmt: skip
    text = measurements.document(run, args.dirs, bench, args.bench or "", command)
    out.write_text(text)
    print(f"wrote {out}")
    return ExitStatus.PASSED


def cmd_bench(args: argparse.Namespace) -> int:
    from lab import bench, paths

    # Checked before anything is built or booted: a typo costs nothing.
    sniffers = bench.parse_sniffers(args.sniffers or ",".join(bench.SNIFFERS))
    for name in ("rounds", "frames", "rate", "max_frames"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, not {value}")
    if args.web_requests < 0:
        raise UsageError(f"--web-requests must not be negative, not {args.web_requests}")
    loads = [
        bench.Load("fixed", args.frames, args.rate),
        bench.Load("max", args.max_frames or 3 * args.frames, None),
    ]
    if args.web_requests:
        loads.append(bench.Load("web", args.web_requests, None, web=True))
    out = Path(args.out) if args.out else paths.new_results_dir("bench")
    return bench.run_bench(
        args.kernel[0] if args.kernel else "debian-6.1",
        args.rounds,
        loads,
        sniffers,
        args.accel,
        out,
    )


def cmd_repro(args: argparse.Namespace) -> int:
    from lab import repro

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
    acc.add_argument("--accel", choices=ACCELS, default="auto")
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
    b.add_argument("--werror", action="store_true", help="a compiler warning is a finding (1)")
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
    inj.add_argument("--kinds", default="udp4", help="comma list of frame kinds (udp4, vlan, ...)")
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
    r.add_argument("-j", "--jobs", type=int, help="guests at once (default: one per core)")
    r.add_argument(
        "--shard",
        help="I/N: run the I-th of N shards of the matrix (its guests' scenarios split over N "
        "machines, balanced by the last run's times)",
    )
    r.add_argument(
        "--list", action="store_true", help="print the plan (shards, guests, tests, seconds)"
    )
    r.add_argument("--json", action="store_true", help="with --list: the plan as JSON")
    r.add_argument("--plan", help="with --shard: run that shard of this plan (--list --json)")
    r.add_argument(
        "--timings", help="a results dir or summary.json to balance by (default results/latest)"
    )
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser(
        "report", parents=[out], help="merge results dirs (shards) into one report"
    )
    rep.add_argument("dirs", nargs="+", help="results directories of 'ntalab run'")
    rep.set_defaults(func=cmd_report)

    me = sub.add_parser(
        "measurements",
        help="write docs/measurements.md from results dirs (summary.json) and a bench.json",
    )
    me.add_argument("dirs", nargs="*", help="results directories of 'ntalab run' (merged)")
    me.add_argument("--bench", help="a bench.json of 'ntalab bench'")
    me.add_argument("-o", "--out", help="the file to write (default: the checkout's docs/)")
    me.set_defaults(func=cmd_measurements)

    be = sub.add_parser(
        "bench",
        parents=[kernels, acc, out],
        help="NTA's readers vs AF_PACKET's and tcpdump: CPU, syscalls, wakeups per frame",
    )
    be.add_argument("--rounds", type=int, default=2, help="A B A B rounds per load")
    be.add_argument("--frames", type=int, default=20000, help="frames per fixed-rate trial")
    be.add_argument("--rate", type=float, default=2000.0, help="the fixed load, frames/s")
    be.add_argument(
        "--max-frames",
        type=int,
        help="frames per flat-out trial (default 3 x --frames: seconds long too, for the "
        "tick-sampled softirq column)",
    )
    be.add_argument(
        "--sniffers",
        help="comma list of none, none-loaded, afpacket, tcpdump, pysniff, ntadump (default: "
        "all); each round runs them in that order",
    )
    be.add_argument(
        "--web-requests", type=int, default=600, help="HTTP requests per web trial (0: none)"
    )
    be.set_defaults(func=cmd_bench)

    rp = sub.add_parser("repro", help="replay a failed scenario's reproducer bundle in a guest")
    rp.add_argument("bundle")
    rp.add_argument("--no-shell", action="store_true", help="replay, report, power off")
    rp.add_argument("--accel", choices=ACCELS, help="default: the bundle's")
    rp.set_defaults(func=cmd_repro)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt as e:
        return exit_status(e)
    except LabError as e:
        print(f"ntalab: error: {e}", file=sys.stderr)
        return exit_status(e)
    except Exception as e:  # a bug of the lab's: its traceback, and not a finding's status
        traceback.print_exc()
        return exit_status(e)
