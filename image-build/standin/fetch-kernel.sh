#!/bin/sh
# mmdebstrap customize hook of the CI stand-in: download (not install) Debian's kernel
# package for the root's architecture into ROOTFS/root/kernel. Installing it would
# rebuild a full initramfs under emulation (~12 min, twice); test-image.sh unpacks it
# with dpkg-deb -x and builds a small initramfs instead.
# apt runs on the host, not in the chroot (which has no resolver yet): mmdebstrap sets
# APT_CONFIG for its hooks, so host apt-get works on the chroot's sources and arch.
set -eu
ROOTFS=$1
arch=$(chroot "$ROOTFS" dpkg --print-architecture)
pkg=$(apt-cache depends "linux-image-$arch:$arch" |
    sed -n 's/.*Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
[ -n "$pkg" ] || { echo "fetch-kernel: no kernel package for $arch" >&2; exit 1; }
mkdir -p "$ROOTFS/root/kernel"
cd "$ROOTFS/root/kernel"
apt-get download -q "$pkg:$arch"
