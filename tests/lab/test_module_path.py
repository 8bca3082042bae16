"""Build, load, unload: the path every module build takes into a guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import kbuild
from lab.labenv import LabEnv

MINIMAL = Path(__file__).parent.parent / "data" / "kbuild-clean"


@pytest.mark.lab
def test_module_built_for_the_guest_kernel_loads(lab_env: LabEnv, tmp_path: Path) -> None:
    built = kbuild.build(lab_env.kernel, src=MINIMAL, root=lab_env.outdir / "kbuild-minimal")
    assert built.status is kbuild.BuildStatus.OK, built.log.read_text()[-2000:]
    sh = lab_env.guest.sh
    assert sh.run(f"modinfo -F vermagic {built.module}").stdout.split()[0] == lab_env.kernel.release
    sh.run(f"insmod {built.module}")
    assert sh.run("grep -c '^nta ' /proc/modules").stdout.strip() == "1"
    sh.run("rmmod nta")
    assert "ntatest: version 1 loaded" in sh.run("dmesg").stdout
