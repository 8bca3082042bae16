"""Manifest parsing, kernel resolution and the cache layout, without apt."""

from __future__ import annotations

import re
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from lab import LabError, UsageError, images

MANIFEST = """
[kernel."k-1"]
release = "6.1.0-9-amd64"
version = "6.1.1-1"
packages = ["linux-image-6.1.0-9-amd64", "linux-headers-6.1.0-9-amd64"]

[kernel."k-1-kasan"]
source = "linux-source-6.1"
version = "6.1.1-1"
fragments = ["frag.config"]
localversion = "-kasan"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kernels.toml"
    path.write_text(text)
    return path


def test_repo_manifest_pins_debian_kernels_and_their_sanitizer_builds() -> None:
    entries = images.load_manifest()
    assert list(entries) == ["debian-6.1", "debian-6.12", "debian-6.1-kasan", "debian-6.12-kasan"]
    for name in ("debian-6.1", "debian-6.12"):
        e = entries[name]
        assert isinstance(e, images.PackagedEntry)
        assert any(p.startswith("linux-image-") for p in e.packages)
        assert any(p.startswith("linux-headers-") for p in e.packages)
        assert any(p.startswith("linux-kbuild-") for p in e.packages)
        assert all(e.release in p for p in e.packages if "image" in p)
        built = entries[f"{name}-kasan"]
        # The sanitizer kernel is built from the source of exactly that version.
        assert isinstance(built, images.SourceEntry) and built.version == e.version
        assert built.source == "linux-source-" + name.removeprefix("debian-")


def test_manifest_entries_parsed(tmp_path: Path) -> None:
    entries = images.load_manifest(write(tmp_path, MANIFEST))
    assert entries == {
        "k-1": images.PackagedEntry(
            "k-1",
            "6.1.0-9-amd64",
            "6.1.1-1",
            ("linux-image-6.1.0-9-amd64", "linux-headers-6.1.0-9-amd64"),
        ),
        "k-1-kasan": images.SourceEntry(
            "k-1-kasan", "linux-source-6.1", "6.1.1-1", ("frag.config",), "-kasan"
        ),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[kernel.a]\nrelease = "r"\npackages = ["p"]\n', "lacks 'version'"),
        ('[kernel.a]\nrelease = "r"\nversion = "v"\npackages = "p"\n', "list of names"),
        ('[kernel.a]\nsource = "s"\nversion = "v"\n', "fragments must be a list"),
        ("[other]\n", "no [kernel.<name>] entries"),
        ("[kernel.a\n", "cannot read kernel manifest"),
    ],
)
def test_bad_manifest_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LabError, match=re.escape(message)):
        images.load_manifest(write(tmp_path, text))


def test_unknown_kernel_lists_known_ones(tmp_path: Path) -> None:
    entries = images.load_manifest(write(tmp_path, MANIFEST))
    with pytest.raises(UsageError, match=r"unknown kernel 'nope'.*k-1"):
        images.resolve("nope", entries)


def test_a_kernel_not_ready_says_how_to_make_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NTALAB_CACHE", str(tmp_path / "cache"))
    entries = images.load_manifest(write(tmp_path, MANIFEST))
    with pytest.raises(LabError, match="ntalab images fetch k-1"):
        images.resolve("k-1", entries)
    monkeypatch.setattr(images, "digest", lambda e: "d")
    with pytest.raises(LabError, match="ntalab images build k-1-kasan"):
        images.resolve("k-1-kasan", entries)


def test_a_built_kernel_is_keyed_by_everything_that_makes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = images.load_manifest()["debian-6.1-kasan"]
    assert isinstance(entry, images.SourceEntry)
    first = images.digest(entry)
    assert images.digest(entry) == first
    assert images.digest(replace(entry, version="6.1.999-1")) != first
    assert images.digest(replace(entry, localversion="-other")) != first
    monkeypatch.setattr(images, "_tool_version", lambda *argv: "gcc 99")
    assert images.digest(entry) != first


def test_default_kernels_are_the_debian_ones_and_the_built_ones_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = images.load_manifest(write(tmp_path, MANIFEST))
    monkeypatch.setattr(images, "is_ready", lambda e, cache=None: False)
    assert images.default_kernels(entries) == ["k-1"]
    monkeypatch.setattr(images, "is_ready", lambda e, cache=None: True)
    assert images.default_kernels(entries) == ["k-1", "k-1-kasan"]


def fake_bzimage(path: Path, version: bytes) -> Path:
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x400 - 0x200)
    head[0x400 : 0x400 + len(version) + 1] = version + b"\0"
    path.write_bytes(bytes(head))
    return path


def test_bzimage_release_read_from_setup_header(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "vmlinuz", b"6.13.0-rc1-dev (me@box) #1 SMP")
    assert images.bzimage_release(image) == "6.13.0-rc1-dev"
    (tmp_path / "config-6.13.0-rc1-dev").write_text("CONFIG_X=y\n")
    kernel = images.resolve(str(image), {})
    assert (kernel.release, kernel.vmlinuz) == ("6.13.0-rc1-dev", image)
    assert kernel.config == tmp_path / "config-6.13.0-rc1-dev"  # found beside it


def test_not_a_bzimage(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"\0" * 4096)
    with pytest.raises(LabError, match="not an x86 bzImage"):
        images.bzimage_release(path)


def test_kernel_build_tree_resolves(tmp_path: Path) -> None:
    (tmp_path / "arch/x86/boot").mkdir(parents=True)
    (tmp_path / "arch/x86/boot/bzImage").write_bytes(b"")
    (tmp_path / "include/config").mkdir(parents=True)
    (tmp_path / "include/config/kernel.release").write_text("6.14.0\n")
    kernel = images.resolve(str(tmp_path), {})
    assert kernel.release == "6.14.0"
    assert (kernel.headers, kernel.config) == (tmp_path, tmp_path / ".config")


def test_headers_makefile_points_into_the_cache(tmp_path: Path) -> None:
    src = tmp_path / "root/usr/src/linux-headers-6.1.0-9-amd64"
    src.mkdir(parents=True)
    (src / "Makefile").write_text("include /usr/src/linux-headers-6.1.0-9-common/Makefile\n")
    images._fix_headers_makefile(tmp_path / "root", Path("/c/k-1"), "6.1.0-9-amd64")
    assert (src / "Makefile").read_text() == (
        "include /c/k-1/usr/src/linux-headers-6.1.0-9-common/Makefile\n"
    )


def test_module_links_made_relative(tmp_path: Path) -> None:
    moddir = tmp_path / "lib/modules/6.1.0-9-amd64"
    moddir.mkdir(parents=True)
    (moddir / "build").symlink_to("/usr/src/linux-headers-6.1.0-9-amd64")
    (moddir / "source").symlink_to("/usr/src/linux-headers-6.1.0-9-common")
    images._fix_module_links(tmp_path, "6.1.0-9-amd64")
    assert str((moddir / "build").readlink()) == "../../../usr/src/linux-headers-6.1.0-9-amd64"
    assert str((moddir / "source").readlink()) == "../../../usr/src/linux-headers-6.1.0-9-common"
