#!/bin/sh
# Build a Debian root file system with GIMP 3 (Python plug-ins) for the tests in this folder.
#   build_root.sh ROOT [extra packages...]   (run as root; see /work/shared/gimp3-headless.md)
# SUITE (env): trixie (default, GIMP 3.0) or forky/sid (GIMP 3.2). The mirror is the host's own,
# read from its apt sources.
set -eu
ROOT=$1; shift
SUITE=${SUITE:-trixie}
if ! command -v debootstrap >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap
fi
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$MIRROR" ]; then
    MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$MIRROR" ] || { echo "no Debian mirror found in the host's apt sources" >&2; exit 3; }
if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    rm -rf "$ROOT.partial"
    # debootstrap of an older host may not know the newest suite: all Debian suites since
    # trixie bootstrap like sid.
    script=/usr/share/debootstrap/scripts/$SUITE
    [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
    debootstrap --variant=minbase "$SUITE" "$ROOT.partial" "$MIRROR" "$script"
    mv "$ROOT.partial" "$ROOT"
fi
# A mirror snapshot's testing/unstable Release files can be past their Valid-Until date.
echo 'Acquire::Check-Valid-Until "false";' > "$ROOT/etc/apt/apt.conf.d/99ganpaint-snapshot"
if ! mountpoint -q "$ROOT/proc"; then
    mount -t proc proc "$ROOT/proc"
    trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
fi
chroot "$ROOT" apt-get update
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    gimp gir1.2-gimp-3.0 python3-gi python3-zmq python3-msgpack "$@"
touch "$ROOT/.ganpaint-gimp-root-ok"
