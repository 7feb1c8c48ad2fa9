#!/bin/sh
# Build a Debian trixie root file system with GIMP 3 (Python plug-ins) for the tests in this
# folder.  Usage: build_root.sh ROOT [extra packages...]   (run as root; see
# /work/shared/gimp3-headless.md).  The mirror is the host's own, read from its apt sources.
set -eu
ROOT=$1; shift
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
    debootstrap --variant=minbase trixie "$ROOT.partial" "$MIRROR"
    mv "$ROOT.partial" "$ROOT"
fi
if ! mountpoint -q "$ROOT/proc"; then
    mount -t proc proc "$ROOT/proc"
    trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
fi
chroot "$ROOT" apt-get update
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    gimp gir1.2-gimp-3.0 python3-gi python3-zmq python3-msgpack "$@"
touch "$ROOT/.ganpaint-gimp-root-ok"
