#!/bin/sh
# bootfs-fixup.sh SLOT -- genimage exec-pre of boot-a.vfat / boot-b.vfat:
# IMAGEMOUNTPATH is genimage's copy of /boot/firmware. The slot's kernel finds its own
# root by partition name (rootfs-a / rootfs-b; the initramfs resolves PARTLABEL=) and
# tells RAUC which slot it is (rauc.slot=); everything else on the line is kept.
# RAUC's post-install handler (update/rauc-post-install) does the same to a boot slot
# written by an update.
set -eu

slot=${1:?usage: bootfs-fixup.sh A|B}
case $slot in A) root=rootfs-a ;; B) root=rootfs-b ;; *) echo "bootfs-fixup: slot $slot" >&2; exit 1 ;; esac
cmdline="${IMAGEMOUNTPATH:?}/cmdline.txt"
[ -f "$cmdline" ] || { echo "bootfs-fixup: no $cmdline" >&2; exit 1; }
line=$(head -n 1 "$cmdline" | sed -e 's| root=[^ ]*||; s|^root=[^ ]* *||; s| rauc\.slot=[^ ]*||')
printf 'root=PARTLABEL=%s rauc.slot=%s %s\n' "$root" "$slot" "$line" > "$cmdline"
