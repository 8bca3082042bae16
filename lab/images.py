"""Stage 1, provision: the guest kernel manifest and the cache of unpacked kernels.

A manifest entry pins Debian's image, headers and kbuild packages to one exact
version. Fetching downloads them with ``apt-get download`` and unpacks them
with ``dpkg-deb -x`` under ``images/cache/<name>/``, so nothing on the host's
/boot or /lib/modules changes. A developer's own kernel (a bzImage or a kernel
build tree) can stand in for a manifest entry, as with virtme-ng.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from lab import REPO, LabError

MANIFEST = REPO / "images" / "kernels.toml"
CACHE = REPO / "images" / "cache"
STAMP = ".ntalab-fetched"


@dataclass(frozen=True)
class KernelEntry:
    """One kernel of the manifest."""

    name: str
    release: str
    version: str
    packages: tuple[str, ...]


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot: what vng runs and what modules build against."""

    name: str
    release: str
    vmlinuz: Path
    headers: Path | None  # a tree `make -C` can build out-of-tree modules in

    @property
    def run_target(self) -> Path:
        """What ``vng --run`` takes: it finds ``lib/modules/<release>`` beside ``boot/``."""
        return self.vmlinuz


def load_manifest(path: Path = MANIFEST) -> dict[str, KernelEntry]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise LabError(f"cannot read kernel manifest {path}: {e}") from e
    entries: dict[str, KernelEntry] = {}
    for name, body in data.get("kernel", {}).items():
        try:
            release, version, packages = body["release"], body["version"], body["packages"]
        except KeyError as e:
            raise LabError(f"{path}: kernel {name!r} lacks {e.args[0]!r}") from e
        if not (
            isinstance(packages, list) and packages and all(isinstance(p, str) for p in packages)
        ):
            raise LabError(f"{path}: kernel {name!r}: packages must be a list of names")
        entries[name] = KernelEntry(name, str(release), str(version), tuple(packages))
    if not entries:
        raise LabError(f"{path}: no [kernel.<name>] entries")
    return entries


def cache_dir(entry: KernelEntry, cache: Path = CACHE) -> Path:
    return cache / entry.name


def is_fetched(entry: KernelEntry, cache: Path = CACHE) -> bool:
    stamp = cache_dir(entry, cache) / STAMP
    return stamp.is_file() and stamp.read_text().strip() == entry.version


def cached_kernel(entry: KernelEntry, cache: Path = CACHE) -> Kernel:
    root = cache_dir(entry, cache)
    return Kernel(
        name=entry.name,
        release=entry.release,
        vmlinuz=root / "boot" / f"vmlinuz-{entry.release}",
        headers=root / "usr" / "src" / f"linux-headers-{entry.release}",
    )


def fetch(entry: KernelEntry, cache: Path = CACHE, log: Path | None = None) -> Kernel:
    """Download and unpack ``entry`` into the cache; a no-op when already there."""
    if is_fetched(entry, cache):
        return cached_kernel(entry, cache)
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise LabError(f"fetching Debian kernels needs {tool} (a Debian or Ubuntu host)")
    final = cache_dir(entry, cache)
    work = final.with_name(final.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    debs, root = work / "debs", work / "root"
    debs.mkdir(parents=True)
    root.mkdir()
    pinned = [f"{pkg}={entry.version}" for pkg in entry.packages]
    _run(["apt-get", "download", *pinned], debs, log, hint="run 'apt-get update' and retry")
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], debs, log)
    _fix_headers_makefile(root, final.resolve(), entry.release)
    _fix_module_links(root, entry.release)
    (root / STAMP).write_text(entry.version + "\n")
    shutil.rmtree(final, ignore_errors=True)
    root.rename(final)
    shutil.rmtree(work)
    kernel = cached_kernel(entry, cache)
    if not kernel.vmlinuz.is_file():
        raise LabError(f"{entry.name}: the packages gave no {kernel.vmlinuz}")
    return kernel


def _run(argv: list[str], cwd: Path, log: Path | None, hint: str = "") -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise LabError(
            f"{argv[0]} failed ({proc.returncode}): {tail}" + (f"; {hint}" if hint else "")
        )


def _fix_headers_makefile(root: Path, final: Path, release: str) -> None:
    """Debian's headers Makefile includes /usr/src/...-common by absolute path.

    Point it at the tree's final place in the cache (``root`` is renamed there).
    """
    makefile = root / "usr" / "src" / f"linux-headers-{release}" / "Makefile"
    text = makefile.read_text()
    makefile.write_text(text.replace("include /usr/src/", f"include {final}/usr/src/"))


def _fix_module_links(root: Path, release: str) -> None:
    """lib/modules/<release>/{build,source} point at /usr/src; make them relative."""
    moddir = root / "lib" / "modules" / release
    for link, target in (("build", f"linux-headers-{release}"), ("source", None)):
        path = moddir / link
        if path.is_symlink():
            dest = target or Path(path.readlink()).name
            path.unlink()
            path.symlink_to(Path("../../../usr/src") / dest)


def resolve(spec: str, manifest: dict[str, KernelEntry] | None = None) -> Kernel:
    """A kernel by manifest name, by bzImage path or by kernel build tree."""
    entries = manifest if manifest is not None else load_manifest()
    if spec in entries:
        entry = entries[spec]
        if not is_fetched(entry):
            raise LabError(f"kernel {spec!r} is not fetched yet: run 'ntalab images fetch {spec}'")
        return cached_kernel(entry)
    path = Path(spec)
    if path.is_dir() and (path / "arch/x86/boot/bzImage").is_file():
        release = (path / "include/config/kernel.release").read_text().strip()
        return Kernel(path.name, release, path / "arch/x86/boot/bzImage", path)
    if path.is_file():
        release = bzimage_release(path)
        build = Path("/lib/modules") / release / "build"
        return Kernel(path.name, release, path, build if build.is_dir() else None)
    known = ", ".join(sorted(entries))
    raise LabError(f"unknown kernel {spec!r}: not a manifest name ({known}), bzImage or build tree")


def bzimage_release(path: Path) -> str:
    """The release string a bzImage carries in its setup header (Documentation/x86/boot)."""
    with path.open("rb") as f:
        head = f.read(0x10000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise LabError(f"{path} is not an x86 bzImage")
    (version_ptr,) = struct.unpack_from("<H", head, 0x20E)
    start = version_ptr + 0x200
    end = head.find(b"\0", start)
    if version_ptr == 0 or end < 0:
        raise LabError(f"{path}: bzImage carries no version string")
    return head[start:end].decode(errors="replace").split()[0]


def describe(
    entries: dict[str, KernelEntry], cache: Path = CACHE
) -> list[tuple[str, str, str, str]]:
    """Rows for ``ntalab images list``: name, release, version, state."""
    rows = []
    for entry in entries.values():
        root = cache_dir(entry, cache)
        if is_fetched(entry, cache):
            state = f"fetched ({root})"
        elif root.exists():
            state = "stale: fetch again"
        else:
            state = "not fetched"
        rows.append((entry.name, entry.release, entry.version, state))
    return rows
