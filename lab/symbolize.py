"""A kernel report's stack frames decoded to source lines, as the kernel's
scripts/decode_stacktrace.sh and syzkaller's pkg/symbolizer do.

A frame ``nta_release+0x1a2/0x2c0 [nta]`` names a function, an address as an
offset into it, the function's size, and the module it is in (none: the
kernel). The function's address comes from the object's symbol table
(``readelf -s``: in a module's .ko each function is at an offset into its
section, which ``addr2line -j SECTION`` takes as is), and ``addr2line -f -i``
gives the file and line, with every function inlined there. A frame's
address is a return address, so the line of the call is that of the byte
before it; only a RIP line's is the faulting instruction itself.

A frame whose object is not known, or whose function has another size in the
object than in the log (another build ran), is left as it is, and the decode
says why. The output is syzkaller's: each decoded frame gets its ``file:line``,
and each function inlined into it a line of its own marked ``[inline]``.

Standard library and binutils only (``ntalab scan`` runs anywhere).
"""

from __future__ import annotations

import bisect
import functools
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import LabError

# printk's prefix and a frame anywhere in a line (lockdep prints "at: f+0x1/0x2").
_PREFIX = re.compile(r"^(?:.*?\[\s*\d+\.\d{6}\](?:\[\s*[CT]\d+\])?\s?)?")
_FRAME = re.compile(
    r"(?:^|(?<=[\s(:]))(?:\[<[0-9a-f]+>\]\s*)?"
    r"(?P<func>[A-Za-z_][\w.]*)\+0x(?P<off>[0-9a-f]+)/0x(?P<size>[0-9a-f]+)"
    r"(?: \[(?P<module>[\w-]+)(?: [0-9a-f]+)?\])?"
)
# Lines whose address is the instruction itself, not a return address.
_EXACT = re.compile(r"^(?:RIP: |IP: |pc : |WARNING: )")
# Lines that are a frame and nothing else: each function inlined there gets a line.
_FRAME_LINE = re.compile(
    r"^\s*(?:(?:RIP: (?:[0-9a-f]{4}:)?|IP: )|\? )?(?:\[<[0-9a-f]+>\]\s*)?[A-Za-z_][\w.]*\+0x"
)
_DISCRIMINATOR = re.compile(r" \(discriminator \d+\)$")
# Where a kernel's sources were when it was built, up to the tree's root:
# Debian's packages ("debian/build/build_amd64_none_amd64/net/core/dev.c",
# "/build/reproducible-path/linux-6.1.192/arch/x86/entry/entry_64.S") and trees
# in the lab's cache (".../linux-source-6.1/net/core/dev.c",
# ".../linux-headers-6.1.0-56-common/include/linux/skbuff.h").
# Where the lab builds NTA (lab.kbuild: <cache>/builds/<release>/<digest>/): a copy of
# the module (a bundle keeps one) still names its sources there.
_LAB_BUILD = re.compile(r"^.*/builds/[^/]+/[0-9a-f]{16}/(?=[^/]+$)")
_TREE_ROOT = re.compile(
    r"^(?:.*/)?(?:debian/build/build_[^/]+|linux-(?:headers|source|kbuild)-[^/]+|linux-\d[^/]*)/"
    r"|^\./"
)


@dataclass(frozen=True)
class Frame:
    """One function+offset/size in a report's text."""

    line: int  # index of its line in the text
    whole: bool  # the line is this frame (not a header or lock that names it)
    func: str
    offset: int
    size: int
    module: str  # "" for the kernel itself
    exact: bool  # the faulting address (a RIP line), not a return address
    span: tuple[int, int]  # where in its line "func+0x../0x.." is

    @property
    def object(self) -> str:
        """What holds its debug info: a module's name, or "vmlinux"."""
        return self.module or "vmlinux"


@dataclass(frozen=True)
class Source:
    func: str
    file: str
    line: int


@dataclass(frozen=True)
class Decoded:
    """A frame and where it is: its innermost inlined function first, itself last."""

    frame: Frame
    sources: tuple[Source, ...] = ()
    why: str = ""  # why it is not decoded


