"""Stage 2, build: the NTA module, out of tree, one build dir per kernel.

Kernels before 6.13 cannot put an external module's objects outside its
source dir, so the sources are copied into ``build/<release>/<digest>/`` and
built there with ``W=1``. Always from scratch: an incremental build would
not print the warnings of objects it did not rebuild, and they must be seen.
The digest covers the sources and the command, so a build is done once per
distinct input and then reused with the warnings it printed, by every guest
of a run (parallel workers wait on a lock rather than race in one dir), and
a module already loaded in a guest never changes under it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from lab import InfraError, paths
from lab.images import Kernel

MODULE = "nta.ko"
# Test only, built beside it: the lab's driver stand-in (kmod/nta_caller.c), and a bare
# ftrace site flipper (kmod/ftrace_flip.c) for telling the kernel's text patching from NTA.
CALLER = "nta_caller.ko"
FLIPPER = "ftrace_flip.ko"
_WARNING = re.compile(r"\b(warning|error):", re.IGNORECASE)
_SOURCES = ("*.c", "*.h", "Kbuild")


class BuildStatus(Enum):
    OK = "ok"
    WARNINGS = "warnings"
    FAILED = "failed"


@dataclass(frozen=True)
class BuildResult:
    kernel: str
    release: str
    status: BuildStatus
    module: Path | None
    log: Path
    warnings: tuple[str, ...]
    elapsed: float

    @property
    def caller(self) -> Path | None:
        return self.module.parent / CALLER if self.module is not None else None

    @property
    def flipper(self) -> Path | None:
        return self.module.parent / FLIPPER if self.module is not None else None


def builds_root() -> Path:
    return paths.cache_root() / "builds"


def build_dir(kernel: Kernel, root: Path | None = None) -> Path:
    """Where builds for ``kernel`` go: one subdirectory per distinct input."""
    return (root or builds_root()) / kernel.release


def build(
    kernel: Kernel, src: Path | None = None, root: Path | None = None, jobs: int = 0
) -> BuildResult:
    if kernel.headers is None or not (kernel.headers / "Makefile").is_file():
        raise InfraError(
            f"kernel {kernel.name} ({kernel.release}) has no headers to build against; "
            "for a manifest kernel run 'ntalab images fetch', for your own pass its build tree"
        )
    sources = _sources(src or paths.sources().kmod)
    parent = build_dir(kernel, root)
    parent.mkdir(parents=True, exist_ok=True)
    with (parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = parent / _digest(kernel, sources)
        done = out / "result.json"
        if done.is_file():
            return _load(kernel, out, json.loads(done.read_text()))
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        for path in sources:
            shutil.copy2(path, out / path.name)
        result = _make(kernel, out, jobs)
        saved = {"status": result.status.value, "warnings": result.warnings}
        done.write_text(json.dumps(saved | {"elapsed": result.elapsed}))
        _link_latest(parent, out)
        return result


def built(kernel: Kernel, src: Path | None = None, root: Path | None = None) -> BuildResult | None:
    """The build of ``src`` (this checkout's kmod/) for ``kernel``, if it was made; nothing
    is built."""
    if kernel.headers is None:
        return None
    out = build_dir(kernel, root) / _digest(kernel, _sources(src or paths.sources().kmod))
    done = out / "result.json"
    return _load(kernel, out, json.loads(done.read_text())) if done.is_file() else None


def _make(kernel: Kernel, out: Path, jobs: int) -> BuildResult:
    assert kernel.headers is not None
    argv = [
        "make", "-C", str(kernel.headers), f"M={out}", "W=1",
        f"-j{jobs or os.cpu_count() or 1}", "modules",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    log = out / "build.log"
    log.write_text(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    warnings = tuple(line for line in proc.stderr.splitlines() if _WARNING.search(line))
    module = out / MODULE
    if proc.returncode != 0 or not module.is_file():
        status, found = BuildStatus.FAILED, None
    else:
        status = BuildStatus.WARNINGS if warnings else BuildStatus.OK
        found = module
    return BuildResult(kernel.name, kernel.release, status, found, log, warnings, elapsed)


def _load(kernel: Kernel, out: Path, saved: dict[str, Any]) -> BuildResult:
    status = BuildStatus(saved["status"])
    module = out / MODULE if status is not BuildStatus.FAILED else None
    warnings = tuple(str(w) for w in saved["warnings"])
    log = out / "build.log"
    return BuildResult(
        kernel.name, kernel.release, status, module, log, warnings, float(saved["elapsed"])
    )


@dataclass(frozen=True)
class ToolResult:
    """ntadump, the native reader, built with the host's compiler from the uapi header."""

    program: Path
    elapsed: float


NTADUMP_CFLAGS = ("-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror")


def build_ntadump(src: Path | None = None, root: Path | None = None) -> ToolResult:
    """kmod/ntadump/ntadump.c -> <cache>/builds/ntadump/<digest>/ntadump, once per input.

    The guests run the host's userspace, so the host's gcc builds it for
    every kernel alike. Warnings are errors: a build that warns fails.
    """
    kmod = src or paths.sources().kmod
    source, header = kmod / "ntadump" / "ntadump.c", kmod / "nta_uapi.h"
    h = hashlib.sha256(" ".join((*NTADUMP_CFLAGS, "-lpcap")).encode())
    for path in (source, header):
        h.update(path.read_bytes())
    out = (root or builds_root()) / "ntadump" / h.hexdigest()[:16]
    program = out / "ntadump"
    if program.is_file():
        return ToolResult(program, 0.0)
    out.mkdir(parents=True, exist_ok=True)
    argv = ["gcc", *NTADUMP_CFLAGS, "-I", str(kmod), "-o", str(program), str(source), "-lpcap"]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    (out / "build.log").write_text(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        program.unlink(missing_ok=True)
        raise InfraError(f"ntadump does not build: {proc.stderr.strip()[-2000:]}")
    return ToolResult(program, time.monotonic() - start)


def _digest(kernel: Kernel, sources: list[Path]) -> str:
    h = hashlib.sha256(f"{kernel.release} {kernel.headers} W=1\n".encode())
    for path in sources:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _link_latest(parent: Path, out: Path) -> None:
    """``build/<release>/latest``: the last build, for people and ``ntalab boot``."""
    link = parent / "latest"
    link.unlink(missing_ok=True)
    link.symlink_to(out.name)


def _sources(src: Path) -> list[Path]:
    names = sorted({p for pattern in _SOURCES for p in src.glob(pattern)})
    if not any(p.name == "Kbuild" for p in names):
        raise InfraError(f"{src} has no Kbuild file")
    return names
