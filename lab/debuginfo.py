"""Where the debug info of a kernel that wrote a log is: its vmlinux and its modules' .ko.

- The lab's own modules (nta, nta_caller): the module build (``kbuild``)
  keeps DWARF, since Debian's kernel config builds external modules with
  ``-g``; a bundle keeps a copy of its build. ``--module`` names one; else
  the latest build for the kernel's release is taken (and said so).
- A sanitizer kernel: its build tree in the cache (``build/vmlinux``, built
  with line tables, and each module's .ko listed in ``modules.order``).
- A Debian kernel: its ``linux-image-<release>-dbg`` package (819 MiB for
  6.1.0-56-amd64, 5.4 GiB unpacked), fetched only when asked
  (``ntalab scan --fetch-debug``) into ``<cache>/debug/<release>/``: the
  package is kept there and vmlinux taken out of it at once, each module the
  first time a log names one (a pass over the package, about a minute).
- Any other kernel: ``--kernel`` names its vmlinux or build tree.

The release is read from the log itself ("CPU: 0 PID: 1 Comm: x Not tainted
6.1.0-56-amd64 #1"), so a log alone is enough for a kernel of the manifest.
What is missing is said, with how to get it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Collection
from pathlib import Path

from lab import LabError, UsageError, images, kbuild, paths
from lab.symbolize import Objects, module_name

Progress = Callable[[str], None]

# "CPU: 0 UID: 0 PID: 1 Comm: cat Tainted: G    B   W  O  6.12.117-kasan #1 ..."
_RELEASE = re.compile(r"\b(?:Not tainted|Tainted: [A-Z ]*?) +(\d[^\s#]*) #\d+")
# The modules the lab builds itself (kbuild), never in a distribution's package.
LAB_MODULES = ("nta", "nta_caller")
_ELF = b"\x7fELF"


def release_of(text: str) -> str | None:
    """The kernel release a report names in its stack dump's header, if any."""
    m = _RELEASE.search(text)
    return m[1] if m else None


def module_files(path: Path) -> dict[str, Path]:
    """A .ko, or the .ko files in a directory (a module build, a bundle), by module name."""
    if path.is_file() and path.suffix == ".ko":
        return {module_name(path.name): path}
    if path.is_dir():
        return {module_name(p.name): p for p in sorted(path.glob("*.ko"))}
    raise UsageError(f"--module {path}: not a .ko nor a directory holding any")


def debug_root() -> Path:
    return paths.cache_root() / "debug"


def _has_lines(obj: Path) -> bool:
    """Whether ``obj`` has DWARF line tables (a kernel built without debug info has not)."""
    out = subprocess.run(["readelf", "-SW", str(obj)], capture_output=True, text=True).stdout
    return ".debug_line" in out


