"""Stage 1, provision: the guest kernel manifest, and the kernels it names, cached.

Two kinds of manifest entry (``images/kernels.toml``):

- ``packages``: Debian's image, headers and kbuild packages at one exact
  version (a package written ``name=version`` carries its own pin),
  downloaded with ``apt-get download`` and unpacked with ``dpkg-deb -x``.
  Nothing on the host's /boot or /lib/modules changes.
- ``source``: a kernel built from Debian's source package (``linux-source-*``)
  at one exact version, configured as virtme-ng's minimal config
  (``vng --kconfig``) plus config fragments kept in ``images/``. This is how
  the lab gets sanitizer kernels (KASAN, lockdep, kmemleak) that Debian does
  not ship, of exactly the code it tests on.

Both land in the user's cache (``lab.paths.cache_root()/kernels``), so they
survive a clean checkout. A built kernel is keyed by a digest of everything
that makes it (source version, fragments, virtme-ng's base config, the
compiler): change any of them and it is built again, never silently reused.

A developer's own kernel (a bzImage or a kernel build tree) can stand in for
a manifest entry, as with virtme-ng.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import os
import shutil
import struct
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab import LabError, UsageError, kconfig, paths

STAMP = ".ntalab-ready"
# Bumped when the way a source kernel is built changes, so old builds are not reused.
RECIPE = "1"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PackagedEntry:
    """A Debian kernel, from its binary packages."""

    name: str
    release: str
    version: str
    packages: tuple[str, ...]


@dataclass(frozen=True)
class SourceEntry:
    """A kernel built from Debian's source package, with config fragments."""

    name: str
    source: str  # the source package, e.g. linux-source-6.1
    version: str
    fragments: tuple[str, ...]  # file names in images/
    localversion: str  # appended to the release, e.g. -kasan