@dataclass(frozen=True)
class Objects:
    """The debug info at hand: the kernel's vmlinux, each module's .ko."""

    vmlinux: Path | None = None
    modules: dict[str, Path] = field(default_factory=dict)
    # Why an object is missing, and how to get it, by object name.
    missing: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> Path | None:
        return self.vmlinux if name == "vmlinux" else self.modules.get(module_name(name))


def module_name(name: str) -> str:
    """As the kernel spells a module in a stack trace: 8139cp, nf_tables (never "nf-tables")."""
    return name.removesuffix(".ko").replace("-", "_")


def frames(text: str) -> list[Frame]:
    found = []
    for i, raw in enumerate(text.splitlines()):
        prefix = _PREFIX.match(raw)
        body = raw[prefix.end() if prefix else 0 :]
        exact = bool(_EXACT.match(body.strip()))
        whole = bool(_FRAME_LINE.match(body))
        for m in _FRAME.finditer(raw, prefix.end() if prefix else 0):
            found.append(
                Frame(
                    i,
                    whole,
                    m["func"],
                    int(m["off"], 16),
                    int(m["size"], 16),
                    module_name(m["module"] or ""),
                    exact,
                    (m.start("func"), m.end("size")),
                )
            )
    return found


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            raise LabError(
                f"{tool} (binutils) is needed to decode frames: apt-get install binutils"
            )


@dataclass(frozen=True)
class _Symbol:
    section: str  # "" in an executable (vmlinux): addresses are absolute
    address: int
    size: int  # as the ELF symbol table says
    span: int  # up to the next symbol: the size the kernel prints (kallsyms), padding and all

    def fits(self, size: int) -> bool:
        return size in (self.size, self.span)


_SECTION = re.compile(
    r"^\s*\[\s*(\d+)\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+[0-9a-f]+\s+(\w*)\s",
    re.M,
)
_SYMBOL = re.compile(
    r"^\s*\d+: ([0-9a-f]+)\s+(\d+) (FUNC|NOTYPE|OBJECT)\s+\w+\s+\w+\s+(\d+) (\S+)$", re.M
)


@functools.cache
def _symbols(obj: Path) -> dict[str, list[_Symbol]]:
    """The symbols of ``obj``'s code by name (static functions may share one)."""
    need("readelf")
    out = _run(["readelf", "-hSsW", str(obj)])
    relocatable = bool(re.search(r"^\s*Type:\s+REL ", out, re.M))
    code = {  # executable sections: index -> (name, start, end)
        int(m[1]): (m[2], int(m[3], 16), int(m[3], 16) + int(m[4], 16))
        for m in _SECTION.finditer(out)
        if "X" in m[5]
    }
    found = [
        (int(m[4]), int(m[1], 16), int(m[2]), m[3], m[5])
        for m in _SYMBOL.finditer(out)
        if int(m[4]) in code
    ]
    # Each symbol's span, as kallsyms makes it: to the next symbol of its section.
    starts: dict[int, list[int]] = {}
    for ndx, address, *_ in found:
        starts.setdefault(ndx, []).append(address)
    for ndx in starts:
        starts[ndx] = sorted(set(starts[ndx]))
    table: dict[str, list[_Symbol]] = {}
    for ndx, address, size, kind, name in found:
        if kind == "OBJECT":
            continue
        section, base, end = code[ndx]
        higher = starts[ndx][bisect.bisect_right(starts[ndx], address) :]
        nxt = higher[0] if higher else (end - base if relocatable else end)
        table.setdefault(name, []).append(
            _Symbol(section if relocatable else "", address, size, nxt - address)
        )
    return table


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"{argv[0]} failed on {argv[-1]}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _addr2line(obj: Path, section: str, addresses: Sequence[int]) -> dict[int, list[Source]]:
    need("addr2line")
    argv = ["addr2line", "-a", "-f", "-i", "-e", str(obj)]
    if section:
        argv += ["-j", section]
    lines = _run(argv + [f"{a:#x}" for a in addresses]).splitlines()
    out: dict[int, list[Source]] = {}
    current: list[Source] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("0x"):
            current = out.setdefault(int(lines[i], 16), [])
            i += 1
            continue
        func, where = lines[i], lines[i + 1] if i + 1 < len(lines) else "??:0"
        file, _, line = _DISCRIMINATOR.sub("", where).rpartition(":")
        if file != "??" and line.isdigit() and int(line) > 0:
            current.append(Source(func, file, int(line)))
        i += 2
    return out