class Finder:
    """Collects the debug info for the kernel of one log, and what is missing."""

    def __init__(self, fetch: bool, progress: Progress) -> None:
        self.fetch = fetch
        self.progress = progress

    def find(
        self,
        release: str | None,
        needed: Collection[str],
        kernel: str | None = None,
        given: dict[str, Path] | None = None,
    ) -> Objects:
        """The vmlinux and modules for a log of ``release`` that names the objects ``needed``
        ("vmlinux", module names), ``given`` modules first."""
        modules = dict(given or {})
        missing: dict[str, str] = {}
        vmlinux: Path | None = None
        tree: Path | None = None
        manifest = images.load_manifest()
        if kernel is not None and kernel not in manifest:  # a vmlinux or a build tree
            vmlinux, tree, release = self._kernel(kernel, release, missing)
        else:
            if kernel is not None:
                release = _manifest_release(manifest[kernel])
            if release is None:
                missing["vmlinux"] = (
                    "the log names no kernel release (no 'CPU: .. Comm: .. Not tainted "
                    "<release>' line): pass --kernel"
                )
            else:
                vmlinux, tree = self._by_release(release, needed, modules, missing)
        if release is not None:
            self._lab_modules(release, needed, modules)
        if tree is not None:
            modules |= {n: p for n, p in _tree_modules(tree, needed).items() if n not in modules}
        for name in needed:
            if name == "vmlinux":
                if vmlinux is None:
                    missing.setdefault(name, f"no debug info for the kernel {release}")
            elif name not in modules:
                missing.setdefault(
                    name, f"no debug info for module {name}: pass --module {name}.ko"
                )
        return Objects(vmlinux, modules, missing)

    def _lab_modules(self, release: str, needed: Collection[str], modules: dict[str, Path]) -> None:
        """The lab's modules as this checkout builds them for the manifest kernel of
        ``release``, if that build was made (a bundle keeps the build it ran: --module)."""
        wanted = [n for n in LAB_MODULES if n in needed and n not in modules]
        for e in images.load_manifest().values() if wanted else ():
            if _manifest_release(e, check=False) != release:
                continue
            result = kbuild.built(images.cached_kernel(e))
            if result is None or result.module is None:
                continue
            for name in wanted:
                ko = result.module.parent / f"{name}.ko"
                if ko.is_file():
                    self.progress(f"{name}: {ko} (this checkout's build; --module names another)")
                    modules[name] = ko
            return

    def _kernel(
        self, spec: str, release: str | None, missing: dict[str, str]
    ) -> tuple[Path | None, Path | None, str | None]:
        """--kernel: a build tree or a vmlinux (a manifest name is taken by its release)."""
        path = Path(spec)
        if path.is_dir():
            return self._tree_vmlinux(path, missing), path, release
        if path.is_file() and path.read_bytes()[:4] == _ELF:
            if _has_lines(path):
                return path, None, release
            missing["vmlinux"] = f"{path} was built without debug info (CONFIG_DEBUG_INFO)"
            return None, None, release
        raise UsageError(
            f"--kernel {spec}: not a manifest name ({', '.join(images.load_manifest())}), "
            "a kernel build tree or a vmlinux"
        )

    def _tree_vmlinux(self, tree: Path, missing: dict[str, str]) -> Path | None:
        vmlinux = tree / "vmlinux"
        if not vmlinux.is_file():
            missing["vmlinux"] = f"{tree} has no vmlinux"
            return None
        if not _has_lines(vmlinux):
            missing["vmlinux"] = f"{vmlinux} was built without debug info (CONFIG_DEBUG_INFO)"
            return None
        return vmlinux

    def _by_release(
        self,
        release: str,
        needed: Collection[str],
        modules: dict[str, Path],
        missing: dict[str, str],
    ) -> tuple[Path | None, Path | None]:
        """The manifest kernel of ``release``, as the cache holds it."""
        for e in images.load_manifest().values():
            root = images.cache_dir(e)
            if isinstance(e, images.PackagedEntry) and e.release == release:
                return self._debian(e, needed, modules, missing), None
            built = root / "release"
            if (
                isinstance(e, images.SourceEntry)
                and built.is_file()
                and built.read_text().strip() == release
            ):
                return self._tree_vmlinux(root / "build", missing), root / "build"
        missing["vmlinux"] = (
            f"{release} is no kernel of the manifest in the cache: pass --kernel VMLINUX or a "
            "build tree"
        )
        return None, None

    # -- Debian's -dbg packages ------------------------------------------------------

    def _debian(
        self,
        e: images.PackagedEntry,
        needed: Collection[str],
        modules: dict[str, Path],
        missing: dict[str, str],
    ) -> Path | None:
        """vmlinux (and the modules ``needed``) from the kernel's -dbg package, fetched
        only if asked; what is missing says how to get it."""
        package = f"linux-image-{e.release}-dbg"
        root = debug_root() / e.release
        vmlinux = root / "usr/lib/debug/boot" / f"vmlinux-{e.release}"
        wanted = {n for n in needed if n != "vmlinux" and n not in LAB_MODULES and n not in modules}
        with images.locked(root):
            have, absent = _extracted(root, e.release), _absent(root)
            todo = wanted - set(have) - absent
            if self.fetch and not vmlinux.is_file():
                self._download(e, package, root)
            if self.fetch and (todo or not vmlinux.is_file()):
                self._extract(root, e.release, todo)
                have, absent = _extracted(root, e.release), _absent(root)
        for name in wanted:
            if name in have:
                modules[name] = have[name]
            elif name in absent:
                missing[name] = f"{package} has no module {name}"
            else:
                missing[name] = f"module {name} not taken out of {package} yet: --fetch-debug"
        if not vmlinux.is_file():
            missing["vmlinux"] = (
                f"no debug info for {e.release} here: --fetch-debug fetches {package} "
                f"({_size_note(package, e.version)})"
            )
            return None
        return vmlinux

    def _download(self, e: images.PackagedEntry, package: str, root: Path) -> None:
        images.need("apt-get", "dpkg-deb")
        root.mkdir(parents=True, exist_ok=True)
        for old in root.glob("*.deb"):
            old.unlink()
        self.progress(
            f"{e.name}: downloading {package} {e.version} ({_size_note(package, e.version)})"
        )
        start = time.monotonic()
        images.apt_download([f"{package}={e.version}"], root)
        self.progress(f"{e.name}: downloaded in {time.monotonic() - start:.0f}s")

    def _extract(self, root: Path, release: str, modules: set[str]) -> None:
        """vmlinux if not there yet, and ``modules``, in one pass over the package."""
        (deb,) = root.glob("*.deb")
        boot = f"./usr/lib/debug/boot/vmlinux-{release}"
        what = ", ".join(sorted(modules | ({"vmlinux"} if not (root / boot).is_file() else set())))
        self.progress(f"taking {what} out of {deb.name} (one pass over it: about a minute)")
        start = time.monotonic()
        found: set[str] = set()
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = module_name(Path(member.name).name) if member.name.endswith(".ko") else ""
                if not member.isfile() or not (member.name == boot or name in modules):
                    continue
                dest = root / member.name
                if dest.is_file():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                part = dest.with_name(dest.name + ".part")
                with part.open("wb") as f:
                    shutil.copyfileobj(src, f)
                part.rename(dest)
                found.add(name)
        if proc.wait() != 0:
            raise LabError(f"dpkg-deb --fsys-tarfile {deb} failed")
        with (root / "absent.txt").open("a") as f:
            f.writelines(f"{n}\n" for n in sorted(modules - found))
        self.progress(f"taken out in {time.monotonic() - start:.0f}s")