KernelEntry = PackagedEntry | SourceEntry


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot: what vng runs, what modules build against, its config."""

    name: str
    release: str
    vmlinuz: Path
    headers: Path | None  # a tree `make -C` can build out-of-tree modules in
    config: Path | None  # its .config, when known

    @property
    def run_target(self) -> Path:
        """What ``vng --run`` takes: it finds ``lib/modules/<release>`` beside ``boot/``."""
        return self.vmlinuz

    def features(self, drivers: Sequence[str]) -> kconfig.Features:
        """What the lab may use in this kernel; a LabError naming what it lacks."""
        if self.config is None or not self.config.is_file():
            raise LabError(
                f"kernel {self.name}: its config is not known, so the lab cannot check it has "
                f"what the lab needs; pass its build tree, or put config-{self.release} beside it"
            )
        return kconfig.check(kconfig.read(self.config), drivers, f"kernel {self.name}")


def manifest_path() -> Path:
    return paths.sources().images / "kernels.toml"


def kernels_cache() -> Path:
    return paths.cache_root() / "kernels"


def _strings(body: dict[str, object], key: str, where: str) -> tuple[str, ...]:
    value = body.get(key)
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise LabError(f"{where}: {key} must be a list of names")
    return tuple(str(v) for v in value)


def _entry(name: str, body: dict[str, object], path: Path) -> KernelEntry:
    where = f"{path}: kernel {name!r}"
    try:
        if "source" in body:
            return SourceEntry(
                name,
                str(body["source"]),
                str(body["version"]),
                _strings(body, "fragments", where),
                str(body.get("localversion", f"-{name}")),
            )
        return PackagedEntry(
            name, str(body["release"]), str(body["version"]), _strings(body, "packages", where)
        )
    except KeyError as e:
        raise LabError(f"{where} lacks {e.args[0]!r}") from e


def load_manifest(path: Path | None = None) -> dict[str, KernelEntry]:
    path = path or manifest_path()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise LabError(f"cannot read kernel manifest {path}: {e}") from e
    entries = {name: _entry(name, body, path) for name, body in data.get("kernel", {}).items()}
    if not entries:
        raise LabError(f"{path}: no [kernel.<name>] entries")
    return entries


def entry(name: str, manifest: dict[str, KernelEntry] | None = None) -> KernelEntry:
    entries = manifest if manifest is not None else load_manifest()
    try:
        return entries[name]
    except KeyError:
        raise UsageError(f"unknown kernel {name!r}; known: {', '.join(entries)}") from None


def default_kernels(manifest: dict[str, KernelEntry] | None = None) -> list[str]:
    """What a matrix runs by default: every Debian kernel, and every built kernel already built.

    Building a sanitizer kernel is asked for (``ntalab images build``), never
    started by a test run; once built, the run includes it.
    """
    entries = manifest if manifest is not None else load_manifest()
    return [n for n, e in entries.items() if isinstance(e, PackagedEntry) or is_ready(e)]


# -- where an entry lives in the cache ------------------------------------------


def _fragment_paths(e: SourceEntry) -> list[Path]:
    return [paths.sources().images / f for f in e.fragments]


def digest(e: KernelEntry) -> str:
    """What makes the kernel: for packages, their version; for a build, all its inputs."""
    if isinstance(e, PackagedEntry):
        return " ".join((e.version, *sorted(p for p in e.packages if "=" in p)))
    h = hashlib.sha256(f"{RECIPE}\n{e.source}={e.version}\n{e.localversion}\n".encode())
    for frag in _fragment_paths(e):
        try:
            h.update(frag.name.encode() + b"\0" + frag.read_bytes() + b"\0")
        except OSError as err:
            raise LabError(f"kernel {e.name}: cannot read fragment {frag}: {err}") from err
    # virtme-ng's --kconfig is the base config: its version is an input too.
    h.update(f"virtme-ng {importlib.metadata.version('virtme-ng')}\n".encode())
    h.update(_tool_version("gcc", "--version").encode())
    return h.hexdigest()[:16]


@functools.cache
def _tool_version(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    except OSError as e:
        raise LabError(f"{argv[0]} is needed to build kernels: {e}") from e
    return out.splitlines()[0] if out else ""


def _venv_tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def cache_dir(e: KernelEntry, cache: Path | None = None) -> Path:
    return (cache or kernels_cache()) / e.name


def is_ready(e: KernelEntry, cache: Path | None = None) -> bool:
    stamp = cache_dir(e, cache) / STAMP
    return stamp.is_file() and stamp.read_text().split("\n")[0] == digest(e)


def cached_kernel(e: KernelEntry, cache: Path | None = None) -> Kernel:
    root = cache_dir(e, cache)
    if isinstance(e, PackagedEntry):
        release = e.release
        headers = root / "usr" / "src" / f"linux-headers-{release}"
    else:
        release = (root / "release").read_text().strip()
        headers = root / "build"
    return Kernel(
        name=e.name,
        release=release,
        vmlinuz=root / "boot" / f"vmlinuz-{release}",
        headers=headers,
        config=root / "boot" / f"config-{release}",
    )


def provide(e: KernelEntry, progress: Progress = print, cache: Path | None = None) -> Kernel:
    """The kernel of ``e``, fetched or built into the cache first if it is not there."""
    if is_ready(e, cache):
        return cached_kernel(e, cache)
    with _locked(cache_dir(e, cache)):
        if not is_ready(e, cache):  # another process may have made it meanwhile
            if isinstance(e, PackagedEntry):
                _fetch(e, cache_dir(e, cache), progress)
            else:
                _build(e, cache_dir(e, cache), progress)
    return cached_kernel(e, cache)


@contextmanager
def _locked(final: Path) -> Iterator[None]:
    final.parent.mkdir(parents=True, exist_ok=True)
    with final.with_name(final.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _stamp(root: Path, e: KernelEntry, note: str) -> None:
    (root / STAMP).write_text(f"{digest(e)}\n{note}\n")


# -- Debian binary packages -------------------------------------------------------


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is needed (a Debian or Ubuntu host): run 'make deps'")


def _fetch(e: PackagedEntry, final: Path, progress: Progress) -> None:
    _need("apt-get", "dpkg-deb")
    progress(f"{e.name}: fetching {len(e.packages)} packages at {e.version}")
    work = final.with_name(final.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    debs, root = work / "debs", work / "root"
    debs.mkdir(parents=True)
    root.mkdir()
    pinned = [pkg if "=" in pkg else f"{pkg}={e.version}" for pkg in e.packages]
    _apt_download(pinned, debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], debs)
    _fix_headers_makefile(root, final.resolve(), e.release)
    _fix_module_links(root, e.release)
    _stamp(root, e, "fetched")
    shutil.rmtree(final, ignore_errors=True)
    root.rename(final)
    shutil.rmtree(work)
    kernel = cached_kernel(e, final.parent)
    if not kernel.vmlinuz.is_file():
        raise LabError(f"{e.name}: the packages gave no {kernel.vmlinuz}")
    progress(f"{e.name}: {kernel.vmlinuz}")


def _apt_download(specs: list[str], cwd: Path) -> None:
    """``apt-get download`` of pinned versions, refreshing stale package lists once.

    A fresh machine's lists may predate the pinned version; as root the lab
    refreshes them itself rather than telling the user to.
    """
    try:
        _run(["apt-get", "download", *specs], cwd)
        return
    except LabError as err:
        if os.geteuid() != 0:
            raise LabError(f"{err}; run 'sudo apt-get update' and retry") from None
    _run(["apt-get", "update", "-q"], cwd)
    _run(["apt-get", "download", *specs], cwd, hint="the pinned version is not in the archive")


def _run(argv: list[str], cwd: Path, hint: str = "", log: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise LabError(
            f"{argv[0]} failed ({proc.returncode}): {tail}" + (f"; {hint}" if hint else "")
        )
    return proc.stdout


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


# -- kernels built from Debian's source package -------------------------------------


def source_tree(source: str, version: str, progress: Progress) -> Path:
    """Debian's kernel source at ``version``, unpacked once into the cache and shared."""
    tree = paths.cache_root() / "src" / f"{source}_{version}"
    with _locked(tree):
        if (tree / STAMP).is_file():
            return tree / source
        _need("apt-get", "dpkg-deb", "tar", "xz")
        progress(f"{source} {version}: downloading and unpacking")
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        _apt_download([f"{source}={version}"], tree)
        (deb,) = tree.glob("*.deb")
        # The package holds the tree as usr/src/<source>.tar.xz.
        inner = f"./usr/src/{source}.tar.xz"
        subprocess.run(
            f"dpkg-deb --fsys-tarfile {deb.name} | tar -xO {inner} | tar -xJ",
            shell=True, cwd=tree, check=True,
        )  # fmt: skip
        deb.unlink()
        if not (tree / source / "Makefile").is_file():
            raise LabError(f"{source} {version}: no kernel tree in the package")
        (tree / STAMP).write_text(f"{version}\n")
        return tree / source


