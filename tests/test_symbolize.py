"""Frames decoded to source lines, against NTA as the lab builds it for debian-6.1 (DWARF from
Debian's -g), with the expected lines found independently: the call sites from objdump's
relocations, the lines from the source text."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import images, kbuild, kernlog, paths, symbolize
from lab.symbolize import Frame, Objects
from tests.conftest import missing

SPLATS = Path(__file__).parent / "data" / "splats"
NTA_DEV = paths.sources().kmod / "nta_dev.c"


def test_frames_are_read_as_the_kernel_prints_them() -> None:
    text = (
        "[   12.000001] RIP: 0010:nta_release+0x1a2/0x2c0 [nta]\n"
        "[   12.000002]  ? e1000_clean+0x3f/0x90 [e1000]\n"
        "[   12.000003][  T123]  __netdev_alloc_frag_align+0x5/0x30\n"
        "    [<ffffffff81234567>] kmalloc_trace+0x26/0x90\n"
        "#0: ffff8880 (rtnl_mutex){+.+.}-{3:3}, at: rtnl_lock+0x17/0x20\n"
        "[   12.000004] CPU: 0 PID: 1 Comm: x Not tainted 6.1.0-56-amd64 #1\n"
    )
    got = [
        (f.line, f.whole, f.func, f.offset, f.size, f.module, f.exact)
        for f in symbolize.frames(text)
    ]
    assert got == [
        (0, True, "nta_release", 0x1A2, 0x2C0, "nta", True),
        (1, True, "e1000_clean", 0x3F, 0x90, "e1000", False),
        (2, True, "__netdev_alloc_frag_align", 5, 0x30, "", False),
        (3, True, "kmalloc_trace", 0x26, 0x90, "", False),
        (4, False, "rtnl_lock", 0x17, 0x20, "", False),
    ]
    assert symbolize.module_name("8139cp.ko") == "8139cp"
    assert symbolize.module_name("nf-tables") == "nf_tables"


def test_frames_without_debug_info_are_left_as_they_are_and_said_why() -> None:
    text = "  foo+0x1/0x10 [mystery]\n  bar+0x2/0x20\n"
    objects = Objects(missing={"vmlinux": "no vmlinux here"})
    decoded = symbolize.decode(symbolize.frames(text), objects)
    assert [d.why for d in decoded] == ["no debug info for mystery", "no vmlinux here"]
    assert symbolize.annotate(text, decoded) == text


NORETURN_LAST = """\
__attribute__((noreturn)) void die(int code);
int other(int x);

int f(int x)
{
	if (x > 3)
		return other(x) + 1;
	die(x);
}

int next_function(int x)
{
	return x * 7;
}
"""


def test_a_noreturn_call_that_ends_a_function_is_decoded_in_that_function(
    tmp_path: Path,
) -> None:
    """Its return address is the next function's first byte; the kernel prints it as
    ``f+0x1b/0x1b`` (%pB), and the line is the call's: the byte before it. (GCC gives the
    byte after most calls the call's line anyway; not here.)"""
    if shutil.which("gcc") is None:
        missing("gcc")
    (tmp_path / "t.c").write_text(NORETURN_LAST)
    obj = tmp_path / "t.o"
    subprocess.run(
        ["gcc", "-O2", "-g", "-c", "-falign-functions=1", "-fno-stack-protector",
         "-fcf-protection=none", "-o", str(obj), str(tmp_path / "t.c")],
        check=True,
    )  # fmt: skip
    size = symbol_size(obj, "f")
    assert calls(obj, "f")[-1] == ("die", size)  # the call is f's last instruction
    (d,) = symbolize.decode(
        symbolize.frames(f" f+{size:#x}/{size:#x} [t]"), Objects(modules={"t": obj})
    )
    assert d.sources == (symbolize.Source("f", "kmod/t.c", 8),)


