"""``ntalab`` / ``python -m lab``: each stage of the lab, callable on its own.

Exit status: 0 done (every test passed), 1 a failed run or a lab error
(a guest that never booted, a build that failed), 2 bad usage (an unknown
option, kernel, NIC or shard), 130 interrupted.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import sys
import tempfile
import textwrap
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
    repeat,
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
    if args.repeat > 1 or args.until_fail:
        return cmd_run_repeated(args, kernels, out)
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


def cmd_run_repeated(args: argparse.Namespace, kernels: list[str], out: Path) -> int:
    """``run --repeat N``: the same run N times in fresh guests; exit 1 if any failed."""
    repeat.check_times(args.repeat)
    done = runner.run_repeated(
        kernels=kernels,
        nic_sets=args.nics or list(nics.NIC_SETS),
        profiles=args.boot_profile or list(BOOT_PROFILES),
        accel=args.accel,
        out=out,
        jobs=args.jobs,
        times=args.repeat,
        until_fail=args.until_fail,
        shard=runner.Shard.parse(args.shard) if args.shard else None,
        pytest_args=[a for a in args.pytest_args if a != "--"],
    )
    print(f"results: {out} (each run in its own directory, the record in {repeat.RECORD})")
    return 1 if done.reproduced or any(a.errors for a in done.attempts) else 0


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


def cmd_bench(args: argparse.Namespace) -> int:
    # Checked before anything is built or booted: a typo costs nothing.
    sniffers = bench.parse_sniffers(args.sniffers)
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


def cmd_scan(args: argparse.Namespace) -> int:
    """Kernel reports in logs, whole, titled, their frames decoded to source lines.

    Offline, on any kernel log; exit 1 if any log holds a report (a finding).
    """
    # Standard library only (with binutils): a CI's or a bug report's log can be
    # scanned where nothing else of the lab is installed.
    from lab import debuginfo, kernlog, symbolize

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
        if not path.is_file():
            raise UsageError(f"{name}: no such log")
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
    return 1 if found else 0


def cmd_bisect(args: argparse.Namespace) -> int:
    """The first commit (of this repository, or of a kernel tree given with -k) that broke a
    scenario; exit 0 once named."""
    from lab import bisect

    selection = [a for a in args.pytest_args if a != "--"]
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
        guest_kernel = args.kernel or images.default_kernels()[0]
        if guest_kernel not in images.load_manifest():
            images.resolve(guest_kernel)  # a path must be a kernel
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
        return 0
    listed = "\n  ".join(outcome.candidates) or "none"
    print(f"\nno single first bad commit (skipped commits between); any of:\n  {listed}")
    return 1


def cmd_repro(args: argparse.Namespace) -> int:
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
    _repeat_options(r, "run it N times, each in fresh guests; print how often it failed")
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser(
        "report", parents=[out], help="merge results dirs (shards) into one report"
    )
    rep.add_argument("dirs", nargs="+", help="results directories of 'ntalab run'")
    rep.set_defaults(func=cmd_report)

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
        default=",".join(bench.SNIFFERS),
        help=f"comma list of {', '.join(bench.SNIFFERS)} (default: all); each round runs "
        "them in that order",
    )
    be.add_argument(
        "--web-requests", type=int, default=600, help="HTTP requests per web trial (0: none)"
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
    rp.add_argument("--accel", choices=["auto", "kvm", "tcg"], help="default: the bundle's")
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
    except UsageError as e:
        print(f"ntalab: error: {e}", file=sys.stderr)
        return 2
    except LabError as e:
        print(f"ntalab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
