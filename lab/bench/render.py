"""The benchmark's results for people: the table, the targets, the sweep, the plot.

Everything here is derived from a ``BenchResult``; nothing is parsed back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from lab.bench.stats import (
    BASELINE,
    FILTERED,
    KEEP_ONE_IN,
    LOADED,
    ONE_READER,
    READERS,
    TWO_READERS,
    UNFILTERED,
    BenchResult,
    Row,
    Spread,
    Target,
    Verdict,
)

# Other processes' work on the host (in CPUs) over which a row is called out.
CONTENDED = 0.25


def num(x: float) -> str:
    """Three significant figures or so, for columns from 0.01 to 10000."""
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def spread(s: Spread | None) -> str:
    return "-" if s is None else f"{num(s.median)} ({num(s.lo)}..{num(s.hi)})"


def opt(x: float | None, fmt: Callable[[float], str] = num) -> str:
    return "-" if x is None else fmt(x)


def count(x: float) -> str:
    return f"{x:.0f}"


def times(x: float) -> str:
    return f"{x:.2f}x"


COLUMNS = (
    ("load", 10), ("sniffer", 11), ("rx/s", 6), ("rx", 6), ("stack", 6), ("seen", 6),
    ("missed", 6),
    ("capture us/frame", 21), ("process us/frame", 21), ("sys/1k", 6), ("wake/1k", 7),
    ("in kernel", 9), ("buf B", 5), ("cap/tcpdump", 11), ("cap/afpacket", 12), ("host", 5),
    ("retries", 7),
)  # fmt: skip


def load_width(loads: Iterable[str]) -> int:
    """The load column's width: COLUMNS', or the longest load name's (two-readers)."""
    return max([COLUMNS[0][1], *(len(load) for load in loads)])


