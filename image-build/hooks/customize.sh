#!/bin/sh
# customize.sh ROOTFS -- turn a Debian / Raspberry Pi OS root file system into the
# clinicam appliance. Runs on the build host as root, outside the target (systemctl
# --root, systemd-sysusers --root) except for the venv, which runs in a chroot.
# The same script is the rpi-image-gen layer's customize hook (release image) and the
# CI stand-in's (test-image.sh): one recipe, two builders.
#
# Environment:
#   CLINICAM_WHEELHOUSE  directory with the clinicam wheel and every dependency wheel
#                        for the target (installed with pip --no-index). Required.
#   CLINICAM_IP_ALLOW    addresses/prefixes the station may reach besides localhost
#                        (the broker); DNS goes through systemd-resolved on localhost.
#                        Default: the private ranges (narrow it for a site image).
#   CLINICAM_HID_SCANNER 1 to allow the USB HID scanner's input devices. Default 0.
#   CLINICAM_SRC         the clinicam source tree. Default: two levels above this script.
#   CLINICAM_UPDATE_KEYRING  the vendor's update CA certificate (PEM), installed as
#                        /etc/rauc/keyring.pem: only bundles it signed install. Unset:
#                        no keyring, the image refuses every update (said loudly).
#   CLINICAM_UPDATE_TARGET   pi4 (default) or standin: which RAUC slot layout.
#   CLINICAM_IMAGE_VERSION   the image's version (bundle version, no downgrade below
#                        it). Default: the installed clinicam package's version.
set -eu

