"""ntalab as an installed package: a wheel, installed outside the checkout, runs from anywhere."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_carries_the_lab_and_runs_from_any_directory(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)], check=True)
    (wheel,) = tmp_path.glob("ntalab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = "ntalab-0.2.0.data/data/share/ntalab"
    for needed in (
        "kmod/nta_uapi.h",
        "kmod/Kbuild",
        "images/kernels.toml",
        "tests/lab/test_nta.py",
    ):
        assert f"{data}/{needed}" in names, needed
    # A venv of its own, the lab's dependencies reached through a .pth file.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = (
        venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)],
        check=True,
    )
    away = tmp_path / "elsewhere"
    away.mkdir()
    out = subprocess.run(
        [str(venv / "bin" / "ntalab"), "images", "list"], cwd=away, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "debian-6.1"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import lab.paths as p; print(p.sources().root)"],
        cwd=away, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip() == str(venv / "share" / "ntalab")
