"""Kernel configs: what the lab needs of any kernel, named before it boots; fragments checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import LabError, images, kconfig

# What a Debian kernel's config has of what the lab needs (a real config is
# checked in the lab; these are the option lines as Kconfig writes them).
FULL = """
CONFIG_9P_FS=m
CONFIG_NET_9P_VIRTIO=m
CONFIG_VIRTIO_PCI=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_MODULES=y
CONFIG_MODULE_UNLOAD=y
CONFIG_DYNAMIC_FTRACE_WITH_REGS=y
CONFIG_KPROBES=y
CONFIG_DEBUG_FS=y
CONFIG_PACKET=y
CONFIG_INET=y
CONFIG_E1000=m
CONFIG_8139CP=m
CONFIG_IPV6=y
CONFIG_NET_NS=y
"""


def test_parse_reads_set_and_unset_options() -> None:
    got = kconfig.parse(
        'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n# comment\nCONFIG_D=16000\n'
    )
    assert got == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"', "CONFIG_D": "16000"}


def test_a_complete_config_gives_its_features() -> None:
    f = kconfig.check(kconfig.parse(FULL), ["e1000", "8139cp"], "k")
    assert (f.ipv6, f.net_ns, f.kasan, f.vlan_devices) == (True, True, False, False)


def test_ipv6_off_is_a_feature_off_not_an_error() -> None:
    """vng's default config has no IPv6: the lab then has no IPv6 to turn off."""
    config = kconfig.parse(FULL.replace("CONFIG_IPV6=y", "# CONFIG_IPV6 is not set"))
    assert kconfig.check(config, ["e1000"], "k").ipv6 is False


def test_everything_missing_is_named_at_once() -> None:
    config = kconfig.parse(FULL.replace("CONFIG_KPROBES=y\n", "").replace("CONFIG_8139CP=m\n", ""))
    with pytest.raises(LabError) as err:
        kconfig.check(config, ["e1000", "8139cp"], "kernel mine")
    text = str(err.value)
    assert text.startswith("kernel mine lacks what the lab needs:")
    assert "CONFIG_KPROBES: NTA marks e1000's refill with a kretprobe" in text
    assert "CONFIG_8139CP: the 8139cp NIC driver" in text
    assert "CONFIG_E1000" not in text
    # A driver the guest's NICs do not use is not needed.
    kconfig.check(kconfig.parse(FULL.replace("CONFIG_8139CP=m\n", "")), ["e1000"], "k")


def test_unmet_names_what_kconfig_overrode() -> None:
    wanted = {"CONFIG_KASAN": "y", "CONFIG_KVM": "n", "CONFIG_X": "16000"}
    assert kconfig.unmet(wanted, {"CONFIG_KASAN": "y", "CONFIG_X": "16000"}) == []
    assert kconfig.unmet(wanted, {"CONFIG_KVM": "y", "CONFIG_X": "1"}) == [
        "CONFIG_KASAN=y (is n)",
        "CONFIG_KVM=n (is y)",
        "CONFIG_X=16000 (is 1)",
    ]


def test_the_debian_kernels_have_what_the_lab_needs() -> None:
    """The real configs of the manifest's Debian kernels (make test fetches 6.1 first)."""
    kernel = images.provide(images.load_manifest()["debian-6.1"])
    f = kernel.features(["e1000", "8139cp"])
    assert f.ipv6 and f.net_ns and not f.kasan


def test_a_kernel_of_unknown_config_is_refused(tmp_path: Path) -> None:
    kernel = images.Kernel("mine", "6.14.0", tmp_path / "bzImage", None, tmp_path / "no-config")
    with pytest.raises(LabError, match="its config is not known"):
        kernel.features(["e1000"])
