"""Where a log's kernel keeps its debug info: the release read from the log, a sanitizer
kernel's build tree, a Debian kernel's -dbg package fetched only when asked (here a small
package built by the test stands in for the 819 MiB one), and what is missing said."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import UsageError, debuginfo, images, paths
from lab.debuginfo import Finder
from tests.conftest import missing

DATA = Path(__file__).parent / "data"
SPLATS = DATA / "splats"
DEBIAN = images.load_manifest()["debian-6.1"]
assert isinstance(DEBIAN, images.PackagedEntry)
RELEASE = DEBIAN.release


@pytest.mark.parametrize(
    ("log", "release"),
    [
        (SPLATS / "kasan.log", "6.10.0-syzkaller-04483-g0be9ae5486cd"),
        (SPLATS / "hung-task.log", "5.4.0-rc1+"),  # "Not tainted ..." on a line of its own
        (SPLATS / "kmsan.log", "5.16.0-rc5-syzkaller"),
        (DATA / "fakeguest" / "boot-splat.log", "6.12.117-kasan"),
    ],
)
def test_the_release_is_read_from_the_report(log: Path, release: str) -> None:
    assert debuginfo.release_of(log.read_text()) == release


def test_a_report_without_a_release_names_none() -> None:
    assert debuginfo.release_of((SPLATS / "ref-leak.log").read_text()) is None


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("NTALAB_CACHE", str(root))
    return root


def elf(tmp_path: Path, name: str, debug: bool = True) -> Path:
    """A small object with (or without) DWARF line tables."""
    if shutil.which("gcc") is None:
        missing("gcc")
    src = tmp_path / f"{name}.c"
    src.write_text("int f(int x)\n{\n\treturn x + 1;\n}\n")
    out = tmp_path / name
    subprocess.run(["gcc", "-c", "-O2", *(["-g"] if debug else []), "-o", str(out), str(src)],
                   check=True)  # fmt: skip
    return out


class Said(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


def test_without_debug_info_what_is_missing_says_how_to_get_it(cache: Path) -> None:
    objects = Finder(False, Said()).find(RELEASE, {"vmlinux", "e1000", "nta"})
    assert objects.vmlinux is None and objects.modules == {}
    package = f"linux-image-{RELEASE}-dbg"
    assert objects.missing["vmlinux"].startswith(
        f"no debug info for {RELEASE} here: --fetch-debug fetches {package} ("
    )
    assert objects.missing["e1000"] == f"module e1000 not taken out of {package} yet: --fetch-debug"
    assert objects.missing["nta"] == "no debug info for module nta: pass --module nta.ko"


def test_an_unknown_kernel_is_named(cache: Path) -> None:
    objects = Finder(True, Said()).find("9.9.9-mine", {"vmlinux"})
    assert (
        "9.9.9-mine is no kernel of the manifest in the cache: pass --kernel"
        in (objects.missing["vmlinux"])
    )


@pytest.fixture
def fake_dbg_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """apt-get download of the -dbg package gives a small package of the same layout."""
    if shutil.which("dpkg-deb") is None:
        missing("dpkg-deb")
    tree = tmp_path / "pkg"
    boot = tree / "usr/lib/debug/boot"
    mods = tree / f"usr/lib/debug/lib/modules/{RELEASE}/kernel/drivers/net/ethernet/intel/e1000"
    boot.mkdir(parents=True)
    mods.mkdir(parents=True)
    shutil.copy(elf(tmp_path, "vmlinux"), boot / f"vmlinux-{RELEASE}")
    shutil.copy(elf(tmp_path, "e1000.ko"), mods / "e1000.ko")
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        f"Package: linux-image-{RELEASE}-dbg\nVersion: {DEBIAN.version}\nArchitecture: amd64\n"
        "Maintainer: ntalab tests <tests@ntalab>\nDescription: stand-in\n"
    )
    deb = tmp_path / "fake.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)  # fmt: skip
    asked: list[list[str]] = []

    def download(specs: list[str], cwd: Path) -> None:
        asked.append(specs)
        shutil.copy(deb, cwd / f"linux-image-{RELEASE}-dbg_{DEBIAN.version}_amd64.deb")

    monkeypatch.setattr(images, "apt_download", download)
    return asked


def test_the_debian_package_is_fetched_once_when_asked(
    cache: Path, fake_dbg_package: list[list[str]]
) -> None:
    """Not without --fetch-debug; with it, downloaded once, vmlinux and the modules a log
    names taken out as they are needed, a module the package lacks said so."""
    assert Finder(False, Said()).find(RELEASE, {"vmlinux"}).vmlinux is None
    assert fake_dbg_package == []
    said = Said()
    first = Finder(True, said).find(RELEASE, {"vmlinux"})
    assert fake_dbg_package == [[f"linux-image-{RELEASE}-dbg={DEBIAN.version}"]]
    root = cache / "debug" / RELEASE
    assert first.vmlinux == root / f"usr/lib/debug/boot/vmlinux-{RELEASE}"
    assert first.vmlinux.read_bytes()[:4] == b"\x7fELF"
    assert any(m.startswith("debian-6.1: downloading") for m in said)
    said.clear()
    second = Finder(True, said).find(RELEASE, {"vmlinux", "e1000", "nosuch"})
    assert fake_dbg_package == [[f"linux-image-{RELEASE}-dbg={DEBIAN.version}"]]  # no more
    assert second.modules["e1000"].name == "e1000.ko"
    assert second.missing == {"nosuch": f"linux-image-{RELEASE}-dbg has no module nosuch"}
    assert [m for m in said if m.startswith("taking")] == [
        f"taking e1000, nosuch out of linux-image-{RELEASE}-dbg_{DEBIAN.version}_amd64.deb "
        "(one pass over it: about a minute)"
    ]
    said.clear()
    third = Finder(True, said).find(RELEASE, {"vmlinux", "e1000", "nosuch"})
    assert third == second and said == []  # nothing taken out again


def built_tree(cache: Path, tmp_path: Path, debug: bool = True) -> Path:
    """A sanitizer kernel as the cache holds it: its release, its build tree."""
    root = cache / "kernels" / "debian-6.1-kasan"
    tree = root / "build"
    (tree / "drivers/net/e1000").mkdir(parents=True)
    (root / "release").write_text("6.1.192-kasan\n")
    shutil.copy(elf(tmp_path, "vmlinux", debug), tree / "vmlinux")
    shutil.copy(elf(tmp_path, "e1000.ko"), tree / "drivers/net/e1000/e1000.ko")
    (tree / "modules.order").write_text("drivers/net/e1000/e1000.ko\n")
    return tree


def test_a_sanitizer_kernel_has_its_build_tree(cache: Path, tmp_path: Path) -> None:
    tree = built_tree(cache, tmp_path)
    objects = Finder(False, Said()).find("6.1.192-kasan", {"vmlinux", "e1000"})
    assert objects.vmlinux == tree / "vmlinux"
    assert objects.modules == {"e1000": tree / "drivers/net/e1000/e1000.ko"}
    assert objects.missing == {}
    by_name = Finder(False, Said()).find(None, {"vmlinux"}, kernel="debian-6.1-kasan")
    assert by_name.vmlinux == tree / "vmlinux"
    by_path = Finder(False, Said()).find(None, {"vmlinux", "e1000"}, kernel=str(tree))
    assert by_path.vmlinux == tree / "vmlinux" and "e1000" in by_path.modules


def test_a_kernel_built_without_debug_info_says_so(cache: Path, tmp_path: Path) -> None:
    tree = built_tree(cache, tmp_path, debug=False)
    objects = Finder(False, Said()).find("6.1.192-kasan", {"vmlinux"})
    assert objects.missing == {
        "vmlinux": f"{tree / 'vmlinux'} was built without debug info (CONFIG_DEBUG_INFO)"
    }


def test_modules_are_given_as_files_or_directories(tmp_path: Path) -> None:
    ko = elf(tmp_path, "nta.ko")
    (tmp_path / "bundle").mkdir()
    shutil.copy(ko, tmp_path / "bundle" / "nta_caller.ko")
    assert debuginfo.module_files(ko) == {"nta": ko}
    assert debuginfo.module_files(tmp_path / "bundle") == {
        "nta_caller": tmp_path / "bundle" / "nta_caller.ko"
    }
    with pytest.raises(UsageError, match=r"not a \.ko"):
        debuginfo.module_files(tmp_path / "nowhere")


def test_the_scan_and_the_decode_need_the_standard_library_only(tmp_path: Path) -> None:
    """As ``python -S`` runs them (no site-packages: no scapy, pexpect or pytest), on a log
    of a kernel whose debug info is at hand."""
    tree = built_tree(tmp_path / "cache", tmp_path)
    code = (
        "import sys\n"
        "from lab import debuginfo, kernlog, symbolize\n"
        "text = open(sys.argv[1]).read()\n"
        "(splat,) = kernlog.scan(text)\n"
        "frames = symbolize.frames(splat.text)\n"
        "objects = debuginfo.Finder(False, print).find(None, {'vmlinux'}, sys.argv[2])\n"
        "print(symbolize.annotate(splat.text, symbolize.decode(frames, objects)), end='')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('scapy', 'pexpect', 'pytest', 'pysniff')))\n"
    )
    log = tmp_path / "console.log"
    log.write_text("[    1.000000] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x4\n")
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code, str(log), str(tree)],
        capture_output=True, text=True, cwd=paths.IMPORT_ROOT, timeout=60,
        env={"PATH": os.environ["PATH"], "NTALAB_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"[    1.000000] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x4 {tmp_path}/vmlinux.c:3",
        "[]",
    ]