def _manifest_release(e: images.KernelEntry, check: bool = True) -> str | None:
    """A manifest kernel's release; a built kernel's once built (else an error, or None)."""
    if isinstance(e, images.PackagedEntry):
        return e.release
    built = images.cache_dir(e) / "release"
    if built.is_file():
        return built.read_text().strip()
    if check:
        raise LabError(f"kernel {e.name} is not built: run 'ntalab images build {e.name}'")
    return None


def _extracted(root: Path, release: str) -> dict[str, Path]:
    mods = root / "usr/lib/debug/lib/modules" / release
    return {module_name(p.name): p for p in mods.rglob("*.ko")} if mods.is_dir() else {}


def _absent(root: Path) -> set[str]:
    path = root / "absent.txt"
    return set(path.read_text().split()) if path.is_file() else set()


def _size_note(package: str, version: str) -> str:
    """The package's download size, as apt knows it."""
    proc = subprocess.run(
        ["apt-cache", "show", f"{package}={version}"], capture_output=True, text=True
    )
    m = re.search(r"^Size: (\d+)$", proc.stdout, re.M)
    return f"{int(m[1]) / 2**20:.0f} MiB" if m else "its size unknown to apt here"


def _tree_modules(tree: Path, needed: Collection[str]) -> dict[str, Path]:
    """The modules of a kernel build tree, as its modules.order lists them."""
    order = tree / "modules.order"
    if not order.is_file():
        return {}
    found = {}
    for line in order.read_text().split():
        ko = tree / (line.removesuffix(".o") + ".ko" if line.endswith(".o") else line)
        if module_name(ko.name) in needed and ko.is_file():
            found[module_name(ko.name)] = ko
    return found
