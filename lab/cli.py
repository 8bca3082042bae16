"""``ntalab`` / ``python -m lab``: each stage of the lab, callable on its own.

Exit status: 0 done (every test passed, a bisection named its commit), 1 a
finding (a scenario failed in any run of a --repeat, a replayed bundle
reproduced its report, a scanned log holds a kernel report), 2 bad usage (an
unknown option, kernel, NIC or shard), 3 the lab could not run (a guest that
never booted, a build that failed, a missing tool or kernel, a run that ran no
test, a bisection left with untestable commits), 130 interrupted.
"""

# Each command imports the stages it drives when it runs, not here: the parser,
# every --help and the STDLIB_ONLY commands need nothing but the standard
# library (no scapy, pexpect or pytest), and tests/test_layers.py holds them to it.
# A new command is a cmd_<name> function and its subparser below; if it needs
# only the standard library, its name goes in STDLIB_ONLY.

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import sys
import tempfile
import textwrap
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab import ExitStatus, InfraError, LabError, UsageError, exit_status
from lab.records import ACCELS, BOOT_PROFILES, NIC_SETS, SUMMARY, RunResult

if TYPE_CHECKING:
    from lab.bench.loads import Load

# Commands that run with only the standard library importable.
STDLIB_ONLY = ("report", "scan", "measurements")


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
    from lab import images, nics, paths, plan, repeat, report, runner

    if args.json and not args.list:
        raise UsageError("--json goes with --list")
    repeat.check_times(args.repeat)
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
    pytest_args = list(args.pytest_args)
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
    shard_name = str(shard) if shard else ""
    digest = the_plan.digest if the_plan is not None else ""
    if args.repeat > 1 or args.until_fail:
        done = runner.run_repeated(
            requests,
            out,
            jobs,
            args.repeat,
            args.until_fail,
            pytest_args,
            scenarios,
            shard=shard_name,
            plan_digest=digest,
            left_out=left_out,
        )
        print(f"results: {out} (each run in its own directory, the record in {repeat.RECORD})")
        return done.verdict.status
    result = runner.run_matrix(
        requests,
        out,
        jobs,
        pytest_args,
        scenarios,
        shard=shard_name,
        plan_digest=digest,
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


def bench_loads(args: argparse.Namespace) -> tuple[Load, ...]:
    """The loads the options ask for, in the order they run; UsageError for bad ones."""
    from lab import bench
    from lab.bench.stats import FILTERED, KEEP_ONE_IN, READERS, TWO_READERS

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
        bench.FrameLoad(FILTERED, args.frames, args.rate, keep_one_in=KEEP_ONE_IN),
        bench.FrameLoad(TWO_READERS, args.frames, args.rate, readers=READERS),
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
    run: RunResult | None = None
    reruns: list[measurements.Rerun] = []
    if args.rerun and not args.dirs:
        raise UsageError("--rerun re-runs tests of the results dirs given: give them")
    if args.dirs:
        try:
            run = report.merge(_runs(args.dirs))
            again = list(zip(args.rerun, _runs(args.rerun), strict=True))
            run, reruns = measurements.rerun(run, again)
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
                         + [a for d in args.rerun for a in ("--rerun", d)]
                         + (["--bench", args.bench] if args.bench else []))  # fmt: skip
    text = measurements.document(run, args.dirs, bench, args.bench or "", command, reruns)
    out.write_text(text)
    print(f"wrote {out}")
    return ExitStatus.PASSED


def cmd_bench(args: argparse.Namespace) -> int:
    from lab import bench, paths

    # Checked before anything is built or booted: a typo costs nothing.
    config = bench.BenchConfig(
        kernel=args.kernel,
        rounds=args.rounds,
        loads=bench_loads(args),
        sniffers=tuple(bench.sniffers.parse(args.sniffers or ",".join(bench.SNIFFERS))),
        accel=args.accel,
        clocksource=args.clocksource,
    )
    out = Path(args.out).resolve() if args.out else paths.new_results_dir("bench")
    return bench.run_bench(config, out)