def table(rows: Sequence[Row]) -> str:
    """The rows as text: medians over the rounds, (min..max) for the CPU columns."""
    widths = [load_width(r.load for r in rows), *(w for _, w in COLUMNS[1:])]

    def line(cells: Sequence[str]) -> str:
        return " ".join(
            f"{c:<{w}}" if i < 2 else f"{c:>{w}}"
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    head = line([name for name, _ in COLUMNS])
    out = [head, "-" * len(head)]
    for r in rows:
        cells = [
            r.load, r.sniffer, f"{r.rx_per_s:.0f}", f"{r.rx:.0f}", opt(r.stack, count),
            f"{r.seen:.0f}", opt(r.missed, count), spread(r.capture_us), spread(r.sniffer_us),
            opt(r.syscalls_per_k.median if r.syscalls_per_k else None),
            opt(r.wakeups_per_k.median if r.wakeups_per_k else None),
            opt(r.kernel_share, lambda x: f"{x:.0%}"),
            opt(r.buf_bytes_per_frame, lambda b: f"{b:.0f}"),
            opt(r.capture_vs_tcpdump, times), opt(r.capture_vs_afpacket, times),
            f"{r.host_others:.2f}", str(len(r.retries)) if r.retries else "",
        ]  # fmt: skip
        out.append(line(cells))
    return "\n".join(out)


def spreads(rows: Sequence[Row]) -> list[str]:
    """Per load: the widest range of capture_us over the rounds, and the none rows' busy
    time it is measured from."""
    out = []
    width = load_width(r.load for r in rows)
    for load in dict.fromkeys(r.load for r in rows):
        mine = [r for r in rows if r.load == load]
        widest = max(mine, key=lambda r: r.capture_us.width)
        base = next((r for r in mine if r.sniffer == BASELINE), None)
        line = f"  {load:<{width}} widest capture range {num(widest.capture_us.width)} us "
        line += f"({widest.sniffer})"
        if base is not None:
            line += f"; none: guest busy {spread(base.busy_us)} us/frame"
        out.append(line)
    return out


def verdict(t: Target) -> str:
    note = f" ({t.note})" if t.note else ""
    if t.verdict is Verdict.MISSED and t.measured is not None and t.limit is not None:
        over = (abs(t.measured) if t.two_sided else t.measured) - t.limit
        return f"missed by {num(over)}{t.unit}{note}"
    if t.verdict is Verdict.UNRESOLVED:
        return f"unresolved: the rounds straddle the limit{note}"
    return f"{t.verdict.value}{note}"


def targets(goals: Sequence[Target]) -> list[str]:
    width = max((len(g.what) for g in goals), default=0)
    at = load_width(g.load for g in goals)
    out = []
    for g in goals:
        measured = "-" if g.measured is None else f"{num(g.measured)}{g.unit}"
        rng = "" if g.lo is None or g.hi is None else f"({num(g.lo)}..{num(g.hi)})"
        bound = "|x| <=" if g.two_sided else "<="
        limit = "-" if g.limit is None else f"{bound} {num(g.limit)}{g.unit}"
        out.append(
            f"  {g.what:<{width}}  {g.load:<{at}} {measured:>8} {rng:<15} {limit:>10}  {verdict(g)}"
        )
    return out


def sweep(result: BenchResult) -> list[str]:
    """capture_us by frame size for each sniffer, and where each NTA reader's line crosses
    its AF_PACKET counterpart's."""
    sizes = sorted(result.sweep.items(), key=lambda kv: kv[1])
    if not sizes:
        return []
    by = {(r.load, r.sniffer): r for r in result.rows}
    sniffers = [s for s in dict.fromkeys(r.sniffer for r in result.rows) if s != BASELINE]
    head = f"  {'sniffer':<12}" + "".join(f"{f'{size} B':>10}" for _, size in sizes)
    out = [head]
    for s in sniffers:
        cells = [by.get((load, s)) for load, _ in sizes]
        out.append(
            f"  {s:<12}" + "".join(f"{num(c.capture_us.median) if c else '-':>10}" for c in cells)
        )
    for ours, theirs in (("ntadump", "tcpdump"), ("pysniff", "afpacket")):
        ratios = []
        for load, size in sizes:
            a, b = by.get((load, ours)), by.get((load, theirs))
            if a and b and b.capture_us.median > 0:
                ratios.append((size, a.capture_us.median / b.capture_us.median))
        if not ratios:
            continue
        shown = ", ".join(f"{size} B {r:.2f}x" for size, r in ratios)
        below = [size for size, r in ratios if r < 1]
        where = f"below {theirs} from {below[0]} B" if below else f"above {theirs} at every size"
        out.append(f"  {ours}/{theirs}: {shown}: {where}")
    return out


def filtered(result: BenchResult) -> list[str]:
    """Each sniffer's capture_us with a filter keeping 1 frame in KEEP_ONE_IN, against its
    own without one: a filter that runs before the copy (or the chunk) should cut the cost
    to about that share."""
    out = []
    for s, thin, whole in against_own(result, FILTERED, UNFILTERED):
        got, base = num(thin.capture_us.median), num(whole.capture_us.median)
        out.append(f"  {s:<12}{got:>8} against {base} unfiltered: {ratio_text(thin, whole)}")
    return out


def against_own(result: BenchResult, load: str, base: str) -> list[tuple[str, Row, Row]]:
    """Each sniffer (not a baseline) with a row at ``load`` and one at ``base``: both rows."""
    by = {(r.load, r.sniffer): r for r in result.rows}
    return [
        (s, by[(load, s)], by[(base, s)])
        for s in dict.fromkeys(r.sniffer for r in result.rows if r.load == load)
        if s not in (BASELINE, LOADED) and (base, s) in by
    ]


def two_readers(result: BenchResult) -> list[str]:
    """Each sniffer's capture_us with READERS copies of it on one device, against its own
    with one (the same frames): what the second reader costs. NTA publishes each chunk to
    every reader of the device in place; AF_PACKET copies each frame once per socket. Then
    each NTA reader against its AF_PACKET counterpart, both doubled and both alone."""
    by = {(r.load, r.sniffer): r for r in result.rows}
    out = []
    for s, two, one in against_own(result, TWO_READERS, ONE_READER):
        more = two.capture_us.median - one.capture_us.median
        got, base = num(two.capture_us.median), num(one.capture_us.median)
        out.append(f"  {s:<12}{got:>8} against {base} with one: {ratio_text(two, one)}; the "
                   f"second reader {'+' if more >= 0 else ''}{num(more)} us/frame")  # fmt: skip
    for ours, theirs in (("ntadump", "tcpdump"), ("pysniff", "afpacket")):
        pair = [by.get((load, s)) for load in (TWO_READERS, ONE_READER) for s in (ours, theirs)]
        a2, b2, a1, b1 = pair
        if a2 is None or b2 is None:
            continue
        both = ratio_text(a2, b2)
        alone = f" (alone: {ratio_text(a1, b1)})" if a1 is not None and b1 is not None else ""
        out.append(f"  {ours} x{READERS} against {theirs} x{READERS}: {both}{alone}")
    return out


def ratio_text(a: Row, b: Row) -> str:
    """a's capture_us over b's, or "-" where b's is not above zero."""
    if b.capture_us.median <= 0:
        return "-"
    return f"{a.capture_us.median / b.capture_us.median:.2f}x"


def report_text(result: BenchResult) -> str:
    out = [f"per frame: {result.unit}", "", table(result.rows)]
    retried = [(r, why) for r in result.rows for why in r.retries]
    if retried:
        out += ["", "infrastructure retries (set-up failed once, then passed):"]
        out += [f"  {r.load} {r.sniffer}: {why}" for r, why in retried]
    busy = [r for r in result.rows if r.host_others > CONTENDED]
    if busy:
        out += ["", f"other work on the host (TCG: it inflates the guest's figures), over "
                f"{CONTENDED} CPUs in the median window:"]  # fmt: skip
        out += [f"  {r.load} {r.sniffer}: {r.host_others:.2f}" for r in busy]
    out += ["", f"spread over {result.rounds} rounds (capture us/frame, max - min):"]
    out += spreads(result.rows)
    swept = sweep(result)
    if swept:
        out += ["", "frame-size sweep, capture us/frame (plotted in bench.png):", *swept]
    thinned = filtered(result)
    if thinned:
        out += ["", f"a filter keeping 1 frame in {KEEP_ONE_IN}, capture us/frame against the "
                f"{UNFILTERED} load's:", *thinned]  # fmt: skip
    doubled = two_readers(result)
    if doubled:
        out += ["", f"{READERS} readers on one device ({READERS} copies of each sniffer), capture "
                f"us/frame against one (the {ONE_READER} load's):", *doubled]  # fmt: skip
    out += ["", "targets (reported, not asserted; judged on the rounds' range):"]
    out += targets(result.targets)
    return "\n".join(out)


def plot(result: BenchResult, path: Path, title: str) -> None:
    """capture_us and the process figure per load and sniffer (the rounds' range as error
    bars), and the frame-size sweep: capture_us per frame against frame size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    sniffers = list(dict.fromkeys(r.sniffer for r in rows))
    colour = {s: f"C{i}" for i, s in enumerate(sniffers)}  # a sniffer keeps its colour
    loads = [ld for ld in dict.fromkeys(r.load for r in rows) if ld not in result.sweep]
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    panels: list[tuple[str, Callable[[Row], Spread | None]]] = [
        ("capture: whole guest over none, us per frame", lambda r: r.capture_us),
        ("process: the sniffer's own CPU, us per frame", lambda r: r.sniffer_us),
    ]
    for ax, (label, figure) in zip(axes[:2], panels, strict=True):
        shown = [
            s for s in sniffers if s != BASELINE and any(figure(r) for r in rows if r.sniffer == s)
        ]
        width = 0.8 / max(len(shown), 1)
        for i, s in enumerate(shown):
            xs, ys, lo, hi = [], [], [], []
            for j, ld in enumerate(loads):
                v = next((figure(r) for r in rows if (r.load, r.sniffer) == (ld, s)), None)
                if v is None:
                    continue
                xs.append(j + i * width)
                ys.append(v.median)
                lo.append(max(v.median - v.lo, 0.0))
                hi.append(max(v.hi - v.median, 0.0))
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=s, color=colour[s])
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks([j + width * (len(shown) - 1) / 2 for j in range(len(loads))], loads)
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[2]
    sizes = sorted(result.sweep.items(), key=lambda kv: kv[1])
    for s in sniffers:
        if s == BASELINE:
            continue
        points = [
            (size, r.capture_us)
            for load, size in sizes
            for r in rows
            if (r.load, r.sniffer) == (load, s)
        ]
        if points:
            xs = [size for size, _ in points]
            ys = [v.median for _, v in points]
            err = [[v.median - v.lo for _, v in points], [v.hi - v.median for _, v in points]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=s, color=colour[s])
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("frame size, bytes")
    ax.set_title("frame-size sweep at the fixed rate: capture us per frame", fontsize=10)
    if sizes:
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
