#!/bin/bash
# test-image.sh -- the appliance boot test (make test-image). Builds a Debian bookworm
# stand-in of the station image with mmdebstrap and the same customize.sh as the
# release image, boots it under QEMU (TCG: /dev/kvm hangs guests on these machines),
# and judges what bootcheck.sh prints on the serial console.
#
# Needs root and: mmdebstrap qemu-system-x86 (amd64) or qemu-system-arm +
# qemu-user-static + binfmt-support (arm64), e2fsprogs, python3, and Debian's
# mirror + PyPI (through the host's ordinary apt and pip configuration).
#
# Environment: CLINICAM_IMAGE_ARCH   amd64 (default) or arm64 (the Pi's)
#              CLINICAM_IMAGE_WORK   build directory (default image-build/work/ARCH)
#              CLINICAM_IMAGE_TIMEOUT seconds the VM may run (default 900)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# amd64 by default: arm64 passes too but takes ~14 min cold here (mmdebstrap under
# qemu-user alone ~9 min), too close to the 15 min budget for CI. See README.md.
ARCH=${CLINICAM_IMAGE_ARCH:-amd64}
WORK=${CLINICAM_IMAGE_WORK:-$HERE/work/$ARCH}
TIMEOUT=${CLINICAM_IMAGE_TIMEOUT:-900}
PY=${CLINICAM_PYTHON:-$REPO/.venv/bin/python}
SUITE=bookworm
STATION_UID=975
ROOTFS=$WORK/rootfs
STANDIN=$HERE/standin
# Extra arguments for the stand-in's provisioning (test-update.sh: the broker's port on
# the host, the update server).
SITE_INIT_ARGS=()
INSTALL_ARGS=()
# PyPI's lgpio for the stand-in's venv (Raspberry Pi OS bookworm ships python3-lgpio 0.2.2).
LGPIO_VERSION=0.2.2.0
# Extra packages the stand-in needs that the Pi image gets elsewhere (firmware, kernel
# are fetched separately): module tools for the initramfs, fsck for the boot partition.
STANDIN_PACKAGES="kmod dosfstools"
# Only what QEMU's virt machine needs to reach the root file system, plus overlayfs.
INITRAMFS_MODULES="virtio_pci virtio_blk virtio_net ext4 crc32c_generic overlay"

case $ARCH in
    arm64) QEMU=qemu-system-aarch64; CONSOLE=ttyAMA0
           QEMU_MACHINE=(-M virt -cpu cortex-a72) ;;
    # No AVX: Debian 12's QEMU 7.2 emulates AVX/AVX2 wrongly under TCG, and numpy's AVX
    # kernels (the code reader's float passes) segfault there, never on a real CPU
    # (reproduced with qemu-x86_64 -cpu max/Haswell; fine with these features off).
    amd64) QEMU=qemu-system-x86_64; CONSOLE=ttyS0
           # shellcheck disable=SC2054  # the commas belong to one -cpu argument
           QEMU_MACHINE=(-M q35 -cpu max,avx=off,avx2=off,avx512f=off,fma=off) ;;
    *) echo "CLINICAM_IMAGE_ARCH must be arm64 or amd64" >&2; exit 2 ;;
esac

