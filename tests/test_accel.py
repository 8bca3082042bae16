"""Accelerator choice: KVM only with vmx/svm, an accessible /dev/kvm and a probe that ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import accel

CPUINFO = "processor\t: 0\nflags\t\t: fpu vme de pse {extra} sse2\n"


def cpuinfo(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    return path


def test_flags_parsed() -> None:
    assert accel.cpu_has_virt(CPUINFO.format(extra="vmx"))
    assert accel.cpu_has_virt(CPUINFO.format(extra="svm"))
    assert not accel.cpu_has_virt(CPUINFO.format(extra="vmxnot"))
    assert not accel.cpu_has_virt("")


def test_no_virt_flag_means_tcg_without_probing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "probe_kvm", lambda: pytest.fail("probed"))
    got = accel.detect(cpuinfo(tmp_path, "ht"), tmp_path / "kvm")
    assert got == accel.Accel("tcg", "cpu has no vmx/svm flag")
    assert got.vng_args == ["--disable-kvm"]


def test_missing_dev_kvm_means_tcg(tmp_path: Path) -> None:
    got = accel.detect(cpuinfo(tmp_path, "vmx"), tmp_path / "kvm")
    assert got.name == "tcg" and "missing" in got.reason


def test_hanging_kvm_means_tcg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = tmp_path / "kvm"
    dev.write_text("")
    monkeypatch.setattr(accel, "probe_kvm", lambda: False)
    got = accel.detect(cpuinfo(tmp_path, "svm"), dev)
    assert got.name == "tcg" and "probe" in got.reason


def test_working_kvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = tmp_path / "kvm"
    dev.write_text("")
    monkeypatch.setattr(accel, "probe_kvm", lambda: True)
    got = accel.detect(cpuinfo(tmp_path, "vmx"), dev)
    assert got.name == "kvm" and got.vng_args == []


def test_probe_bounded_when_qemu_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "qemu"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setattr(accel, "QEMU", str(fake))
    assert accel.probe_kvm(timeout=0.5) is False


def test_probe_sees_guest_code_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "qemu"
    fake.write_text("#!/bin/sh\necho 'SeaBIOS (version 1.16)'\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setattr(accel, "QEMU", str(fake))
    assert accel.probe_kvm(timeout=1.0) is True


def test_override() -> None:
    assert accel.choose("tcg").name == "tcg"
    assert accel.choose("kvm").name == "kvm"
    assert accel.choose("tcg-single").qemu_args == ["-accel", "tcg,thread=single"]
    with pytest.raises(ValueError, match="--accel"):
        accel.choose("hvf")