def assemble_config(e: SourceEntry, src: Path, out: Path, log: Path) -> None:
    """vng's minimal config plus the fragments, each option checked afterwards.

    virtme-configkernel appends its own must-haves after any custom snippet,
    so the fragments are applied once more with scripts/config and settled
    with olddefconfig; then every option of every fragment must read as asked.
    """
    frags = _fragment_paths(e)
    wanted: dict[str, str] = {}
    for frag in frags:
        wanted |= kconfig.parse(frag.read_text())
    custom = [arg for frag in frags for arg in ("--custom", str(frag))]
    configure = [_venv_tool("virtme-configkernel"), "--defconfig", *custom, f"O={out}"]
    _run(configure, src, log=log)
    argv = [str(src / "scripts" / "config"), "--file", str(out / ".config")]
    argv += ["--set-str", "LOCALVERSION", e.localversion]
    for name, value in wanted.items():
        option = name.removeprefix("CONFIG_")
        if value in ("y", "m", "n"):
            argv += [{"y": "--enable", "m": "--module", "n": "--disable"}[value], option]
        else:
            argv += ["--set-val", option, value]
    _run(argv, src, log=log)
    _run(["make", f"O={out}", "olddefconfig"], src, log=log)
    bad = kconfig.unmet(wanted, kconfig.read(out / ".config"))
    if bad:
        raise LabError(
            f"kernel {e.name}: Kconfig did not keep these fragment options (a missing "
            f"dependency, or a name this kernel does not have):\n  " + "\n  ".join(bad)
        )


