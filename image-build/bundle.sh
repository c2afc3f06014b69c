#!/bin/sh
# bundle.sh -- build a signed RAUC update bundle of a station root file system
# (make bundle). Root is needed to read every file of a root tree (mke2fs -d).
#
#   bundle.sh --rootfs DIR | --image ROOT.ext4   --out FILE.raucb
#             [--version V] [--compatible C] [--size MiB]
#             [--boot DIR | --boot-image BOOT.vfat] [--boot-size MiB]
#
# The version defaults to DIR/usr/share/clinicam/image-version, the compatible to the
# [system] compatible of DIR/etc/rauc/system.conf: the bundle says what it contains.
# Boot slot (the Pi: kernel, firmware, config.txt and cmdline.txt live on the slot's
# own FAT partition, boot-a/boot-b, not in the root): when the root's system.conf has
# [slot.boot.N] slots, the bundle carries boot.vfat too, made from DIR/boot/firmware
# (or --boot DIR, or a ready --boot-image), --boot-size MiB (default 256: the release
# layout's boot-a/boot-b, rpi-image-gen/image/clinicam/clinicam-image.yaml). RAUC
# writes it into the boot slot beside the root slot it installs; rauc-post-install
# points its cmdline.txt at that root. A root without boot slots (the stand-in) gets
# none, and refuses --boot.
# Signing: CLINICAM_UPDATE_CERT and CLINICAM_UPDATE_KEY (a file, or a PKCS#11 URL for
# the key); the bundle is verified against CLINICAM_UPDATE_KEYRING before it is kept.
# Defaults: the development keys of image-build/work/update-keys (made on first use
# by update/dev-keys.sh; never for a release).
# Format: verity (dm-verity over the squashfs; the system refuses "plain"), squashfs
# compressed with zstd (CLINICAM_BUNDLE_SQUASHFS_ARGS, default "-comp zstd
# -Xcompression-level 6": about gzip's size, built and unpacked faster; a release may
# spend longer, e.g. -Xcompression-level 19, for less Wi-Fi time).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
KEYS=$HERE/work/update-keys
rootfs="" image="" out="" version="" compatible="" size="" boot="" boot_image="" boot_size=256
usage() { echo "usage: bundle.sh --rootfs DIR|--image ROOT.ext4 --out FILE.raucb [--version V] [--compatible C] [--size MiB] [--boot DIR|--boot-image BOOT.vfat] [--boot-size MiB]" >&2; exit 2; }
die() { echo "bundle: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case $1 in
        --rootfs) rootfs=${2:?}; shift ;;
        --image) image=${2:?}; shift ;;
        --out) out=${2:?}; shift ;;
        --version) version=${2:?}; shift ;;
        --compatible) compatible=${2:?}; shift ;;
        --size) size=${2:?}; shift ;;
        --boot) boot=${2:?}; shift ;;
        --boot-image) boot_image=${2:?}; shift ;;
        --boot-size) boot_size=${2:?}; shift ;;
        *) usage ;;
    esac
    shift
done
if [ -z "$out" ] || { [ -z "$rootfs" ] && [ -z "$image" ]; }; then usage; fi
case $out in *.raucb) ;; *) die "--out must end in .raucb (RAUC refuses other names)" ;; esac
command -v rauc >/dev/null || die "rauc missing: apt-get install rauc squashfs-tools"
command -v mksquashfs >/dev/null || die "mksquashfs missing: apt-get install squashfs-tools"

if [ -z "${CLINICAM_UPDATE_CERT:-}" ]; then
    sh "$HERE/update/dev-keys.sh" "$KEYS"
    echo "bundle: signing with the DEVELOPMENT update key ($KEYS); set CLINICAM_UPDATE_CERT/KEY/KEYRING for a release" >&2
fi
cert=${CLINICAM_UPDATE_CERT:-$KEYS/signing.pem}
key=${CLINICAM_UPDATE_KEY:-$KEYS/signing.key}
keyring=${CLINICAM_UPDATE_KEYRING:-$KEYS/ca.pem}

