"""Build, load, unload: the path every module build takes into a guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import kbuild
from lab.labenv import LabEnv

MINIMAL = Path(__file__).parent.parent / "data" / "kbuild-clean"


@pytest.mark.lab
def test_module_built_for_the_guest_kernel_loads(lab_env: LabEnv) -> None:
    built = kbuild.build(lab_env.kernel, src=MINIMAL, root=lab_env.outdir / "kbuild-minimal")
    assert built.status is kbuild.BuildStatus.OK, built.log.read_text()[-2000:]
    vermagic = lab_env.cmd(f"modinfo -F vermagic {built.module}").stdout.split()[0]
    assert vermagic == lab_env.kernel.release
    loaded = lab_env.nta.loaded
    if loaded is not None:  # NTA, loaded for the other scenarios, has the same name
        lab_env.nta.unload(bounce=lab_env.nics)
        lab_env.defer(lab_env.nta.load, loaded.module, loaded.params, lab_env.nics)
    lab_env.cmd(f"insmod {built.module}")
    assert lab_env.cmd("grep -c '^nta ' /proc/modules").stdout.strip() == "1"
    lab_env.cmd("rmmod nta")
    assert "ntatest: version 1 loaded" in lab_env.cmd("dmesg").stdout
