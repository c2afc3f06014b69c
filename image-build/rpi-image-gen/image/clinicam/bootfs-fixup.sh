#!/bin/sh
# genimage exec-pre of bootfs.vfat: IMAGEMOUNTPATH is genimage's copy of
# /boot/firmware. The kernel finds the root file system by label (rootfs), as
# image-build/overlay/etc/fstab does; everything else on the line is kept.
set -eu

cmdline="${IMAGEMOUNTPATH:?}/cmdline.txt"
[ -f "$cmdline" ] || { echo "bootfs-fixup: no $cmdline" >&2; exit 1; }
line=$(head -n 1 "$cmdline")
case " $line " in
    *" root="*) line=$(printf '%s\n' "$line" | sed 's|root=[^ ]*|root=LABEL=rootfs|') ;;
    *) line="root=LABEL=rootfs $line" ;;
esac
printf '%s\n' "$line" > "$cmdline"