T0=$(date +%s)
step() { printf '[test-image %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf 'test-image: %s\n' "$*" >&2; exit 1; }

preflight() {
    [ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot, mke2fs -d need it)"
    for tool in mmdebstrap "$QEMU" mke2fs mkfs.vfat dpkg-deb chroot timeout; do
        command -v "$tool" >/dev/null || die "$tool missing: apt-get install mmdebstrap qemu-user-static binfmt-support qemu-system-arm qemu-system-x86 e2fsprogs dosfstools"
    done
    if [ "$ARCH" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
        # Foreign-architecture chroot: qemu-user-static through binfmt_misc.
        [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
        [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 binfmt not registered (apt-get install qemu-user-static binfmt-support)"
    fi
}

station_built() { "$PY" -c 'import clinicam.firmware.station_cli' 2>/dev/null; }

build_wheelhouse() {
    step "wheelhouse: clinicam wheel + dependency wheels for $ARCH/cp311"
    rm -rf "$WORK/wheels"; mkdir -p "$WORK/wheels"
    "$PY" -m pip wheel -q --no-deps -w "$WORK/wheels" "$REPO" > "$WORK/pip-wheel.log" 2>&1 ||
        { cat "$WORK/pip-wheel.log"; die "building the clinicam wheel failed"; }
    local platform reqs
    platform=$([ "$ARCH" = arm64 ] && echo aarch64 || echo x86_64)
    # Requirements from the wheel's metadata; numpy and pillow come from Debian
    # (python3-numpy, python3-pil) through the venv's system site packages.
    reqs=$("$PY" - "$WORK"/wheels/clinicam-*.whl <<'PYEOF'
import sys, zipfile
from email.parser import Parser
with zipfile.ZipFile(sys.argv[1]) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    msg = Parser().parsestr(whl.read(meta).decode())
for req in msg.get_all("Requires-Dist") or []:
    if "extra ==" not in req and not req.lower().startswith(("numpy", "pillow")):
        print(req.split(";")[0].replace(" ", ""))
PYEOF
)
    # shellcheck disable=SC2086 # one requirement per word
    "$PY" -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
        --platform "manylinux_2_28_$platform" --platform "manylinux_2_17_$platform" \
        --platform "manylinux2014_$platform" --platform any \
        -d "$WORK/wheels" $reqs
    # The stand-in's GPIO library (a Pi has python3-lgpio): installed by install_standin_gpio.
    rm -rf "$WORK/lgpio"
    "$PY" -m pip download -q --only-binary=:all: --no-deps --python-version 3.11 --implementation cp \
        --platform "manylinux_2_34_$platform" --platform "manylinux_2_28_$platform" \
        -d "$WORK/lgpio" "lgpio==$LGPIO_VERSION"
}

host_mirror() {
    # The Debian mirror the host's apt already uses (deb822 or one-line format): no
    # other host is hard-coded. CLINICAM_DEBIAN_MIRROR overrides it.
    if [ -n "${CLINICAM_DEBIAN_MIRROR:-}" ]; then echo "$CLINICAM_DEBIAN_MIRROR"; return; fi
    { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } | awk '
        /^URIs:/ { uri = $2 } /^Suites:/ && uri && / bookworm( |$)/ { print uri; exit }
        /^deb / && $3 == "bookworm" { print $2; exit }'
}

base_tarball() {
    # The mmdebstrap result, cached by package list: the slow, network-bound part.
    local pkgs key
    pkgs=$(grep -hv '^#' "$HERE/packages/debian.txt" | xargs)" $STANDIN_PACKAGES"
    key=$(printf '%s %s %s' "$ARCH" "$SUITE" "$pkgs" | sha256sum | cut -c1-12)
    BASE=$WORK/base-$ARCH-$key.tar
    [ -f "$BASE" ] && { step "base root: cached $(basename "$BASE")"; return; }
    step "base root: mmdebstrap $SUITE $ARCH minbase (+ kernel package download)"
    rm -f "$WORK"/base-"$ARCH"-*.tar
    # The kernel .deb is only downloaded: installing it would rebuild a full initramfs
    # under emulation (~12 min, twice).
    local mirror
    mirror=$(host_mirror)
    [ -n "$mirror" ] || die "no Debian bookworm mirror in the host's apt sources; set CLINICAM_DEBIAN_MIRROR"
    mmdebstrap --arch="$ARCH" --variant=minbase --components=main --format=tar \
        --include="${pkgs// /,}" \
        --customize-hook="$STANDIN/fetch-kernel.sh" \
        "$SUITE" "$BASE.part" "$mirror" < /dev/null
    mv "$BASE.part" "$BASE"
}

with_chroot_mounts() {  # run a command while the rootfs has /proc and /dev
    mount -t proc proc "$ROOTFS/proc"
    mount --bind /dev "$ROOTFS/dev"
    local rc=0
    "$@" || rc=$?
    umount "$ROOTFS/dev" "$ROOTFS/proc"
    return $rc
}

customize_root() {
    step "customize.sh (the release image's hook)"
    rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"
    tar -C "$ROOTFS" -xf "$BASE"
    # The image's fallback list deliberately misses the broker (10.0.2.2): the address
    # recorded at provisioning must replace it (checked as station-ip-allow).
    # The stand-in's RAUC slot layout (a `make bundle` of this root says so in its
    # compatible); test-update.sh adds the development update keyring.
    CLINICAM_UPDATE_TARGET=${CLINICAM_UPDATE_TARGET:-standin} \
    CLINICAM_WHEELHOUSE=$WORK/wheels CLINICAM_IP_ALLOW=192.0.2.1 \
        with_chroot_mounts sh "$HERE/hooks/customize.sh" "$ROOTFS"
}

kernel_and_initramfs() {
    step "kernel: Debian's, unpacked; initramfs with MODULES=list"
    rm -rf "$WORK/kernel"
    cp "$(ls "$ROOTFS"/root/kernel/linux-image-*.deb)" "$WORK/kernel.deb"
    dpkg-deb -x "$WORK/kernel.deb" "$WORK/kernel"
    rm -rf "$ROOTFS/root/kernel"
    KVER=$(ls "$WORK/kernel/lib/modules")
    mkdir -p "$ROOTFS/lib/modules"
    # Drop module trees a virtual station never loads (keeps the image small).
    cp -a "$WORK/kernel/lib/modules/$KVER" "$ROOTFS/lib/modules/"
    for d in drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging \
             drivers/scsi drivers/iio sound net/bluetooth net/mac80211 net/wireless; do
        rm -rf "$ROOTFS/lib/modules/$KVER/kernel/$d"
    done
    chroot "$ROOTFS" depmod "$KVER"
    cp "$WORK/kernel/boot/config-$KVER" "$ROOTFS/boot/"
    printf 'MODULES=list\nCOMPRESS=gzip\n' > "$ROOTFS/etc/initramfs-tools/conf.d/clinicam-standin.conf"
    # shellcheck disable=SC2086 # one module per word
    printf '%s\n' $INITRAMFS_MODULES > "$ROOTFS/etc/initramfs-tools/modules"
    with_chroot_mounts chroot "$ROOTFS" mkinitramfs -o /boot/initrd.img-standin "$KVER"
    mv "$ROOTFS/boot/initrd.img-standin" "$WORK/initrd.img"
    cp "$WORK/kernel/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
    rm -f "$ROOTFS/boot/config-$KVER"
}

gpio_sim_module() {
    # Debian's kernels do not build gpio-sim (CONFIG_GPIO_SIM is not set: bookworm amd64
    # and arm64, bookworm-backports 6.12 alike), so the stand-in builds it out of tree
    # from Debian's source of the same kernel against its headers, with its one
    # dependency, kernel/irq/irq_sim.c (CONFIG_IRQ_SIM is off too), linked in. One change:
    # irq_sim calls generic_handle_irq_safe() instead of the unexported irq_to_desc().
    # The module is cached per kernel version. Native builds only (amd64 on amd64).
    GPIO_SIM=""
    if [ "$(dpkg --print-architecture)" != "$ARCH" ]; then
        step "PENDING: gpio-sim is built natively only ($ARCH on $(dpkg --print-architecture)): GPIO checks pending"
        return
    fi
    local ver src out=$WORK/gpio-sim/$KVER
    GPIO_SIM=$out/gpio-sim.ko
    [ -f "$GPIO_SIM" ] && { step "gpio-sim: cached module for $KVER"; install_gpio_sim; return; }
    step "gpio-sim: out-of-tree module for $KVER (Debian source and headers)"
    ver=$(dpkg-deb -f "$WORK"/kernel.deb Version)
    src=linux-source-${KVER%%.0-*}
    # The host's package lists may predate the stand-in's kernel: update once if needed.
    apt_host() { apt-get -o DPkg::Lock::Timeout=600 "$@" >/dev/null 2>&1; }
    apt_host install -y -q --no-install-recommends "linux-headers-$KVER" ||
        { apt_host update -q && apt_host install -y -q --no-install-recommends "linux-headers-$KVER"; } ||
        die "apt-get install linux-headers-$KVER failed"
    rm -rf "$out"; mkdir -p "$out/dl"
    (cd "$out/dl" && apt-get download -q "$src=$ver" >/dev/null 2>&1) || die "apt-get download $src=$ver failed"
    dpkg-deb --fsys-tarfile "$out"/dl/*.deb | tar -xO "./usr/src/$src.tar.xz" |
        tar -xJ -C "$out" "$src/drivers/gpio/gpio-sim.c" "$src/drivers/gpio/gpiolib.h" "$src/kernel/irq/irq_sim.c"
    mv "$out/$src/drivers/gpio/gpio-sim.c" "$out/gpio-sim-main.c"
    mv "$out/$src/drivers/gpio/gpiolib.h" "$out/$src/kernel/irq/irq_sim.c" "$out/"
    sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq_safe(irqnum);/' "$out/irq_sim.c"
    grep -q generic_handle_irq_safe "$out/irq_sim.c" || die "irq_sim.c changed upstream: adapt gpio_sim_module"
    printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' > "$out/Kbuild"
    rm -rf "$out/dl" "${out:?}/$src"
    make -s -C "/usr/src/linux-headers-$KVER" M="$out" modules > "$out/build.log" 2>&1 ||
        { cat "$out/build.log"; die "building gpio-sim failed"; }
    install_gpio_sim
}

install_gpio_sim() {
    install -D -m 0644 "$GPIO_SIM" "$ROOTFS/lib/modules/$KVER/updates/gpio-sim.ko"
    chroot "$ROOTFS" depmod "$KVER"
}

install_standin() {
    step "stand-in: boot check units, config, throwaway identity"
    install -m 0755 "$STANDIN/bootcheck.sh" "$STANDIN/probe-fs.sh" -D -t "$ROOTFS/usr/local/libexec/"
    mv "$ROOTFS/usr/local/libexec/probe-fs.sh" "$ROOTFS/usr/local/libexec/clinicam-probe-fs.sh"
    install -m 0644 "$STANDIN/clinicam-probe-net.py" "$ROOTFS/usr/local/libexec/"
    install -m 0644 "$STANDIN"/*.service "$ROOTFS/etc/systemd/system/"
    systemctl --root="$ROOTFS" enable bootcheck-report.service
    install_standin_gpio
    echo clinicam-standin > "$ROOTFS/etc/hostname"
    STATION_ARG=""
    if ! station_built; then
        STATION_ARG="clinicam.bootcheck.station=pending"
        systemctl --root="$ROOTFS" disable clinicam-station.service
        step "PENDING: 'clinicam station run' is not built yet: station unit disabled in the stand-in"
    fi
    make_persistent
}

install_standin_gpio() {
    # The station's pins on real (simulated-hardware) GPIO chips through lgpio, inside
    # the real unit: gpio-sim chips shaped like a Pi 5's, sys-mods' gpio udev rule, a
    # Pi 5 /proc/cpuinfo for gpiozero's board lookup, lgpio from PyPI in the venv.
    STATION_BACKEND=sim
    [ -n "$GPIO_SIM" ] || return 0
    install -m 0755 "$STANDIN/gpio-sim.sh" "$ROOTFS/usr/local/libexec/standin-gpio-sim.sh"
    install -m 0644 "$STANDIN/standin-gpio-sim.service" "$ROOTFS/etc/systemd/system/"
    install -m 0644 "$STANDIN/99-standin-gpio.rules" "$ROOTFS/etc/udev/rules.d/"
    install -D -m 0644 "$STANDIN/cpuinfo" "$ROOTFS/usr/local/share/clinicam-standin/cpuinfo"
    install -D -m 0644 "$STANDIN/station-standin.conf" \
        "$ROOTFS/etc/systemd/system/clinicam-station.service.d/90-standin.conf"
    systemctl --root="$ROOTFS" enable standin-gpio-sim.service
    in_root_venv_pip_lgpio
    STATION_BACKEND=pi
}

in_root_venv_pip_lgpio() {
    # python3-lgpio comes from Raspberry Pi OS on a Pi; the stand-in takes PyPI's wheel.
    cp "$WORK"/lgpio/lgpio-*.whl "$ROOTFS/tmp/"
    with_chroot_mounts chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/bin:/bin \
        /opt/clinicam/venv/bin/pip install -q --no-index --no-deps /tmp/"$(basename "$WORK"/lgpio/lgpio-*.whl)"
    rm -f "$ROOTFS"/tmp/lgpio-*.whl
}

make_persistent() {
    # A plain ext4 already provisioned, as on a station imaged before the partition
    # was encrypted: first boot must encrypt it and carry the identity across.
    local p=$WORK/persist gid
    rm -rf "$p" "$WORK/site"; mkdir -p "$p/etc"
    gid=$(awk -F: '$1 == "clinicam" {print $3}' "$ROOTFS/etc/group")
    if [ "$STATION_BACKEND" = pi ]; then
        cat > "$p/etc/station.toml" <<TOML
# CI stand-in: real GPIO (lgpio on gpio-sim chips), simulated camera (no camera in a VM).
[hardware]
backend = "pi"
camera = "sim"

# Under TCG emulation on a loaded host, gpiozero's callbacks can run seconds after the
# edges; its hold timer goes by the edge times, so a press heard late looks long.
[panel]
long_press_s = 10.0
TOML
    else
        cat > "$p/etc/station.toml" <<TOML
# CI stand-in: simulated camera and pins (no gpio-sim module for this architecture).
[hardware]
backend = "sim"
TOML
    fi
    if "$PY" -m clinicam.tools.cli provision --help >/dev/null 2>&1; then
        local c=("$PY" -m clinicam.tools.cli provision)
        "${c[@]}" site-init --site standin --broker-host 10.0.2.2 --relays 1 "${SITE_INIT_ARGS[@]}" "$WORK/site" >/dev/null
        "${c[@]}" device-key --device standin-01 "$p/etc/identity" >/dev/null
        "${c[@]}" sign --out "$WORK/site/standin-01.pem" "$WORK/site" "$p/etc/identity/device.csr" >/dev/null
        "${c[@]}" bundle --device standin-01 --out "$WORK/bundle" "$WORK/site" >/dev/null
        "${c[@]}" install --bundle "$WORK/bundle" --identity-dir "$p/etc/identity" "${INSTALL_ARGS[@]}" >/dev/null
    fi
    chown -R "0:$gid" "$p/etc"; chmod -R g-w,o-rwx "$p/etc"
    chmod 0750 "$p/etc" ; [ -d "$p/etc/identity" ] && chmod 0750 "$p/etc/identity"
    [ -f "$p/etc/identity/device.key" ] && chown "$STATION_UID" "$p/etc/identity/device.key"
    return 0
}

make_disks() {
    step "disks: ext4 images with mke2fs -d, an empty vfat boot partition"
    local mb
    mb=$(( $(du -sm "$ROOTFS" | cut -f1) * 13 / 10 + 200 ))
    rm -f "$WORK/root.img" "$WORK/persist.img" "$WORK/boot.img"
    mke2fs -q -t ext4 -L rootfs -d "$ROOTFS" "$WORK/root.img" "${mb}M"
    # 64 MiB as in the release layout: LUKS2 takes 16 MiB of it for its header.
    mke2fs -q -t ext4 -L clinicam -d "$WORK/persist" "$WORK/persist.img" 64M
    # The Pi's boot partition: here only the home of the partition key file.
    mkfs.vfat -C -n bootfs "$WORK/boot.img" 32768 >/dev/null
}

boot() {
    step "boot: $QEMU (TCG), timeout ${TIMEOUT}s"
    local cmdline
    cmdline="console=$CONSOLE root=LABEL=rootfs ro rootwait panic=-1 net.ifnames=0 $(cat "$ROOTFS/usr/share/clinicam/kernel-cmdline") $STATION_ARG"
    [ -n "$GPIO_SIM" ] || cmdline="$cmdline clinicam.bootcheck.gpio=pending"
    rm -f "$WORK/console.log"
    timeout --foreground "$TIMEOUT" "$QEMU" "${QEMU_MACHINE[@]}" -accel tcg -smp 2 -m 1536 \
        -display none -monitor none -no-reboot -serial "file:$WORK/console.log" \
        -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" -append "$cmdline" \
        -drive if=none,id=root,format=raw,file="$WORK/root.img" -device virtio-blk-pci,drive=root \
        -drive if=none,id=persist,format=raw,file="$WORK/persist.img" -device virtio-blk-pci,drive=persist \
        -drive if=none,id=boot,format=raw,file="$WORK/boot.img" -device virtio-blk-pci,drive=boot \
        -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
        -device virtio-rng-pci \
        || step "qemu exited with status $? (124: timeout)"
}

judge() {
    step "serial console ($WORK/console.log):"
    local args=("$WORK/console.log")
    [ -n "$STATION_ARG" ] && args+=(--station-pending)
    [ -n "$GPIO_SIM" ] || args+=(--gpio-pending)
    local rc=0
    python3 "$STANDIN/parse_console.py" "${args[@]}" || rc=$?
    step "boot test finished in $(( $(date +%s) - T0 ))s ($ARCH), result $([ $rc = 0 ] && echo PASS || echo FAIL)"
    [ -n "$STATION_ARG" ] && step "NOTE: station READY and stop checks are PENDING (daemon not built), not passed"
    return $rc
}

main() {
    mkdir -p "$WORK"
    preflight
    build_wheelhouse
    base_tarball
    customize_root
    kernel_and_initramfs
    gpio_sim_module
    install_standin
    make_disks
    boot
    judge
}

# test-update.sh sources this file for its build steps; run directly, it is the boot test.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main; fi
