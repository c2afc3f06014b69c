#!/bin/sh
# pre-image.sh of the clinicam image layout (rpi-image-gen's IMAGE_ASSET:pre-image.sh,
# found in the image's asset directory, IGconf_image_assetdir = this directory). The
# runner calls it as "./pre-image.sh ROOTFS OUTPUTDIR" from this directory
# (bin/runner, phase_args pre-image); rpi-image-gen then runs genimage on every
# OUTPUTDIR/genimage*.cfg and silently makes no image when there is none.
set -eu

rootfs=${1:?rootfs}
outdir=${2:?image output directory}
here=$(cd "$(dirname "$0")" && pwd)
fixup="$here/bootfs-fixup.sh"

[ -d "$rootfs/var/lib/clinicam" ] || {
    echo "clinicam-image: $rootfs/var/lib/clinicam is missing (customize.sh did not run?)" >&2
    exit 1
}

mkdir -p "$outdir"
# p1 holds only the firmware's A/B selection: committed slot A (p2), trial slot B (p3).
printf '[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n' > "$outdir/autoboot.txt"
sed -e "s|@NAME@|${IGconf_image_name:?}|g" \
    -e "s|@SUFFIX@|${IGconf_image_suffix:?}|g" \
    -e "s|@BOOT_SIZE@|${IGconf_image_boot_part_size:?}|g" \
    -e "s|@ROOT_SIZE@|${IGconf_image_root_part_size:?}|g" \
    -e "s|@DATA_SIZE@|${IGconf_image_data_part_size:?}|g" \
    -e "s|@FIXUP@|$fixup|g" \
    -e "s|@AUTOBOOT@|$outdir/autoboot.txt|g" \
    "$here/genimage.cfg.in" > "$outdir/genimage.cfg"
