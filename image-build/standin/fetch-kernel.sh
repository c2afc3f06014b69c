#!/bin/sh
# mmdebstrap customize hook of the CI stand-in: download (not install) Debian's kernel
# package for the root's architecture into ROOTFS/root/kernel. Installing it would
# rebuild a full initramfs under emulation (~12 min, twice); test-image.sh unpacks it
# with dpkg-deb -x and builds a small initramfs instead.
# apt runs in the chroot (it has the lists of the root's architecture); the chroot's
# resolv.conf points at systemd-resolved, which is not running, so the host's is lent
# for the download and the link put back afterwards.
set -eu
ROOTFS=$1
resolv=$ROOTFS/etc/resolv.conf
link=$(readlink "$resolv" || true)
restore() { rm -f "$resolv"; if [ -n "$link" ]; then ln -s "$link" "$resolv"; fi; }
trap restore EXIT
rm -f "$resolv"
cp -L /etc/resolv.conf "$resolv"
arch=$(chroot "$ROOTFS" dpkg --print-architecture)
pkg=$(chroot "$ROOTFS" apt-cache depends "linux-image-$arch" |
    sed -n 's/.*Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
[ -n "$pkg" ] || { echo "fetch-kernel: no kernel package for $arch" >&2; exit 1; }
mkdir -p "$ROOTFS/root/kernel"
chroot "$ROOTFS" sh -c "cd /root/kernel && apt-get download -q $pkg"