def test_a_function_inlined_into_itself_is_one_frame() -> None:
    """addr2line names the body GCC inlined into an out-of-line copy of the same function
    as a level of its own; the inner line (the call) is the frame's."""
    S = symbolize.Source
    got = symbolize.merged(
        [S("fallback", "kmod/h.c", 136), S("alloc", "kmod/h.c", 147), S("alloc", "kmod/h.c", 140)]
    )
    assert got == (S("fallback", "kmod/h.c", 136), S("alloc", "kmod/h.c", 147))


# -- against a real module build --------------------------------------------------------


@pytest.fixture(scope="module")
def nta_ko() -> Path:
    """NTA built for debian-6.1 from this checkout (make test fetches that kernel)."""
    kernel = images.provide(images.load_manifest()["debian-6.1"])
    result = kbuild.build(kernel)
    assert result.module is not None, result.log.read_text()[-2000:]
    return result.module


def function_lines(source: Path, func: str) -> tuple[int, list[str]]:
    """The line a C function's definition starts on, and its lines up to its closing brace."""
    lines = source.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^\S.*\b{func}\(", line))
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return start + 1, lines[start : end + 1]


def calls(ko: Path, func: str) -> list[tuple[str, int]]:
    """Each function ``func`` calls, through a relocation or straight (a static function of
    the same section), with the return address's offset into ``func``: what a stack trace
    through that call prints."""
    out = subprocess.run(
        ["objdump", "-dr", "--no-show-raw-insn", "-j", ".text", str(ko)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    body = re.search(rf"^([0-9a-f]+) <{func}>:\n(.*?)\n\n", out, re.M | re.S)
    assert body is not None
    base = int(body[1], 16)
    relocs = dict(re.findall(r"^\s+([0-9a-f]+): R_X86_64_PLT32\s+(\S+)-0x4$", body[2], re.M))
    found = []
    for at, named in re.findall(r"^\s+([0-9a-f]+):\s+call\s+[0-9a-f]+ <([^>]*)>", body[2], re.M):
        # A call rel32 (e8, then 4 bytes) through a relocation names its target there;
        # a straight one names it in objdump's <...>, without an offset.
        target = relocs.get(f"{int(at, 16) + 1:x}") or (named if "+" not in named else "")
        if target and target != "__fentry__":
            found.append((target, int(at, 16) + 5 - base))
    return found


def symbol_size(ko: Path, func: str) -> int:
    out = subprocess.run(["readelf", "-sW", str(ko)], capture_output=True, text=True).stdout
    m = re.search(rf"^\s*\d+: [0-9a-f]+\s+(\d+) FUNC .* {func}$", out, re.M)
    assert m is not None
    return int(m[1])


def decode_line(line: str, ko: Path) -> str:
    found = symbolize.frames(line)
    return symbolize.annotate(line, symbolize.decode(found, Objects(modules={"nta": ko})))


def test_a_faulting_address_is_decoded_to_its_own_line(nta_ko: Path) -> None:
    """A RIP line at a function's first byte: the line its body opens on (its brace)."""
    size = symbol_size(nta_ko, "nta_release")
    definition, body = function_lines(NTA_DEV, "nta_release")
    start = definition + body.index("{")
    line = f"[   12.000000] RIP: 0010:nta_release+0x0/{size:#x} [nta]\n"
    want = f"[   12.000000] RIP: 0010:nta_release+0x0/{size:#x} kmod/nta_dev.c:{start} [nta]\n"
    assert decode_line(line, nta_ko) == want


def test_a_return_address_is_decoded_to_the_line_of_its_call(nta_ko: Path) -> None:
    """A call trace's address is where the call returns to: the line is the call's (the
    byte before it), not the next statement's."""
    size = symbol_size(nta_ko, "nta_release")
    start, body = function_lines(NTA_DEV, "nta_release")
    ret = dict(calls(nta_ko, "nta_release"))["rtnl_lock"]
    (at,) = [start + i for i, line in enumerate(body) if "rtnl_lock();" in line]
    line = f"[   12.000000]  nta_release+{ret:#x}/{size:#x} [nta]\n"
    want = f"[   12.000000]  nta_release+{ret:#x}/{size:#x} kmod/nta_dev.c:{at} [nta]\n"
    assert decode_line(line, nta_ko) == want


def test_an_inlined_call_is_its_own_frame(nta_ko: Path) -> None:
    """nta_reader_put_pools is inlined into nta_release: the call it makes decodes to its
    line, marked [inline], then to the line in nta_release that called it."""
    inner_start, inner = function_lines(NTA_DEV, "nta_reader_put_pools")
    callee = next(m[1] for line in inner[2:] if (m := re.match(r"^\t+(\w+)\(", line)))
    (callee_line,) = [inner_start + i for i, line in enumerate(inner) if f"\t{callee}(" in line]
    rets = [ret for target, ret in calls(nta_ko, "nta_release") if target == callee]
    assert rets and "nta_reader_put_pools" not in dict(calls(nta_ko, "nta_release")), "not inlined"
    start, body = function_lines(NTA_DEV, "nta_release")
    (caller_line,) = [
        start + i for i, line in enumerate(body) if "nta_reader_put_pools(r);" in line
    ]
    size = symbol_size(nta_ko, "nta_release")
    line = f" nta_release+{rets[0]:#x}/{size:#x} [nta]\n"
    assert decode_line(line, nta_ko) == (
        f" nta_reader_put_pools kmod/nta_dev.c:{callee_line} [inline] [nta]\n"
        f" nta_release+{rets[0]:#x}/{size:#x} kmod/nta_dev.c:{caller_line} [nta]\n"
    )


def kallsyms_size(ko: Path, func: str) -> int:
    """The size the kernel prints: up to the next symbol (alignment padding included)."""
    out = subprocess.run(["nm", "-n", str(ko)], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if len(line.split()) == 3]
    text = [(int(a, 16), n) for a, t, n in rows if t in "tT"]
    i = next(i for i, (_, n) in enumerate(text) if n == func)
    return text[i + 1][0] - text[i][0]


def test_the_size_the_kernel_prints_is_the_functions(nta_ko: Path) -> None:
    """kallsyms prints a function's size up to the next symbol, padding included (0xf0
    for a function of 235 bytes): that is the same build. (Which function of nta_dev.c has
    padding after it changes with the module's code: the first that has.)"""
    out = subprocess.run(["readelf", "-sW", str(nta_ko)], capture_output=True, text=True).stdout
    funcs = set(re.findall(r"^\s*\d+: [0-9a-f]+\s+\d+ FUNC .* (\w+)$", out, re.M))
    defined = re.findall(r"^\S.*\b(nta_\w+)\(", NTA_DEV.read_text(), re.M)
    func, padded = next(
        (f, kallsyms_size(nta_ko, f))
        for f in defined
        if f in funcs and kallsyms_size(nta_ko, f) > symbol_size(nta_ko, f)
    )
    (d,) = symbolize.decode(
        symbolize.frames(f" {func}+0x1/{padded:#x} [nta]"), Objects(modules={"nta": nta_ko})
    )
    assert d.sources and d.sources[-1].file == "kmod/nta_dev.c", d.why


def test_a_copy_of_the_module_names_its_sources_as_the_build_does(
    nta_ko: Path, tmp_path: Path
) -> None:
    """A bundle keeps a copy of the module it ran: its DWARF still names the build's
    directory, which reads as kmod/ all the same."""
    copy = tmp_path / "bundle" / "nta.ko"
    copy.parent.mkdir()
    shutil.copy(nta_ko, copy)
    line = (
        f"[   12.000000] RIP: 0010:nta_release+0x0/{symbol_size(nta_ko, 'nta_release'):#x} [nta]\n"
    )
    assert decode_line(line, copy) == decode_line(line, nta_ko)
    assert "kmod/nta_dev.c:" in decode_line(line, copy)


def test_another_build_is_not_decoded(nta_ko: Path) -> None:
    """A function of another size than in the module given: another build ran, and its
    lines would be wrong."""
    size = kallsyms_size(nta_ko, "nta_release")
    line = f" nta_release+0x10/{size + 16:#x} [nta]\n"
    (d,) = symbolize.decode(symbolize.frames(line), Objects(modules={"nta": nta_ko}))
    assert d.sources == () and "not the build that ran" in d.why


def test_decoded_reports_scan_the_same(nta_ko: Path) -> None:
    """Decoded lines are syzkaller's: the scanner reads a decoded report as the original."""
    size = symbol_size(nta_ko, "nta_release")
    ret = dict(calls(nta_ko, "nta_release"))["rtnl_lock"]
    text = (
        (SPLATS / "warning.log")
        .read_text()
        .replace("ida_free+0x370/0x420", f"nta_release+{ret:#x}/{size:#x} [nta]")
    )
    decoded = symbolize.decode(symbolize.frames(text), Objects(modules={"nta": nta_ko}))
    assert any(d.sources for d in decoded)
    annotated = symbolize.annotate(text, decoded)
    assert "kmod/nta_dev.c:" in annotated
    got = kernlog.scan(annotated)
    assert [(s.kind, s.title) for s in got] == [(s.kind, s.title) for s in kernlog.scan(text)]


def test_ntalab_scan_decodes_a_log_offline(nta_ko: Path, tmp_path: Path) -> None:
    """The whole command on a log with an nta frame: its report, title and decoded frame;
    what it could not decode, said; exit 1 (a report found)."""
    size = symbol_size(nta_ko, "nta_release")
    ret = dict(calls(nta_ko, "nta_release"))["rtnl_lock"]
    start, body = function_lines(NTA_DEV, "nta_release")
    (at,) = [start + i for i, line in enumerate(body) if "rtnl_lock();" in line]
    log = tmp_path / "console.log"
    log.write_text(
        "[   40.000000] INFO: task cat:123 blocked for more than 20 seconds.\n"
        "[   40.000001]       Not tainted 0.0.1-nowhere #1\n"
        "[   40.000003] Call Trace:\n"
        f"[   40.000006]  nta_release+{ret:#x}/{size:#x} [nta]\n"
        "[   40.000008]  __fput+0x91/0x280\n"
        "[   40.000009] e1000: eth0 NIC Link is Up\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "scan", str(log), "--module", str(nta_ko)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"{log}: 1 kernel report"
    assert f"{log}:1-5: [hung-task] INFO: task cat:123 blocked for more than 20 seconds" in out
    assert f"  [   40.000006]  nta_release+{ret:#x}/{size:#x} kmod/nta_dev.c:{at} [nta]" in out
    assert "  -- 1 of 2 frames decoded" in out
    assert any("0.0.1-nowhere is no kernel of the manifest" in line for line in out)
    assert not any("Link is Up" in line for line in out)


def test_ntalab_scan_of_a_clean_log_exits_0(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "scan", str(SPLATS / "clean" / "program-faults.log")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.endswith("no kernel reports\n")


def test_the_frame_module_is_what_the_object_lookup_uses() -> None:
    assert Frame(0, True, "f", 0, 1, "", False, (0, 1)).object == "vmlinux"
    assert Frame(0, True, "f", 0, 1, "e1000", False, (0, 1)).object == "e1000"


def test_ntalab_scan_on_every_captured_log() -> None:
    """Each captured log's reports, as the scanner makes them (extent, kind, title); their
    kernels (syzkaller's) are none of the manifest's, and the decode says so."""
    logs = sorted(SPLATS.glob("*.log"))
    proc = subprocess.run(
        [sys.executable, "-m", "lab", "scan", *map(str, logs)],
        capture_output=True, text=True, timeout=300, cwd=paths.IMPORT_ROOT,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.splitlines()
    for log in logs:
        splats = kernlog.scan_files([log])
        n = len(splats)
        assert f"{log}: {n} kernel report{'s' if n != 1 else ''}" in out
        for s in splats:
            assert f"{log}:{s.start}-{s.end}: [{s.kind}] {s.name}" in out
    assert any("is no kernel of the manifest in the cache: pass --kernel" in line for line in out)
