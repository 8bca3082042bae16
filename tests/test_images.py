"""Manifest parsing, kernel resolution and the cache layout, without apt."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lab import LabError, images

MANIFEST = """
[kernel."k-1"]
release = "6.1.0-9-amd64"
version = "6.1.1-1"
packages = ["linux-image-6.1.0-9-amd64", "linux-headers-6.1.0-9-amd64"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kernels.toml"
    path.write_text(text)
    return path


def test_repo_manifest_pins_both_debian_kernels() -> None:
    entries = images.load_manifest()
    assert set(entries) == {"debian-6.1", "debian-6.12"}
    for entry in entries.values():
        assert any(p.startswith("linux-image-") for p in entry.packages)
        assert any(p.startswith("linux-headers-") for p in entry.packages)
        assert any(p.startswith("linux-kbuild-") for p in entry.packages)
        assert all(entry.release in p for p in entry.packages if "image" in p)


def test_manifest_entry_parsed(tmp_path: Path) -> None:
    entries = images.load_manifest(write(tmp_path, MANIFEST))
    assert entries == {
        "k-1": images.KernelEntry(
            "k-1",
            "6.1.0-9-amd64",
            "6.1.1-1",
            ("linux-image-6.1.0-9-amd64", "linux-headers-6.1.0-9-amd64"),
        )
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[kernel.a]\nrelease = "r"\npackages = ["p"]\n', "lacks 'version'"),
        ('[kernel.a]\nrelease = "r"\nversion = "v"\npackages = "p"\n', "list of names"),
        ("[other]\n", "no [kernel.<name>] entries"),
        ("[kernel.a\n", "cannot read kernel manifest"),
    ],
)
def test_bad_manifest_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LabError, match=message.replace("[", r"\[").replace(".", r"\.")):
        images.load_manifest(write(tmp_path, text))


def test_unknown_kernel_lists_known_ones(tmp_path: Path) -> None:
    entries = images.load_manifest(write(tmp_path, MANIFEST))
    with pytest.raises(LabError, match=r"unknown kernel 'nope'.*k-1"):
        images.resolve("nope", entries)


def test_unfetched_kernel_says_how_to_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "CACHE", tmp_path / "cache")
    entries = images.load_manifest(write(tmp_path, MANIFEST))
    monkeypatch.setattr(images, "is_fetched", lambda entry, cache=None: False)
    with pytest.raises(LabError, match="ntalab images fetch k-1"):
        images.resolve("k-1", entries)


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
    kernel = images.resolve(str(image), {})
    assert (kernel.release, kernel.vmlinuz) == ("6.13.0-rc1-dev", image)


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
    assert kernel.headers == tmp_path


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