def _build(e: SourceEntry, final: Path, progress: Progress) -> None:
    _need("make", "gcc", "flex", "bison", "bc")
    src = source_tree(e.source, e.version, progress)
    work = final.with_name(final.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    out, root = work / "build", work / "root"
    out.mkdir(parents=True)
    log = work / "build.log"
    assemble_config(e, src, out, log)
    jobs = str(os.cpu_count() or 1)
    start = time.monotonic()
    progress(f"{e.name}: building {e.source} {e.version} with {jobs} jobs (log {log})")
    _make_with_progress(
        ["make", f"O={out}", f"-j{jobs}", "bzImage", "modules"], src, log, e.name, progress
    )
    # Known once the build has settled the config (LOCALVERSION included).
    release = (out / "include" / "config" / "kernel.release").read_text().strip()
    _run(
        ["make", f"O={out}", f"INSTALL_MOD_PATH={root}", "INSTALL_MOD_STRIP=1", "modules_install"],
        src, log=log,
    )  # fmt: skip
    boot = root / "boot"
    boot.mkdir()
    shutil.copy2(out / "arch" / "x86" / "boot" / "bzImage", boot / f"vmlinuz-{release}")
    shutil.copy2(out / ".config", boot / f"config-{release}")
    moddir = root / "lib" / "modules" / release
    for link in ("build", "source"):
        (moddir / link).unlink(missing_ok=True)
    elapsed = time.monotonic() - start
    # The finished tree: boot/ and lib/ as Debian's packages give them, and
    # build/ (the O= tree, with .config and Module.symvers) to build modules in.
    (root / "release").write_text(release + "\n")
    out.rename(root / "build")
    (moddir / "build").symlink_to(Path("../../../build"))
    shutil.move(str(log), root / "build.log")
    _stamp(root, e, f"built in {elapsed:.0f}s")
    shutil.rmtree(final, ignore_errors=True)
    root.rename(final)
    shutil.rmtree(work)
    progress(f"{e.name}: built {release} in {elapsed / 60:.1f} min")


def _make_with_progress(
    argv: list[str], cwd: Path, log: Path, name: str, progress: Progress
) -> None:
    """make, its output to ``log``; a progress line every 30 s (files compiled, time)."""
    start = last = time.monotonic()
    compiled = 0
    with log.open("a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            compiled += line.startswith("  CC ")
            if (now := time.monotonic()) - last >= 30:
                last = now
                progress(f"{name}: {compiled} files compiled, {(now - start) / 60:.1f} min")
        rc = proc.wait()
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise LabError(f"{name}: kernel build failed ({rc}); log {log}:\n{tail}")


# -- any kernel ---------------------------------------------------------------------


def resolve(spec: str, manifest: dict[str, KernelEntry] | None = None) -> Kernel:
    """A kernel by manifest name (which must be ready), bzImage path or build tree."""
    entries = manifest if manifest is not None else load_manifest()
    if spec in entries:
        e = entries[spec]
        if not is_ready(e):
            verb = "fetch" if isinstance(e, PackagedEntry) else "build"
            raise LabError(f"kernel {spec!r} is not ready yet: run 'ntalab images {verb} {spec}'")
        return cached_kernel(e)
    path = Path(spec)
    if path.is_dir() and (path / "arch/x86/boot/bzImage").is_file():
        release = (path / "include/config/kernel.release").read_text().strip()
        return Kernel(path.name, release, path / "arch/x86/boot/bzImage", path, path / ".config")
    if path.is_file():
        release = bzimage_release(path)
        build = Path("/lib/modules") / release / "build"
        beside = path.parent / f"config-{release}"
        config = beside if beside.is_file() else build / ".config"
        return Kernel(path.name, release, path, build if build.is_dir() else None, config)
    known = ", ".join(sorted(entries))
    raise UsageError(
        f"unknown kernel {spec!r}: not a manifest name ({known}), bzImage or build tree"
    )


def kernel_for(spec: str, progress: Progress = print) -> Kernel:
    """The kernel a command asked for: a manifest kernel fetched or built first if it is
    not in the cache yet, else a bzImage or build tree (``resolve``)."""
    manifest = load_manifest()
    if spec in manifest:
        return provide(manifest[spec], progress)
    return resolve(spec, manifest)


def bzimage_release(path: Path) -> str:
    """The release string a bzImage carries in its setup header (Documentation/x86/boot)."""
    with path.open("rb") as f:
        head = f.read(0x10000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise UsageError(f"{path} is not an x86 bzImage")
    (version_ptr,) = struct.unpack_from("<H", head, 0x20E)
    start = version_ptr + 0x200
    end = head.find(b"\0", start)
    if version_ptr == 0 or end < 0:
        raise UsageError(f"{path}: bzImage carries no version string")
    return head[start:end].decode(errors="replace").split()[0]


@dataclass(frozen=True)
class Row:
    """A line of ``ntalab images list``."""

    name: str
    kind: str
    version: str
    state: str


def describe(entries: dict[str, KernelEntry], cache: Path | None = None) -> list[Row]:
    rows = []
    for e in entries.values():
        root = cache_dir(e, cache)
        kind = "packages" if isinstance(e, PackagedEntry) else f"built from {e.source}"
        if is_ready(e, cache):
            note = (root / STAMP).read_text().split("\n")[1]
            state = f"{note} ({root})"
        elif root.exists():
            state = "stale: inputs changed, make it again"
        else:
            state = "not fetched" if isinstance(e, PackagedEntry) else "not built"
        rows.append(Row(e.name, kind, e.version, state))
    return rows
