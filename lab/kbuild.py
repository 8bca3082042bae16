"""Stage 2, build: the NTA module, out of tree, one build dir per kernel.

Kernels before 6.13 cannot put an external module's objects outside its
source dir, so the sources are copied into ``build/<release>/`` and built
there with ``W=1``. Always from scratch: an incremental build would not
print the warnings of objects it did not rebuild, and they must be seen.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lab import REPO, LabError
from lab.images import Kernel

KMOD = REPO / "kmod"
BUILD = REPO / "build"
MODULE = "nta.ko"
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


def build_dir(kernel: Kernel, root: Path = BUILD) -> Path:
    return root / kernel.release


def build(kernel: Kernel, src: Path = KMOD, root: Path = BUILD, jobs: int = 0) -> BuildResult:
    if kernel.headers is None or not (kernel.headers / "Makefile").is_file():
        raise LabError(
            f"kernel {kernel.name} ({kernel.release}) has no headers to build against; "
            "for a manifest kernel run 'ntalab images fetch', for your own pass its build tree"
        )
    out = build_dir(kernel, root)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _copy_sources(src, out)
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


def _copy_sources(src: Path, out: Path) -> None:
    names = [p for pattern in _SOURCES for p in src.glob(pattern)]
    if not any(p.name == "Kbuild" for p in names):
        raise LabError(f"{src} has no Kbuild file")
    for path in names:
        shutil.copy2(path, out / path.name)
