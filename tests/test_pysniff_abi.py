"""pysniff's ABI mirror against kmod/nta_uapi.h, compiled: sizes, offsets, ioctls, enums.

A C probe is generated from the header itself (every member of every struct
it declares, every #define and enum value), built with the host's gcc and
run; its output is compared with what pysniff.abi says. A member added,
removed, moved, resized or made signed in the header fails this test until
the mirror follows. Without gcc or the kernel's uapi headers the test is
skipped on a workstation and fails under CI (CI set), so CI cannot pass by
not checking.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pysniff import abi
from tests.conftest import missing

REPO = Path(__file__).resolve().parents[1]
HEADER = REPO / "kmod" / "nta_uapi.h"

STRUCT_RE = re.compile(r"^struct (nta_\w+) \{(.*?)^\};", re.S | re.M)
# A member: a fixed-width scalar (__u32 x;), or a struct (struct nta_pool_info pools[N];).
MEMBER_RE = re.compile(r"^\s*(__[us]\d+|struct nta_\w+)\s+(\w+)(?:\[(\w+)\])?;", re.M)
ENUM_RE = re.compile(r"^enum nta_bad_commit \{(.*?)^\};", re.S | re.M)
ENUM_NAME_RE = re.compile(r"^\s*(NTA_\w+)", re.M)
DEFINE_RE = re.compile(r"^#define\s+(NTA_\w+)\s", re.M)
NOT_NUMBERS = {"NTA_DEVICE_NAME"}


def unavailable(why: str) -> None:
    missing(f"{why}: the ABI check needs gcc and linux-libc-dev")


def probe_source(header: Path) -> str:
    """A C program printing the layout of everything the header declares."""
    text = header.read_text()
    lines = []
    for name, body in STRUCT_RE.findall(text):
        lines.append(f'P("size {name} %zu\\n", sizeof(struct {name}));')
        for kind, member, count in MEMBER_RE.findall(body):
            elem = f"((struct {name} *)0)->{member}" + ("[0]" if count else "")
            # A struct has no sign: 0, as pysniff's nested layouts say.
            signed = "0" if kind.startswith("struct") else f"(int)((__typeof__({elem}))-1 < 0)"
            lines.append(
                f'P("member {name} {member} %zu %zu %d\\n", offsetof(struct {name}, {member}), '
                f"sizeof(((struct {name} *)0)->{member}), {signed});"
            )
    enum = ENUM_RE.search(text)
    assert enum, "enum nta_bad_commit not found in the header"
    for value in ENUM_NAME_RE.findall(enum.group(1)):
        lines.append(f'P("const {value} %llu\\n", (unsigned long long){value});')
    for define in DEFINE_RE.findall(text):
        if define not in NOT_NUMBERS:
            lines.append(f'P("const {define} %llu\\n", (unsigned long long)({define}));')
    body = "\n\t".join(lines)
    return (
        '#include <stddef.h>\n#include <stdio.h>\n#include "nta_uapi.h"\n'
        f"#define P printf\nint main(void)\n{{\n\t{body}\n\treturn 0;\n}}\n"
    )


def c_view(header: Path, tmp: Path) -> dict[str, object]:
    """What the compiler says, as comparable facts."""
    gcc = shutil.which("gcc")
    if gcc is None:
        unavailable("gcc not found")
    if not Path("/usr/include/linux/types.h").exists():
        unavailable("/usr/include/linux/types.h missing (linux-libc-dev)")
    src, exe = tmp / "probe.c", tmp / "probe"
    src.write_text(probe_source(header))
    cc = [str(gcc), "-std=gnu11", "-Wall", "-Werror", "-I", str(header.parent), "-o", str(exe)]
    built = subprocess.run([*cc, str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    facts: dict[str, object] = {}
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "size":
            facts[f"sizeof {rest[0]}"] = int(rest[1])
        elif kind == "member":
            struct, member, offset, size, signed = rest
            facts[f"{struct}.{member}"] = (int(offset), int(size), signed == "1")
        else:
            facts[rest[0]] = int(rest[1])
    return facts


def python_view() -> dict[str, object]:
    """The same facts, from pysniff.abi."""
    facts: dict[str, object] = {}
    for layout in abi.LAYOUTS:
        facts[f"sizeof {layout.c_name}"] = layout.size
        for f in layout.fields:
            facts[f"{layout.c_name}.{f.name}"] = (f.offset, f.size, f.code.islower())
    facts.update(
        NTA_MAGIC=abi.MAGIC,
        NTA_ABI_VERSION=abi.ABI_VERSION,
        NTA_MMAP_META_OFFSET=abi.MMAP_META_OFFSET,
        NTA_MAX_POOLS=abi.MAX_POOLS,
        NTA_POOL_READERS=abi.POOL_READERS,
        NTA_RECORD_VLAN=abi.RECORD_VLAN,
        NTA_RECORD_CONTD=abi.RECORD_CONTD,
        NTA_RECORD_COPY=abi.RECORD_COPY,
        NTA_RECORD_OUTGOING=abi.RECORD_OUTGOING,
        NTA_DIR_IN=abi.Direction.IN,
        NTA_DIR_OUT=abi.Direction.OUT,
        NTA_DIR_INOUT=abi.Direction.INOUT,
        NTA_COMMIT_NEED_WAKEUP=abi.COMMIT_NEED_WAKEUP,
        NTA_DEV_GONE=abi.DEV_GONE,
        NTA_IOC_MAGIC=ord(abi.IOC_MAGIC),
        NTA_BAD_COMMIT_MAX=abi.BAD_COMMIT_MAX,
        **abi.IOCTLS,
        **{f"NTA_BAD_{why.name}": why.value for why in abi.BadCommit},
    )
    return facts


def drift(c: dict[str, object], py: dict[str, object]) -> list[str]:
    return [
        f"{key}: header {c.get(key, 'absent')}, pysniff {py.get(key, 'absent')}"
        for key in sorted(set(c) | set(py))
        if c.get(key) != py.get(key)
    ]


def test_mirror_matches_the_header(tmp_path: Path) -> None:
    c = c_view(HEADER, tmp_path)
    assert len(c) > 80  # the probe really saw the structs
    assert drift(c, python_view()) == []


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (("__u16 vlan_tci;", "__u32 vlan_tci;"), "nta_record.vlan_tci"),
        (("__u32 reserved0;\n", "__u32 reserved0;\n\t__u32 extra;\n"), "nta_meta.extra"),
        (("__s32 ifindex;\t\t/* receiving", "__u32 ifindex;\t\t/* receiving"), "ifindex"),
        (("NTA_BAD_GENERATION,", "NTA_BAD_GENERATION, NTA_BAD_NEW,"), "NTA_BAD_RESERVED"),
        (("__u16 vlan_proto;", "__u16 vlan_proto_x;"), "nta_record.vlan_proto"),
        (("#define NTA_RECORD_CONTD\t0x0002U", "#define NTA_RECORD_CONTD\t0x0008U"), "CONTD"),
        (("_IOR(NTA_IOC_MAGIC, 3,", "_IOR(NTA_IOC_MAGIC, 5,"), "NTA_IOC_STATS"),
        (
            ("__s32 ifindex;\t\t\t/* the device", "__u64 ifindex;\t\t\t/* the device"),
            "nta_pool_info.ifindex",
        ),
        (("NTA_MAX_POOLS\t\t8", "NTA_MAX_POOLS\t\t9"), "nta_meta.pools"),
        (
            ("__u16 pool;\t\t/* nta_record.pool */", "__u32 pool;\t\t/* nta_record.pool */"),
            "nta_commit.pool",
        ),
    ],
)
def test_drift_is_caught(tmp_path: Path, change: tuple[str, str], expect: str) -> None:
    """A header edited behind the mirror's back fails the comparison, at the edited item."""
    text = HEADER.read_text()
    assert change[0] in text
    edited = tmp_path / "inc" / "nta_uapi.h"
    edited.parent.mkdir()
    edited.write_text(text.replace(change[0], change[1], 1))
    problems = drift(c_view(edited, tmp_path), python_view())
    assert any(expect in p for p in problems), problems


def test_ioctl_numbers_follow_asm_generic() -> None:
    # _IOWR('N', 4, 120 bytes): dir 3 << 30 | 120 << 16 | 'N' << 8 | 4
    assert abi.IOC_DEV_STATS == 3 << 30 | 120 << 16 | 0x4E << 8 | 4
    assert abi.IOC_ATTACH == 0x40084E01
