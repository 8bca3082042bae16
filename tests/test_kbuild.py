"""The build stage against real Debian headers: a module builds, and W=1 warnings are caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lab import images, kbuild

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def kernel() -> images.Kernel:
    """debian-6.1, fetched if missing (make test fetches it first)."""
    return images.provide(images.load_manifest()["debian-6.1"])


def test_clean_module_builds_without_warnings(kernel: images.Kernel, tmp_path: Path) -> None:
    result = kbuild.build(kernel, src=DATA / "kbuild-clean", root=tmp_path)
    assert result.status is kbuild.BuildStatus.OK, result.log.read_text()[-2000:]
    assert result.module is not None
    assert result.module.parent.parent == tmp_path / kernel.release
    assert (tmp_path / kernel.release / "latest" / "nta.ko").samefile(result.module)
    assert result.warnings == ()
    assert b"version=1" in result.module.read_bytes()


def test_w1_warning_is_reported(kernel: images.Kernel, tmp_path: Path) -> None:
    result = kbuild.build(kernel, src=DATA / "kbuild-warns", root=tmp_path)
    assert result.status is kbuild.BuildStatus.WARNINGS
    assert any("no previous prototype" in w for w in result.warnings), result.warnings


def test_same_sources_reuse_the_build_and_its_warnings(
    kernel: images.Kernel, tmp_path: Path
) -> None:
    first = kbuild.build(kernel, src=DATA / "kbuild-warns", root=tmp_path)
    second = kbuild.build(kernel, src=DATA / "kbuild-warns", root=tmp_path)
    assert second == first and first.warnings != ()


def test_changed_sources_build_from_scratch(kernel: images.Kernel, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(DATA / "kbuild-warns", src)
    first = kbuild.build(kernel, src=src, root=tmp_path / "build")
    assert first.module is not None
    with next(src.glob("*.c")).open("a") as c:
        c.write("/* changed */\n")
    second = kbuild.build(kernel, src=src, root=tmp_path / "build")
    assert second.module is not None and second.module.parent != first.module.parent
    assert len(second.warnings) == len(first.warnings) != 0
