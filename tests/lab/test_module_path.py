"""Build, load, unload: the path every module build takes into a guest."""

from __future__ import annotations

from pathlib import Path

from lab.scenario import LabEnv, kbuild

MINIMAL = Path(__file__).parent.parent / "data" / "kbuild-clean"


def test_module_built_for_the_guest_kernel_loads(lab_env: LabEnv) -> None:
    built = kbuild.build(lab_env.kernel, src=MINIMAL, root=lab_env.outdir / "kbuild-minimal")
    assert built.status is kbuild.BuildStatus.OK, built.log.read_text()[-2000:]
    assert built.module is not None
    vermagic = lab_env.cmd(f"modinfo -F vermagic {built.module}").stdout.split()[0]
    assert vermagic == lab_env.kernel.release
    if lab_env.module.loaded is not None:  # NTA, loaded for the other scenarios, has the same name
        lab_env.module.unload()  # and loaded again when the test ends
    minimal = lab_env.insmod(built.module)
    assert lab_env.cmd("grep -c '^nta ' /proc/modules").stdout.strip() == "1"
    minimal.rmmod()
    assert "ntatest: version 1 loaded" in lab_env.cmd("dmesg").stdout
