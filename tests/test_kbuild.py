"""The build stage against real Debian headers: a module builds, and W=1 warnings are caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import images, kbuild

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def kernel() -> images.Kernel:
    """debian-6.1, fetched if missing (make test fetches it first)."""
    return images.fetch(images.load_manifest()["debian-6.1"])


def test_clean_module_builds_without_warnings(kernel: images.Kernel, tmp_path: Path) -> None:
    result = kbuild.build(kernel, src=DATA / "kbuild-clean", root=tmp_path)
    assert result.status is kbuild.BuildStatus.OK, result.log.read_text()[-2000:]
    assert result.module == tmp_path / kernel.release / "nta.ko"
    assert result.warnings == ()
    assert b"version=1" in result.module.read_bytes()


def test_w1_warning_is_reported(kernel: images.Kernel, tmp_path: Path) -> None:
    result = kbuild.build(kernel, src=DATA / "kbuild-warns", root=tmp_path)
    assert result.status is kbuild.BuildStatus.WARNINGS
    assert any("no previous prototype" in w for w in result.warnings), result.warnings


def test_every_build_starts_clean(kernel: images.Kernel, tmp_path: Path) -> None:
    """A second build must report the same warnings: nothing is left from the first."""
    first = kbuild.build(kernel, src=DATA / "kbuild-warns", root=tmp_path)
    (tmp_path / kernel.release / "gone.c").write_text("#error this file left kmod/\n")
    second = kbuild.build(kernel, src=DATA / "kbuild-warns", root=tmp_path)
    assert second.warnings == first.warnings != ()
    assert not (tmp_path / kernel.release / "gone.c").exists()
