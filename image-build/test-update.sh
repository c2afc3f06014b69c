#!/bin/bash
# test-update.sh -- the update boot test (make test-update): A/B slots, signed RAUC
# bundles, refusals and automatic rollback on the CI stand-in, under QEMU (TCG).
#
# Builds the stand-in as test-image.sh does (its functions, its cached base root), with
# the stand-in slot layout (CLINICAM_UPDATE_TARGET=standin) and a development update
# keyring; then one GPT disk like the Pi's card (p1 bootfs with autoboot.txt, p2
# rootfs-a, p3 rootfs-b, p4 clinicam). On the host, as on a site: Mosquitto with the
# site's generated mTLS config and ACL, and the update server (standin/update-server.py:
# HTTPS, site CA pinned, client certificate required, Range), each on a free port that
# the guest reaches at 10.0.2.2 (QEMU user networking); the stand-in is provisioned with
# that broker port and "install --update-server https://10.0.2.2:PORT". A second update
# server on another port is the firewall's control. The guest pulls every bundle with
# update-fetch (the first transfer of the good one is cut half way: it resumes), and
# boots until the story ends (standin/updatecheck.sh):
#   boot 1  slot A 1.0.0: the firewall lets root reach the recorded update server and
#           no other port; bad signature, unsigned, other compatible, downgrade refused,
#           station untouched; fetch and install 2.0.0, reboot "0 tryboot"
#   boot 2  slot B 2.0.0 (trial): update-confirm marks it good once the station is
#           READY and connected to the broker; fetch and install 3.0.0, whose station
#           cannot start
#   boot 3  slot A 3.0.0 (trial): crash loop, update-confirm marks it bad, reboots
#   boot 4  slot B 2.0.0 (committed): the failed update reported; identity intact
# Between boots this script is the Pi's boot firmware: it reads autoboot.txt on p1 and
# honours the one-shot tryboot flag (firmware_select below).
#
# Needs root and, besides test-image.sh's tools: rauc squashfs-tools fdisk mtools
# mosquitto openssl.
# Environment: as test-image.sh (amd64 only); CLINICAM_UPDATE_WORK build directory.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test-image.sh source-path=SCRIPTDIR
. "$HERE/test-image.sh"
[ "$ARCH" = amd64 ] || die "test-update.sh boots the amd64 stand-in only"
SHARED_WORK=$WORK
WORK=${CLINICAM_UPDATE_WORK:-$HERE/work/$ARCH-update}
ROOTFS=$WORK/rootfs
KEYS=$WORK/update-keys
MAX_BOOTS=5
export CLINICAM_UPDATE_TARGET=standin CLINICAM_UPDATE_KEYRING=$KEYS/ca.pem CLINICAM_IMAGE_VERSION=1.0.0
export MTOOLS_SKIP_CHECK=1