if [ -n "$rootfs" ]; then
    [ -d "$rootfs" ] || die "--rootfs $rootfs: no such directory"
    [ -n "$version" ] || version=$(cat "$rootfs/usr/share/clinicam/image-version" 2>/dev/null) ||
        die "$rootfs/usr/share/clinicam/image-version missing: was customize.sh run? (or pass --version)"
    [ -n "$compatible" ] || compatible=$(awk -F= '/^\[system\]/ {s = 1; next} /^\[/ {s = 0}
        s && $1 == "compatible" {print $2}' "$rootfs/etc/rauc/system.conf" 2>/dev/null)
fi
# Does the target have boot slots? The root's own system.conf says so.
boot_slots=no
if [ -n "$rootfs" ] && grep -q '^\[slot\.boot\.' "$rootfs/etc/rauc/system.conf" 2>/dev/null; then
    boot_slots=yes
    [ -n "$boot" ] || [ -n "$boot_image" ] || boot=$rootfs/boot/firmware
elif [ -n "$rootfs" ] && { [ -n "$boot" ] || [ -n "$boot_image" ]; }; then
    die "--boot given, but $rootfs/etc/rauc/system.conf has no [slot.boot.N]: this target boots its kernel from the root"
fi
if [ -n "$boot" ] && [ -n "$boot_image" ]; then die "give --boot DIR or --boot-image FILE, not both"; fi
if [ -n "$boot" ]; then
    for f in config.txt cmdline.txt; do
        [ -f "$boot/$f" ] || die "$boot/$f missing: not the Pi's boot partition content (the boot slot needs kernel, firmware, $f)"
    done
    command -v mkfs.vfat >/dev/null || die "mkfs.vfat missing: apt-get install dosfstools"
    command -v mcopy >/dev/null || die "mcopy missing: apt-get install mtools"
fi
if [ -n "$boot_image" ]; then
    [ -f "$boot_image" ] || die "--boot-image $boot_image: no such file"
    [ "$(stat -c %s "$boot_image")" -le $((boot_size * 1048576)) ] ||
        die "--boot-image $boot_image is larger than the boot slot (--boot-size $boot_size MiB)"
fi
[ -n "$version" ] || die "no version: pass --version"
[ -n "$compatible" ] || die "no compatible: pass --compatible (or a --rootfs with /etc/rauc/system.conf)"

work=$(mktemp -d "${TMPDIR:-/tmp}/clinicam-bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/content"
if [ -n "$rootfs" ]; then
    mb=${size:-$(( $(du -sm "$rootfs" | cut -f1) * 13 / 10 + 200 ))}
    mke2fs -q -t ext4 -L rootfs -d "$rootfs" "$work/content/rootfs.ext4" "${mb}M"
else
    cp "$image" "$work/content/rootfs.ext4"
fi
boot_section=""
if [ -n "$boot" ]; then
    # One FAT image for either boot slot, the size of the slot (raw copy by RAUC).
    kib=$(du -sk "$boot" | cut -f1)
    [ "$kib" -lt $((boot_size * 1024 * 9 / 10)) ] ||
        die "$boot holds ${kib} KiB: more than the boot slot's $boot_size MiB can take (--boot-size)"
    mkfs.vfat -C -n BOOT "$work/content/boot.vfat" $((boot_size * 1024)) >/dev/null
    MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -i "$work/content/boot.vfat" "$boot"/* ::
fi
if [ -n "$boot_image" ]; then cp "$boot_image" "$work/content/boot.vfat"; fi
if [ -f "$work/content/boot.vfat" ]; then
    boot_section="
[image.boot]
filename=boot.vfat"
fi
cat > "$work/content/manifest.raucm" <<MANIFEST
[update]
compatible=$compatible
version=$version
description=clinicam station root file system

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
$boot_section
MANIFEST
# Verify as a station does: its keyring, certificate purpose codesign.
printf '[system]\ncompatible=%s\nbootloader=noop\n[keyring]\npath=%s\ncheck-purpose=codesign\n' \
    "$compatible" "$keyring" > "$work/verify.conf"
rm -f "$out"
rauc --conf="$work/verify.conf" bundle --cert="$cert" --key="$key" \
    --mksquashfs-args="${CLINICAM_BUNDLE_SQUASHFS_ARGS:--comp zstd -Xcompression-level 6}" \
    "$work/content" "$out" >/dev/null 2>"$work/log" ||
    { cat "$work/log" >&2; die "rauc bundle failed"; }
rauc --conf="$work/verify.conf" info "$out" >/dev/null 2>"$work/log" ||
    { cat "$work/log" >&2; die "$out does not verify against $keyring"; }
[ $boot_slots = no ] || [ -f "$work/content/boot.vfat" ] || die "internal: boot slots but no boot.vfat"
echo "bundle: $out ($compatible $version$([ -f "$work/content/boot.vfat" ] && echo ", root + boot slot"), $(( $(stat -c %s "$out") / 1048576 )) MiB)"
