#!/usr/bin/env bash
# Set up everything `make test`, `make demo` and `make bench` need, on a fresh Debian 12
# or Raspberry Pi OS machine, and nothing twice: missing apt packages (as root; otherwise
# the exact apt-get line is printed), then .venv with the package and its dev extra.
# A second run with nothing changed installs nothing.
#
# Usage: scripts/bootstrap.sh [apt-group …]   groups: base (default), image
set -euo pipefail
cd "$(dirname "$0")/.."

# base: the real broker and its clients, libzbar for pyzbar, strace for the no-disk-write
# tests, openssl for the TLS 1.1 control client, the PACS and the DICOM validator for the
# relay sinks, shellcheck, nftables and systemd-analyze for the appliance checks, poppler
# to rasterise the card sheet, cryptsetup, e2fsprogs and dosfstools for the encrypted
# persistent partition (real LUKS2 headers on image files, a foreign vfat signature), git
# for the repository checks, rauc and squashfs-tools for the update bundle checks and make
# bundle, mtools for the Pi bundle's boot.vfat (bundle.sh, its check), curl for the
# update fetch check, Prometheus and promtool for the relay's metrics
# and the example alert rules, mmdebstrap for the relay package's install test (a clean
# Debian 12 root). Every program a test starts must come from here:
# tests/unit/test_base_packages.py checks it (its TOOL_PACKAGES table maps each program
# to its package). image: the QEMU boot tests of the appliance (make test-image, make
# test-update); make and xz-utils build the stand-in's gpio-sim module (test-image.sh
# also installs linux-headers-<the stand-in kernel>, whose name follows Debian's kernel
# ABI); fdisk and mtools: the A/B disk and its emulated boot firmware.
declare -A PKG_GROUPS=(
  [base]="mosquitto mosquitto-clients libzbar0 strace openssl python3-venv orthanc orthanc-dicomweb dicom3tools shellcheck nftables systemd poppler-utils cryptsetup-bin e2fsprogs dosfstools git rauc squashfs-tools mtools curl prometheus mmdebstrap"
  [image]="mmdebstrap qemu-system-arm qemu-system-x86 qemu-user-static binfmt-support e2fsprogs dosfstools cpio zstd make xz-utils fdisk mtools"
)

want=()
for group in "${@:-base}"; do
  # shellcheck disable=SC2206
  want+=(${PKG_GROUPS[$group]:?unknown package group $group})
done

missing=()
for pkg in "${want[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "bootstrap: missing packages; run as root:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
stamp=".venv/.clinicam-installed"
want_stamp=$(sha256sum < pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]]; then
  echo "bootstrap: installing clinicam and its dev tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want_stamp" > "$stamp"
fi

# The picamera2 fixture (tests/picamera2_sim): the version Raspberry Pi OS bookworm ships,
# without its dependencies (python-prctl, av, OpenEXR... need a Pi or a compiler and are
# never used by the station); the ones its capture path imports are in the dev extra.
PICAMERA2=$(sed -n 's/^PICAMERA2_VERSION = "\(.*\)"/picamera2==\1/p' tests/picamera2_sim/__init__.py)
if [[ "$(.venv/bin/python -m pip show picamera2 2>/dev/null | sed -n 's/^Version: /picamera2==/p')" != "$PICAMERA2" ]]; then
  echo "bootstrap: installing $PICAMERA2 (no dependencies) for the camera fixture"
  .venv/bin/python -m pip install -q --no-deps "$PICAMERA2"
fi

# The FHIR R4 test server lives in its own venv: its dependencies are not ours.
FHIR_SERVER="sekmet-fhir==0.1.1"
if [[ " $* " == *" base "* || $# -eq 0 ]] && [[ "$(cat .venv-fhir/.installed 2>/dev/null)" != "$FHIR_SERVER" ]]; then
  echo "bootstrap: installing the FHIR test server ($FHIR_SERVER) into .venv-fhir"
  "$PYTHON" -m venv .venv-fhir
  .venv-fhir/bin/python -m pip install -q "$FHIR_SERVER"
  echo "$FHIR_SERVER" > .venv-fhir/.installed
fi