def cmd_scan(args: argparse.Namespace) -> int:
    """Kernel reports in logs, whole, titled, their frames decoded to source lines.

    Offline, on any kernel log; exit 1 if any log holds a report (a finding).
    """
    # Standard library only (with binutils): a CI's or a bug report's log can be
    # scanned where nothing else of the lab is installed.
    from lab import debuginfo, kernlog, symbolize

    for name in args.logs:  # every log checked before any is read: a typo costs nothing
        if not Path(name).is_file():
            raise UsageError(f"{name}: no such log")
    given: dict[str, Path] = {}
    for ko in args.module:
        given |= debuginfo.module_files(Path(ko))
    said: set[str] = set()

    def say(message: str) -> None:
        if message not in said:
            said.add(message)
            print(f"  {message}")

    finder = debuginfo.Finder(args.fetch_debug, say)
    found = 0
    for name in args.logs:
        path = Path(name)
        text = kernlog.read_log(path)
        splats = kernlog.scan(text, str(path))
        found += len(splats)
        print(f"{path}: {len(splats) or 'no'} kernel report{'s' if len(splats) != 1 else ''}")
        for splat in splats:
            print(f"\n{splat.source}:{splat.start}-{splat.end}: [{splat.kind}] {splat.name}")
            frames = symbolize.frames(splat.text)
            if args.no_decode or not frames:
                print(textwrap.indent(splat.text, "  "), end="")
                continue
            release = debuginfo.release_of(splat.text) or debuginfo.release_of(text)
            objects = finder.find(release, {f.object for f in frames}, args.kernel, given)
            decoded = symbolize.decode(frames, objects)
            print(textwrap.indent(symbolize.annotate(splat.text, decoded), "  "), end="")
            print(f"  -- {sum(1 for d in decoded if d.sources)} of {len(frames)} frames decoded")
            whys = collections.Counter(d.why for d in decoded if d.why)
            for why, count in sorted(whys.items()):
                print(f"  -- not decoded ({count}): {why}")
    return ExitStatus.FINDING if found else ExitStatus.PASSED


def cmd_bisect(args: argparse.Namespace) -> int:
    """The first commit (of this repository, or of a kernel tree given with -k) that broke a
    scenario: 0 once named; 3 if commits the lab could not test (their module or kernel does
    not build, their guests ran nothing) leave several candidates, or a step broke the lab."""
    from lab import bisect, images, nics, paths, repeat

    selection = list(args.pytest_args)
    if not selection and not args.probe:
        raise UsageError("name the scenario after -- (e.g. -- -k delivers), or give --probe")
    repeat.check_times(args.repeat)
    tree = Path(args.kernel) if args.kernel else None
    kernel_mode = tree is not None and bisect.is_kernel_tree(tree)
    if kernel_mode:
        assert tree is not None
        repo, guest_kernel = tree, ""
    else:
        repo = Path(args.repo) if args.repo else paths.sources().root
        manifest = images.load_manifest()
        guest_kernel = args.kernel or images.default_kernels(manifest)[0]
        if guest_kernel not in manifest:
            images.resolve(guest_kernel, manifest)  # a path must be a kernel
    nics.nic_set(args.nics)
    span = bisect.Range.of(repo, args.good, args.bad)
    out = Path(args.out).resolve() if args.out else paths.new_results_dir("bisect")
    step = bisect.Step(
        mode="kernel" if kernel_mode else "module",
        kernel=guest_kernel,
        nic_set=args.nics,
        accel=args.accel,
        times=args.repeat,
        pytest_args=selection,
        out=str(out),
        probe=args.probe or "",
        fragments=bisect.lab_fragments() if kernel_mode else [],
    )
    what = f"kernel tree {repo}" if kernel_mode else f"{repo} (NTA's kmod/)"
    print(f"bisecting {what} from {args.good} (good) to {args.bad} (bad); results in {out}")
    outcome = bisect.bisect(span, step)
    if outcome.first_bad:
        show = bisect.git(
            repo, "show", "--no-patch", "--format=%H%n%an, %ad%n%n    %s", outcome.first_bad
        )
        print(f"\nfirst bad commit: {show}\nbisect log: {outcome.log}")
        return ExitStatus.PASSED
    if not outcome.candidates:
        raise InfraError(f"the bisection stopped before it named a commit; log {outcome.log}")
    listed = "\n  ".join(outcome.candidates)
    print(f"\nno single first bad commit (commits the lab could not test between); any of:"
          f"\n  {listed}")  # fmt: skip
    return ExitStatus.LAB


def cmd_repro(args: argparse.Namespace) -> int:
    from lab import repro

    return repro.replay(
        Path(args.bundle),
        interactive=not args.no_shell,
        accel_override=args.accel,
        times=args.repeat,
        until_fail=args.until_fail,
    )