ROOTFS=${1:?usage: customize.sh ROOTFS}
ROOTFS=$(cd "$ROOTFS" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${CLINICAM_SRC:-$(cd "$HERE/../.." && pwd)}
WHEELHOUSE=${CLINICAM_WHEELHOUSE:?set CLINICAM_WHEELHOUSE to a directory of wheels}
IP_ALLOW=${CLINICAM_IP_ALLOW:-10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7}
HID_SCANNER=${CLINICAM_HID_SCANNER:-0}
STATION_UID=975
UNITDIR=$ROOTFS/usr/lib/systemd/system
# Kernel command line additions: zero freed pages (init_on_free), zero new pages
# (init_on_alloc), read-only root under a tmpfs overlay that keeps other mounts real.
CMDLINE_ADD="init_on_free=1 init_on_alloc=1 overlayroot=tmpfs:recurse=0"

say() { printf 'customize: %s\n' "$*"; }
# A clean environment in the target: no PIP_* or locale settings of the build host.
in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 "$@"; }
# ${Status} is dpkg-query's format field, not a shell variable.
# shellcheck disable=SC2016
installed() { in_root dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

install_overlay() {
    say "overlay"
    cp -a "$HERE/../overlay/." "$ROOTFS/"
    chmod 0755 "$ROOTFS/etc/nftables.conf"
}

install_units() {
    say "units and users"
    mkdir -p "$UNITDIR/clinicam-.service.d" "$UNITDIR/clinicam-station.service.d"
    install -m 0644 "$SRC/systemd/clinicam-station.service" "$SRC/systemd/persist-clinicam.service" "$UNITDIR/"
    install -m 0644 "$SRC/systemd/clinicam-.service.d/10-sandbox.conf" "$UNITDIR/clinicam-.service.d/"
    install -D -m 0644 "$SRC/systemd/clinicam.sysusers.conf" "$ROOTFS/usr/lib/sysusers.d/clinicam.conf"
    printf '# Written by customize.sh: the peers the station may reach.\n[Service]\nIPAddressAllow=%s\n' \
        "$IP_ALLOW" > "$UNITDIR/clinicam-station.service.d/50-network.conf"
    if [ "$HID_SCANNER" = 1 ]; then
        install -m 0644 "$SRC/systemd/optional/20-hid-scanner.conf" "$UNITDIR/clinicam-station.service.d/"
    fi
    systemd-sysusers --root="$ROOTFS"
    uid=$(grep '^clinicam:' "$ROOTFS/etc/passwd" | cut -d: -f3)
    # The firewall matches the station by this number: a different one is a build error.
    [ "$uid" = "$STATION_UID" ] || { say "clinicam got UID $uid, not $STATION_UID"; exit 1; }
}

install_persistent_layout() {
    # persist-clinicam.service encrypts the partition on first boot and unlocks it
    # after; its key file (boards without an OTP key) goes on the boot partition.
    say "persistent partition mount point"
    mkdir -p "$ROOTFS/var/lib/clinicam" "$ROOTFS/boot/firmware"
    rm -rf "$ROOTFS/etc/clinicam"
    ln -s /var/lib/clinicam/etc "$ROOTFS/etc/clinicam"
}

install_venv() {
    say "venv (system site packages) and wheel"
    rm -rf "$ROOTFS/tmp/clinicam-wheels"
    mkdir -p "$ROOTFS/tmp"
    cp -a "$WHEELHOUSE" "$ROOTFS/tmp/clinicam-wheels"
    in_root python3 -m venv --system-site-packages /opt/clinicam/venv
    # apt's simplejpeg (picamera2) breaks with numpy 2: pin numpy to the system's.
    : > "$ROOTFS/tmp/clinicam-wheels/constraints.txt"
    if installed python3-numpy; then
        v=$(in_root python3 -c 'import numpy; print(numpy.__version__)')
        printf 'numpy==%s\n' "$v" > "$ROOTFS/tmp/clinicam-wheels/constraints.txt"
    fi
    in_root /opt/clinicam/venv/bin/pip install --no-index --no-cache-dir \
        --find-links /tmp/clinicam-wheels -c /tmp/clinicam-wheels/constraints.txt clinicam
    rm -rf "$ROOTFS/tmp/clinicam-wheels"
}

enable_and_mask() {
    say "enable, disable, mask"
    systemctl --root="$ROOTFS" enable clinicam-station.service nftables.service \
        systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
    # No remote login, no Bluetooth, no swap of any kind, no unattended apt (the root
    # is read-only: updates are whole images).
    # No login prompt on a console: a USB HID scanner types into the active VT.
    systemctl --root="$ROOTFS" mask ssh.service ssh.socket bluetooth.service \
        hciuart.service dphys-swapfile.service swap.target \
        getty@.service autovt@.service serial-getty@.service console-getty.service \
        apt-daily.timer apt-daily-upgrade.timer
}

purge_swap_and_keys() {
    say "purge swap, drop host keys"
    for pkg in dphys-swapfile rpi-swap zram-tools systemd-zram-generator; do
        if installed "$pkg"; then in_root apt-get purge -y "$pkg"; fi
    done
    # No shared SSH host keys in an image (SSH is off anyway).
    rm -f "$ROOTFS"/etc/ssh/ssh_host_*_key "$ROOTFS"/etc/ssh/ssh_host_*_key.pub
    rm -f "$ROOTFS/boot/firmware/ssh" "$ROOTFS/boot/firmware/ssh.txt"
}

# --- A/B updates (RAUC): image-build/README.md, "Updates" ---------------------------
install_update() {
    target=${CLINICAM_UPDATE_TARGET:-pi4}
    say "A/B updates: RAUC, $target slot layout"
    up=$HERE/../update
    [ -f "$up/system-$target.conf" ] || { say "CLINICAM_UPDATE_TARGET=$target: no $up/system-$target.conf"; exit 1; }
    install -D -m 0644 "$up/system-$target.conf" "$ROOTFS/etc/rauc/system.conf"
    install -D -m 0755 -t "$ROOTFS/usr/lib/clinicam" "$up/rauc-tryboot" "$up/rauc-pre-install" "$up/rauc-post-install" \
        "$up/update-install" "$up/update-confirm" "$up/update-fetch" "$up/update-request"
    install -D -m 0644 "$up/update.conf" "$ROOTFS/usr/share/clinicam/update.conf"
    install -m 0644 "$SRC/systemd/update-confirm.service" "$SRC/systemd/update-request.path" \
        "$SRC/systemd/update-request.service" "$UNITDIR/"
    install -D -m 0644 "$SRC/systemd/rauc.service.d/10-clinicam.conf" "$UNITDIR/rauc.service.d/10-clinicam.conf"
    systemctl --root="$ROOTFS" enable update-confirm.service update-request.path
    if [ -n "${CLINICAM_UPDATE_KEYRING:-}" ]; then
        install -m 0644 "$CLINICAM_UPDATE_KEYRING" "$ROOTFS/etc/rauc/keyring.pem"
    else
        say "WARNING: no CLINICAM_UPDATE_KEYRING: this image will refuse every update bundle"
        rm -f "$ROOTFS/etc/rauc/keyring.pem"
    fi
    version=${CLINICAM_IMAGE_VERSION:-}
    if [ -z "$version" ] && [ -x "$ROOTFS/opt/clinicam/venv/bin/python" ]; then
        version=$(in_root /opt/clinicam/venv/bin/python -c 'import importlib.metadata as m; print(m.version("clinicam"))' 2>/dev/null || true)
    fi
    mkdir -p "$ROOTFS/usr/share/clinicam"
    printf '%s\n' "${version:-0}" > "$ROOTFS/usr/share/clinicam/image-version"
}

kernel_cmdline() {
    say "kernel command line: $CMDLINE_ADD"
    mkdir -p "$ROOTFS/usr/share/clinicam"
    printf '%s\n' "$CMDLINE_ADD" > "$ROOTFS/usr/share/clinicam/kernel-cmdline"
    cmdline=$ROOTFS/boot/firmware/cmdline.txt
    if [ -f "$cmdline" ] && ! grep -q 'init_on_free=1' "$cmdline"; then
        # cmdline.txt must stay a single line.
        line=$(head -n 1 "$cmdline")
        printf '%s %s\n' "$line" "$CMDLINE_ADD" > "$cmdline"
    fi
    config=$ROOTFS/boot/firmware/config.txt
    if [ -f "$config" ] && ! grep -q '^# clinicam$' "$config"; then
        printf '\n# clinicam\ndtoverlay=disable-bt\ndtparam=watchdog=on\n' >> "$config"
    fi
}

install_overlay
install_units
install_persistent_layout
install_venv
enable_and_mask
purge_swap_and_keys
install_update
kernel_cmdline
say "done"
