#!/usr/bin/env bash
# Installs what the lab needs, idempotently and quickly when all is there:
# Debian packages (apt-get as root; otherwise prints the exact command and
# fails) and a venv at .venv with the Python dependencies, at the versions
# pinned in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu + seabios: the guests; busybox-static, kmod: virtme-ng's initramfs and
# depmod; gcc, make, libelf-dev, bc, flex, bison, dwarves (pahole): module
# builds for 6.1 and 6.12; iproute2, ethtool, iputils-ping, tcpdump: used
# inside the guests, which run the host's userspace over 9p (tcpdump is the
# benchmark's reference sniffer, and pysniff's filter compiler); libpcap-dev:
# ntadump compiles filter expressions with libpcap; python3-venv: the venv.
PACKAGES=(qemu-system-x86 qemu-utils seabios busybox-static kmod gcc make libelf-dev bc
  flex bison dwarves iproute2 ethtool iputils-ping tcpdump libpcap-dev xz-utils python3-venv)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "ntalab needs Debian packages; run as root:" >&2
    echo "  sudo sh -c '$cmd'" >&2
    exit 1
  fi
  echo "+ $cmd"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "+ $PYTHON -m venv .venv"
  "$PYTHON" -m venv .venv
fi
# Pinned: every machine gets the versions in constraints.txt (make constraints
# refreshes them), so two fresh machines run the same lab code.
if [ ! -f .venv/.deps-stamp ] || [ pyproject.toml -nt .venv/.deps-stamp ] ||
  [ constraints.txt -nt .venv/.deps-stamp ]; then
  echo "+ .venv/bin/pip install -c constraints.txt -e '.[dev]'"
  .venv/bin/pip install -q -c constraints.txt --upgrade pip
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  touch .venv/.deps-stamp
fi
