"""Where the lab finds its sources and keeps what it fetches and builds.

Sources (the module's C files, the kernel manifest and config fragments, the
scenarios) are read from the checkout the package runs from, or, for an
installed package, from the copy installed with it under
``<prefix>/share/ntalab`` (pyproject.toml's data-files). Nothing is written
there.

Fetched kernels and module builds go to the user's cache directory
(``$NTALAB_CACHE``, else ``$XDG_CACHE_HOME/ntalab``, else
``~/.cache/ntalab``), so they survive a clean checkout and are shared by
every checkout of the same user. Results go to ``./results`` unless a
command is given ``--out``.
"""

from __future__ import annotations

import os
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from lab import InfraError

_PACKAGE = Path(__file__).resolve().parent
# Where ``python -S -m lab...`` / ``-m pysniff`` finds both packages in a guest.
IMPORT_ROOT = _PACKAGE.parent


@dataclass(frozen=True)
class Sources:
    """The lab's non-Python sources."""

    root: Path

    @property
    def kmod(self) -> Path:
        """NTA's sources: this checkout's, or a bisect step's for the whole process."""
        return _KMOD or self.root / "kmod"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def scenarios(self) -> Path:
        return self.root / "tests" / "lab"

    @property
    def test_data(self) -> Path:
        return self.root / "tests" / "data"


_KMOD: Path | None = None


def use_kmod(path: Path) -> None:
    """Build and read NTA from ``path`` instead of this checkout's kmod/, for the rest of the
    process: a bisect step's guest runs the current lab's scenarios against the module of
    the commit under test, and every build and header read of the scenarios must agree."""
    global _KMOD
    _KMOD = path.resolve()


def sources() -> Sources:
    """The checkout this package runs from, else the installed share/ntalab."""
    for root in (IMPORT_ROOT, Path(sysconfig.get_path("data")) / "share" / "ntalab"):
        if (root / "kmod" / "nta_uapi.h").is_file() and (root / "images").is_dir():
            return Sources(root)
    raise InfraError(
        f"the lab's sources (kmod/, images/, tests/lab/) are neither beside {_PACKAGE} nor "
        "installed under share/ntalab: reinstall ntalab"
    )


def cache_root() -> Path:
    """The user's ntalab cache (kernels, module builds, tools from kernel sources)."""
    given = os.environ.get("NTALAB_CACHE")
    if given:
        return Path(given).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "ntalab").resolve()


def results_root() -> Path:
    return Path("results").resolve()


def new_results_dir(kind: str = "") -> Path:
    """``./results/[<kind>-]<timestamp>``, created."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = results_root() / (f"{kind}-{stamp}" if kind else stamp)
    out.mkdir(parents=True, exist_ok=True)
    return out