def _repeat_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--repeat", type=int, default=1, metavar="N", help=what)
    p.add_argument(
        "--until-fail", action="store_true", help="with --repeat: stop at the first that fails"
    )


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
    _repeat_options(r, "run it N times, each in fresh guests; print how often it failed")
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
    me.add_argument("--rerun", action="append", default=[], metavar="DIR",
                    help="results dir of a re-run of some of their tests: its cases replace "
                    "theirs, and are listed as re-run (repeatable)")  # fmt: skip
    me.add_argument("--bench", help="a bench.json of 'ntalab bench'")
    me.add_argument("-o", "--out", help="the file to write (default: the checkout's docs/)")
    me.set_defaults(func=cmd_measurements)

    be = sub.add_parser(
        "bench",
        parents=[acc, out],
        help="what capture costs the guest: NTA's readers vs AF_PACKET's and tcpdump",
    )
    be.add_argument("-k", "--kernel", default="debian-6.1", help="manifest name, bzImage or tree")
    be.add_argument("--rounds", type=int, default=3, help="A B A B rounds per load")
    be.add_argument(
        "--clocksource",
        choices=["default", "tsc"],
        default="default",
        help="the guest's clock: its kernel's choice (under TCG the HPET, an emulated device) "
        "or the TSC, as on hardware and KVM (tsc=reliable)",
    )
    be.add_argument(
        "--loads",
        help="comma list of fixed, fixed-<size> (the sweep), filtered (fixed, a filter keeping "
        "1 frame in 10), two-readers (fixed, two copies of each sniffer on the NIC), max, web, "
        "bulk (default: all)",
    )
    be.add_argument(
        "--sniffers",
        help="comma list of none, none-loaded, afpacket, tcpdump, pysniff, ntadump (default: "
        "all); each round runs them in that order",
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
    be.set_defaults(func=cmd_bench)

    sc = sub.add_parser(
        "scan", help="kernel reports in logs, their frames decoded to source lines (offline)"
    )
    sc.add_argument("logs", nargs="+", metavar="LOG", help="console logs, dmesg, kmsg.log")
    sc.add_argument(
        "-k", "--kernel", help="manifest name, build tree or vmlinux (default: the log's release)"
    )
    sc.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="KO",
        help="a module's .ko, or a directory of them (a build, a bundle); repeatable",
    )
    sc.add_argument(
        "--fetch-debug",
        action="store_true",
        help="fetch a Debian kernel's -dbg package (about 1 GB) for its vmlinux and modules",
    )
    sc.add_argument("--no-decode", action="store_true", help="reports only")
    sc.set_defaults(func=cmd_scan)

    bi = sub.add_parser(
        "bisect",
        parents=[acc, out],
        help="the first commit of NTA (or, -k KERNEL-TREE, of a kernel) that broke a scenario",
    )
    bi.add_argument("good", metavar="GOOD", help="a commit where the scenario passes")
    bi.add_argument("bad", metavar="BAD", help="a commit where it fails")
    bi.add_argument(
        "-k",
        "--kernel",
        help="the guest kernel (manifest name, bzImage or build tree; default: the first "
        "Debian kernel), or a kernel git tree: then the kernel is bisected",
    )
    bi.add_argument("--nics", default="all", help="NIC set or comma list")
    bi.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="runs per step (bad at the first fail)"
    )
    bi.add_argument("--repo", help="the repository to bisect (default: this lab's checkout)")
    bi.add_argument(
        "--probe",
        metavar="CMD",
        help="run CMD instead of the scenario ($NTA_KO, $NTA_KERNEL, $NTA_RUN; exit 0 good, "
        "125 skip, else bad)",
    )
    # Not REMAINDER: that would take the options after GOOD BAD too (see parse).
    bi.add_argument("pytest_args", nargs="*", help="after --: the scenario (pytest's -k EXPR)")
    bi.set_defaults(func=cmd_bisect)

    rp = sub.add_parser("repro", help="replay a failed scenario's reproducer bundle in a guest")
    rp.add_argument("bundle")
    rp.add_argument("--no-shell", action="store_true", help="replay, report, power off")
    rp.add_argument("--accel", choices=ACCELS, help="default: the bundle's")
    _repeat_options(rp, "replay it N times, each in a fresh guest (no shell); print the rate")
    rp.set_defaults(func=cmd_repro)
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; what follows ``--`` is pytest's (the scenario selection), whatever
    positionals come before it (argparse alone would give it to none after GOOD BAD)."""
    head, tail = list(argv), []
    if "--" in head:
        i = head.index("--")
        head, tail = head[:i], head[i + 1 :]
    p = parser()
    args = p.parse_args(head)
    if tail:
        if not hasattr(args, "pytest_args"):
            p.error(f"unrecognized arguments: -- {' '.join(tail)}")
        args.pytest_args = [*args.pytest_args, *tail]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
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
