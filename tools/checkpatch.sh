#!/usr/bin/env bash
# checkpatch.pl --strict over kmod/. Debian ships checkpatch only inside the
# kernel source package, so the three files it needs are taken from
# linux-source-6.1 (pinned like the guest kernels) into the user's ntalab cache
# (as lab/paths.py: $NTALAB_CACHE, else $XDG_CACHE_HOME/ntalab, else
# ~/.cache/ntalab) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=6.1.192-2
cache=${NTALAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ntalab}
dir=$cache/checkpatch
files=(scripts/checkpatch.pl scripts/spelling.txt scripts/const_structs.checkpatch)
if [ ! -x "$dir/scripts/checkpatch.pl" ] || [ "$(cat "$dir/version" 2>/dev/null)" != "$VERSION" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # A fresh machine's package lists may predate the pinned version: refresh once.
  (cd "$work" && { apt-get download -q "linux-source-6.1=$VERSION" ||
    { apt-get update -q && apt-get download -q "linux-source-6.1=$VERSION"; }; })
  dpkg-deb --fsys-tarfile "$work"/linux-source-6.1_*.deb |
    tar -xO ./usr/src/linux-source-6.1.tar.xz |
    tar -xJ -C "$work" "${files[@]/#/linux-source-6.1/}"
  rm -rf "$dir" && mkdir -p "$dir"
  cp -r "$work/linux-source-6.1/scripts" "$dir/"
  echo "$VERSION" > "$dir/version"
fi
shopt -s nullglob
sources=(kmod/*.c kmod/*.h kmod/tests/*.c kmod/ntadump/*.c)
# An out-of-tree module built for several kernels must test their versions:
# those tests live in kmod/nta_compat.h, so checkpatch's advice against them
# (and its constant-on-the-right rule, which they trip) is set aside.
exec perl "$dir/scripts/checkpatch.pl" --strict --no-tree --terse --show-types \
  --ignore FILE_PATH_CHANGES,LINUX_VERSION_CODE,CONSTANT_COMPARISON -f "${sources[@]}"