update_preflight() {
    for tool in rauc mksquashfs sfdisk mcopy mtype mdel mosquitto openssl; do
        command -v "$tool" >/dev/null || die "$tool missing: apt-get install rauc squashfs-tools fdisk mtools mosquitto openssl"
    done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

choose_ports() {
    # Free host ports, known before provisioning: the stand-in's identity names them.
    BROKER_PORT=$(free_port) UPDATE_PORT=$(free_port) OTHER_PORT=$(free_port)
    UPDATE_URL=https://10.0.2.2:$UPDATE_PORT
    SITE_INIT_ARGS=(--broker-port "$BROKER_PORT")
    INSTALL_ARGS=(--update-server "$UPDATE_URL")
}

SERVICE_PIDS=()
stop_services() {
    local pid
    for pid in "${SERVICE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "${BROKER_DIR:-}" ] && rm -rf "$BROKER_DIR"
    return 0
}

start_services() {
    step "host: Mosquitto (site mTLS config, ACL) on :$BROKER_PORT, update server on :$UPDATE_PORT (control :$OTHER_PORT)"
    local site=$WORK/site srv=$WORK/update-server port
    # The broker as the site runs it: site-init's mosquitto.conf, its files beside it,
    # listening on loopback only (the guest's 10.0.2.2).
    BROKER_DIR=$(mktemp -d /tmp/clinicam-update-broker.XXXXXX)
    chmod 0755 "$BROKER_DIR"
    cp "$site"/broker/* "$BROKER_DIR/"
    sed -i -e "s|/etc/mosquitto/clinicam|$BROKER_DIR|" -e "s|^listener $BROKER_PORT\$|listener $BROKER_PORT 127.0.0.1|" \
        "$BROKER_DIR/mosquitto.conf"
    chmod 0644 "$BROKER_DIR"/*
    if id mosquitto >/dev/null 2>&1; then chown mosquitto "$BROKER_DIR/broker.key"; chmod 0600 "$BROKER_DIR/broker.key"; fi
    mosquitto -c "$BROKER_DIR/mosquitto.conf" > "$WORK/mosquitto.log" 2>&1 &
    SERVICE_PIDS+=($!)
    # The update server's certificate from the site CA, for the address the guest uses.
    rm -rf "$srv"; mkdir -p "$srv"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=update-server \
        -keyout "$srv/server.key" -out "$srv/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:10.0.2.2\nextendedKeyUsage=serverAuth\n' > "$srv/server.ext"
    openssl x509 -req -in "$srv/server.csr" -CA "$site/ca.pem" -CAkey "$site/ca/ca.key" -CAcreateserial \
        -CAserial "$srv/ca.srl" -days 2 -extfile "$srv/server.ext" -out "$srv/server.pem" 2>/dev/null
    (cd "$WORK/updates" && sha256sum -- *.raucb > SHA256SUMS)
    rm -f "$WORK/update-requests.jsonl"
    local cut
    for port in "$UPDATE_PORT" "$OTHER_PORT"; do
        # The recorded server drops the good bundle's first transfer half way (Wi-Fi).
        cut=(); [ "$port" = "$UPDATE_PORT" ] && cut=(--cut-first good.raucb)
        python3 "$STANDIN/update-server.py" --dir "$WORK/updates" --cert "$srv/server.pem" --key "$srv/server.key" \
            --ca "$site/ca.pem" --port "$port" --port-file "$srv/port-$port" --log "$WORK/update-requests.jsonl" \
            "${cut[@]}" 2>> "$WORK/update-server.log" &
        SERVICE_PIDS+=($!)
    done
    local i=0
    until [ -f "$srv/port-$UPDATE_PORT" ] && [ -f "$srv/port-$OTHER_PORT" ] &&
          grep -q "Opening ipv4 listen socket on port $BROKER_PORT" "$WORK/mosquitto.log"; do
        i=$((i + 1)); [ $i -lt 100 ] || { cat "$WORK/mosquitto.log" "$WORK/update-server.log" >&2; die "host services did not start"; }
        sleep 0.1
    done
}

update_standin() {
    step "update stand-in: updatecheck instead of bootcheck, TCG-sized confirm deadline"
    systemctl --root="$ROOTFS" disable bootcheck-report.service
    install -m 0755 "$STANDIN/updatecheck.sh" "$ROOTFS/usr/local/libexec/"
    install -m 0644 "$STANDIN/updatecheck-report.service" "$ROOTFS/etc/systemd/system/"
    systemctl --root="$ROOTFS" enable updatecheck-report.service
    # Python under TCG starts in minutes, not seconds: a longer bound than the Pi's 300 s.
    printf 'DEADLINE_S=600\nSETTLE_S=20\n' > "$ROOTFS/usr/share/clinicam/update.conf"
}

bundle() {  # bundle OUT [bundle.sh args]: signed with the development update key
    local out=$1; shift
    CLINICAM_UPDATE_CERT=$KEYS/signing.pem CLINICAM_UPDATE_KEY=$KEYS/signing.key \
        CLINICAM_UPDATE_KEYRING=$KEYS/ca.pem sh "$HERE/bundle.sh" --out "$WORK/updates/$out" "$@"
}

make_images_and_bundles() {
    step "images: slot A (1.0.0), bundles good (2.0.0), broken (3.0.0), refusals"
    local v=$ROOTFS/usr/share/clinicam/image-version broken
    broken=$ROOTFS/usr/lib/systemd/system/clinicam-station.service.d/99-broken.conf
    rm -rf "$WORK/updates" "$WORK/root-a.img"; mkdir -p "$WORK/updates"
    ROOT_MB=$(( $(du -sm "$ROOTFS" | cut -f1) * 13 / 10 + 200 ))
    echo 1.0.0 > "$v"
    mke2fs -q -t ext4 -L rootfs -d "$ROOTFS" "$WORK/root-a.img" "${ROOT_MB}M"
    echo 2.0.0 > "$v"
    bundle good.raucb --rootfs "$ROOTFS" --size "$ROOT_MB"
    # A station that cannot start: the update the trial boot must roll back.
    echo 3.0.0 > "$v"
    printf '[Service]\nExecStart=\nExecStart=/bin/false\n' > "$broken"
    bundle broken.raucb --rootfs "$ROOTFS" --size "$ROOT_MB"
    rm -f "$broken"; echo 1.0.0 > "$v"
    # Refusals are decided before a byte is written: a small image is enough.
    local small=$WORK/small
    rm -rf "$small"; mkdir -p "$small/content"; head -c 262144 /dev/urandom > "$small/content/noise"
    mke2fs -q -t ext4 -L rootfs -d "$small/content" "$small/rootfs.ext4" 8M
    local compat=clinicam-station-standin-amd64
    bundle downgrade.raucb --image "$small/rootfs.ext4" --version 0.9.0 --compatible $compat
    bundle other.raucb --image "$small/rootfs.ext4" --version 9.0.0 --compatible clinicam-station-other
    CLINICAM_UPDATE_CERT=$KEYS/rogue.pem CLINICAM_UPDATE_KEY=$KEYS/rogue.key \
        CLINICAM_UPDATE_KEYRING=$KEYS/rogue-ca.pem sh "$HERE/bundle.sh" --out "$WORK/updates/rogue.raucb" \
        --image "$small/rootfs.ext4" --version 9.0.0 --compatible $compat
    # Unsigned: a bundle's squashfs with a manifest and no signature after it.
    printf '[update]\ncompatible=%s\nversion=9.0.0\n[image.rootfs]\nfilename=rootfs.ext4\n' $compat > "$small/manifest.raucm"
    mkdir -p "$small/unsigned"; cp "$small/manifest.raucm" "$small/rootfs.ext4" "$small/unsigned/"
    mksquashfs "$small/unsigned" "$WORK/updates/unsigned.raucb" -quiet -noappend -all-root >/dev/null
    rm -rf "$small"
    ls -l "$WORK/updates"
}

part_offset() {  # part_offset N: byte offset of partition N of the disk image
    sfdisk --json "$WORK/disk.img" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$1 - 1]['start'] * 512)"
}

make_ab_disk() {
    step "disk: GPT bootfs / rootfs-a / rootfs-b / clinicam, autoboot.txt committed to A"
    local boot=$WORK/boot.img slot_mb=$((ROOT_MB + 16))
    rm -f "$boot" "$WORK/disk.img" "$WORK/persist.img"
    mkfs.vfat -C -n bootfs "$boot" 32768 >/dev/null
    printf '[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n' > "$WORK/autoboot.txt"
    mcopy -i "$boot" "$WORK/autoboot.txt" ::autoboot.txt
    mke2fs -q -t ext4 -L clinicam -d "$WORK/persist" "$WORK/persist.img" 64M
    truncate -s $(( 1 + 32 + 2 * slot_mb + 64 + 1 ))M "$WORK/disk.img"
    sfdisk -q "$WORK/disk.img" <<SFDISK
label: gpt
size=32MiB, name=bootfs, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
size=${slot_mb}MiB, name=rootfs-a, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
size=${slot_mb}MiB, name=rootfs-b, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
size=64MiB, name=clinicam, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
SFDISK
    local n img
    for n in 1 2 4; do
        case $n in 1) img=$boot ;; 2) img=$WORK/root-a.img ;; 4) img=$WORK/persist.img ;; esac
        dd if="$img" of="$WORK/disk.img" bs=1M seek="$(( $(part_offset $n) / 1048576 ))" conv=notrunc,sparse status=none
    done
    BOOT_OFFSET=$(part_offset 1)
    rm -f "$boot" "$WORK/root-a.img" "$WORK/persist.img" "$WORK/updates.img"
}

firmware_select() {
    # The Pi's firmware, emulated: autoboot.txt's [all] boot_partition, or [tryboot]'s
    # once when the one-shot flag is armed (the Pi: "reboot 0 tryboot"; here the file
    # tryboot.flag, consumed now, before the kernel runs).
    local fat="$WORK/disk.img@@$BOOT_OFFSET" section=all
    if mdir -b -i "$fat" ::tryboot.flag >/dev/null 2>&1; then
        section=tryboot
        mdel -i "$fat" ::tryboot.flag
    fi
    BOOT_PART=$(mtype -i "$fat" ::autoboot.txt | tr -d '\r' | awk -F= -v s="[$section]" '
        /^\[/ {in_s = ($0 == s); next} in_s && $1 == "boot_partition" {print $2}')
    case $BOOT_PART in 2) BOOT_SLOT=A ;; 3) BOOT_SLOT=B ;; *) die "autoboot.txt: boot_partition '$BOOT_PART'" ;; esac
    BOOT_MODE=$section
}

boot_ab() {  # boot_ab N
    local cmdline t0
    t0=$(date +%s)
    firmware_select
    step "boot $1: firmware picks partition $BOOT_PART (slot $BOOT_SLOT, $BOOT_MODE)"
    cmdline="console=$CONSOLE root=/dev/vda$BOOT_PART rauc.slot=$BOOT_SLOT ro rootwait panic=-1 net.ifnames=0 $(cat "$ROOTFS/usr/share/clinicam/kernel-cmdline") clinicam.updatecheck.other=$OTHER_PORT"
    timeout --foreground "$TIMEOUT" "$QEMU" "${QEMU_MACHINE[@]}" -accel tcg -smp 2 -m 1536 \
        -display none -monitor none -no-reboot -serial "file:$WORK/console-$1.log" \
        -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" -append "$cmdline" \
        -drive if=none,id=disk,format=raw,file="$WORK/disk.img" -device virtio-blk-pci,drive=disk \
        -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
        -device virtio-rng-pci \
        || step "qemu exited with status $? (124: timeout)"
    cat "$WORK/console-$1.log" >> "$WORK/console.log"
    grep -a 'BOOTCHECK' "$WORK/console-$1.log" | sed 's/^/    /' || true
    BOOT_TIMES+=("boot $1 (slot $BOOT_SLOT, $BOOT_MODE): $(( $(date +%s) - t0 ))s")
}
BOOT_TIMES=()

update_main() {
    mkdir -p "$WORK" "$SHARED_WORK"
    preflight
    update_preflight
    build_wheelhouse
    WORK=$SHARED_WORK base_tarball
    sh "$HERE/update/dev-keys.sh" "$KEYS"
    customize_root
    kernel_and_initramfs
    # The simulated pins (make test-image checks real GPIO on gpio-sim): an update
    # neither touches nor needs them, and the module build is not this test's time.
    GPIO_SIM=""
    choose_ports
    install_standin
    update_standin
    make_images_and_bundles
    make_ab_disk
    trap stop_services EXIT
    start_services
    rm -f "$WORK"/console*.log
    local n=1
    while [ $n -le $MAX_BOOTS ]; do
        boot_ab $n
        grep -aq 'BOOTCHECK update-end' "$WORK/console-$n.log" && break
        grep -aq 'BOOTCHECK update-state FAIL' "$WORK/console-$n.log" && break
        n=$((n + 1))
    done
    step "serial consoles ($WORK/console-*.log):"
    printf '    %s\n' "${BOOT_TIMES[@]}"
    step "update server requests ($WORK/update-requests.jsonl):"
    sed 's/^/    /' "$WORK/update-requests.jsonl" || true
    local rc=0
    (cd "$STANDIN" && python3 parse_update_console.py "$WORK/console.log") || rc=$?
    step "update boot test finished in $(( $(date +%s) - T0 ))s after $n boots, result $([ $rc = 0 ] && echo PASS || echo FAIL)"
    return $rc
}

update_main
