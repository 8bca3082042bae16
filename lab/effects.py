"""Which guest shell commands change the guest's state: the scenario door's guard.

``LabEnv.cmd`` is for commands that only read (counters, logs, sysfs,
``ip ... show``); a change goes through a call of the door that undoes it
(``LabEnv.act`` with its undo, or one named for it: ``links_down``,
``set_gro``, ``module.set_param``...). ``effect`` tells the first kind from
the second by what a command visibly does: a write redirection, or a
program (and verb) known to change state. It is a net, not a proof (a
program may change state on its own): the state check before each test is
the proof (``lab.testbed``).
"""

from __future__ import annotations

import re
import shlex

# Programs that change the guest whatever their arguments.
CHANGING = {
    "insmod", "rmmod", "modprobe", "mount", "umount", "touch", "rm", "mkdir", "rmdir", "mv",
    "cp", "tee", "dd", "truncate", "chmod", "chown", "ln", "mkfifo", "reboot", "poweroff",
}  # fmt: skip
# ip OBJECT VERB: verbs that change, and those objects' verbs that do not.
IP_CHANGING_VERBS = {"add", "del", "delete", "set", "replace", "change", "flush", "append"}
ETHTOOL_CHANGING = {"-K", "--features", "--offload", "-G", "--set-ring", "-L", "--set-channels",
                    "-C", "--coalesce", "-A", "--pause", "-s", "--change", "-E", "-U"}  # fmt: skip
SHELLS = {"sh", "bash", "dash"}

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# A redirection that writes somewhere other than /dev/null or another descriptor.
_WRITE = re.compile(r"(?<![<>&0-9])[0-9]?>>?(?!&)\s*(?!/dev/null(?:\s|$|;|\)|&|\|))\S")
_SPLIT = re.compile(r"\|\||&&|[;|&\n]|\$\(|`|\bdo\b|\bthen\b|\belse\b")


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment, posix=True)
    except ValueError:  # an unbalanced quote: its own segment of a larger command
        return segment.split()


def _program_effect(words: list[str]) -> str | None:
    """What the simple command ``words`` changes, if it visibly changes something."""
    while words and ("=" in words[0] and not words[0].startswith("-")):
        words = words[1:]  # VAR=value assignments before the program
    if not words:
        return None
    prog, args = words[0].rsplit("/", 1)[-1], words[1:]
    if prog in CHANGING:
        return f"{prog} changes the guest"
    if prog == "kill":
        return None if args[:1] == ["-0"] else "kill ends a process"
    if prog in SHELLS and "-c" in args:
        return f"{prog} -c runs a command the guard cannot see into"
    if prog == "sysctl" and any(
        "=" in a or a == "--write" or (a[:1] == "-" and a[1:2] != "-" and "w" in a) for a in args
    ):
        return "sysctl writes a setting"
    if prog == "dmesg" and any(a in ("-c", "-C", "--clear", "--read-clear", "-n") for a in args):
        return "dmesg clears the kernel's log"
    if prog == "ethtool" and any(a in ETHTOOL_CHANGING for a in args):
        return "ethtool changes a driver setting"
    if prog in ("ip", "tc"):
        rest = [a for a in args if not a.startswith("-")]
        if prog == "ip" and rest[:2] and rest[0] == "netns" and rest[1] == "exec":
            return _program_effect(rest[3:])
        if len(rest) > 1 and rest[1] in IP_CHANGING_VERBS:
            return f"{prog} {rest[0]} {rest[1]} changes the guest's network"
    return None


def effect(command: str) -> str | None:
    """Why ``command`` changes the guest's state, or None if it visibly does not."""
    if _WRITE.search(_QUOTED.sub("''", command)):
        return "it writes through a redirection"
    for segment in _SPLIT.split(command):
        why = _program_effect(_words(segment.strip()))
        if why is not None:
            return why
    return None