def _short(file: str, module_dir: Path | None) -> str:
    """A source path as a developer reads it: ``kmod/nta_dev.c``, ``net/core/dev.c``."""
    if module_dir is not None and file.startswith(f"{module_dir}/"):
        return "kmod/" + file.removeprefix(f"{module_dir}/")
    if module_dir is not None and (m := _LAB_BUILD.match(file)):  # a copy (a bundle's)
        return "kmod/" + file[m.end() :]
    return _TREE_ROOT.sub("", file)


def decode(found: Iterable[Frame], objects: Objects) -> list[Decoded]:
    """Each frame's source lines, or why it has none."""
    done: dict[Frame, Decoded] = {}
    queries: dict[tuple[Path, str], dict[int, list[Frame]]] = {}
    for frame in found:
        path = objects.path(frame.object)
        if path is None:
            why = objects.missing.get(frame.object, f"no debug info for {frame.object}")
            done[frame] = Decoded(frame, why=why)
            continue
        candidates = _symbols(path).get(frame.func, [])
        sym = next((s for s in candidates if s.fits(frame.size)), None)
        if sym is None:
            sizes = ", ".join(f"{s.span:#x}" for s in candidates) or "none"
            done[frame] = Decoded(
                frame,
                why=f"{frame.func} is {frame.size:#x} bytes in the log, {sizes} in {path}: "
                "not the build that ran",
            )
            continue
        # The call's line, not the next one's: the byte before a return address.
        address = sym.address + frame.offset - (0 if frame.exact or frame.offset == 0 else 1)
        queries.setdefault((path, sym.section), {}).setdefault(address, []).append(frame)
    for (path, section), by_address in queries.items():
        module_dir = path.resolve().parent if path is not objects.vmlinux else None
        sources = _addr2line(path, section, sorted(by_address))
        for address, group in by_address.items():
            found_sources = merged(
                Source(s.func, _short(s.file, module_dir), s.line) for s in sources.get(address, [])
            )
            for frame in group:
                why = "" if found_sources else f"{path} has no line for it"
                done[frame] = Decoded(frame, found_sources, why)
    return list(done.values())


def merged(sources: Iterable[Source]) -> tuple[Source, ...]:
    """Inlining levels of one function as one: GCC may inline a function's body into an
    out-of-line copy of itself, and addr2line then names it twice; the inner line is
    where the address is."""
    out: list[Source] = []
    for s in sources:
        if not out or out[-1].func != s.func:
            out.append(s)
    return tuple(out)


def annotate(text: str, decoded: Sequence[Decoded]) -> str:
    """``text`` with each decoded frame's ``file:line`` added, syzkaller's way::

    nta_reader_free kmod/nta_dev.c:657 [inline]
    nta_release+0x1a2/0x2c0 kmod/nta_dev.c:737 [nta]
    """
    by_line: dict[int, list[Decoded]] = {}
    for d in decoded:
        if d.sources:
            by_line.setdefault(d.frame.line, []).append(d)
    out = []
    for i, raw in enumerate(text.splitlines()):
        ds = sorted(by_line.get(i, []), key=lambda d: d.frame.span)
        if len(ds) != 1:  # none, or several frames in one line: as it is
            out.append(raw)
            continue
        d = ds[0]
        a, b = d.frame.span
        *inlined, own = d.sources
        for s in inlined if d.frame.whole else ():
            out.append(f"{raw[:a]}{s.func} {s.file}:{s.line} [inline]{raw[b:]}")
        out.append(f"{raw[:a]}{raw[a:b]} {own.file}:{own.line}{raw[b:]}")
    return "\n".join(out) + "\n"
