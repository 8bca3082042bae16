"""Kernel configs: what the lab needs of any guest kernel, and config fragments.

Like kunit.py with its kunitconfig, the lab reads a kernel's ``.config``
before booting it and names every option it lacks, rather than letting a
guest fail half-way through its set-up. Options the lab can do without are
features: a kernel without IPv6 simply has no IPv6 to turn off.

Fragments (``images/*.config``) are what the lab's own built kernels add to
virtme-ng's minimal config; after a build's ``olddefconfig`` every option of
the fragments must have the value asked for, or the build stops and names
the ones Kconfig overrode (a dependency missing, a typo).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import InfraError

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


def parse(text: str) -> dict[str, str]:
    """``CONFIG_X=v`` lines as {"CONFIG_X": "v"}; ``# CONFIG_X is not set`` as "n"."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            out[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            out[m.group(1)] = "n"
    return out


def read(path: Path) -> dict[str, str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            return parse(f.read())
    except OSError as e:
        raise InfraError(f"cannot read kernel config {path}: {e}") from e


def unmet(wanted: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """The options of ``wanted`` that ``actual`` does not have as asked, each with both values."""
    out = []
    for name, value in wanted.items():
        have = actual.get(name, "n")
        if have != value:
            out.append(f"{name}={value} (is {have})")
    return out


@dataclass(frozen=True)
class Need:
    """Options of which at least one must be on (y or m), and why."""

    options: tuple[str, ...]
    why: str

    def met(self, config: Mapping[str, str]) -> bool:
        return any(config.get(o, "n") in ("y", "m") for o in self.options)


# What every lab guest needs: virtme-ng's shared root, the NTA module and its
# hooks, the lab's captures and counters.
REQUIRED = (
    Need(("CONFIG_9P_FS",), "virtme-ng mounts the host's root over 9p"),
    Need(("CONFIG_NET_9P_VIRTIO",), "virtme-ng's 9p transport"),
    Need(("CONFIG_VIRTIO_PCI",), "virtme-ng's virtio devices"),
    Need(("CONFIG_SERIAL_8250_CONSOLE", "CONFIG_VIRTIO_CONSOLE"), "the console the lab drives"),
    Need(("CONFIG_MODULES",), "loading NTA"),
    Need(("CONFIG_MODULE_UNLOAD",), "unloading NTA (every NTA scenario)"),
    Need(("CONFIG_DYNAMIC_FTRACE_WITH_REGS",), "NTA's allocator redirects (ftrace IPMODIFY)"),
    Need(("CONFIG_KPROBES",), "NTA marks e1000's refill with a kretprobe"),
    Need(("CONFIG_DEBUG_FS",), "NTA's counters"),
    Need(("CONFIG_PACKET",), "AF_PACKET captures and tcpdump"),
    Need(("CONFIG_INET",), "the guest's IPv4 stack"),
)

# Per NIC driver the guest's NIC set uses.
DRIVERS = {"e1000": "CONFIG_E1000", "8139cp": "CONFIG_8139CP"}


@dataclass(frozen=True)
class Features:
    """What the lab adapts to: optional parts of the kernel, on or off."""

    ipv6: bool
    vlan_devices: bool
    net_ns: bool
    hist_triggers: bool
    kasan: bool  # a sanitizer kernel: KASAN, and with it lockdep and kmemleak
    kmemleak: bool


def check(config: Mapping[str, str], drivers: Iterable[str], source: str) -> Features:
    """Every required option on, or a LabError naming all that are missing."""
    needs = [*REQUIRED]
    needs += [Need((DRIVERS[d],), f"the {d} NIC driver") for d in sorted(set(drivers))]
    missing = [n for n in needs if not n.met(config)]
    if missing:
        lines = "\n".join(f"  {' or '.join(n.options)}: {n.why}" for n in missing)
        raise InfraError(f"{source} lacks what the lab needs:\n{lines}")

    def on(name: str) -> bool:
        return config.get(name, "n") in ("y", "m")

    return Features(
        ipv6=on("CONFIG_IPV6"),
        vlan_devices=on("CONFIG_VLAN_8021Q"),
        net_ns=on("CONFIG_NET_NS"),
        hist_triggers=on("CONFIG_HIST_TRIGGERS"),
        kasan=on("CONFIG_KASAN"),
        kmemleak=on("CONFIG_DEBUG_KMEMLEAK"),
    )
