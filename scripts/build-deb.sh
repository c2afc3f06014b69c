#!/usr/bin/env bash
# `make deb`: the relay host's Debian package, build/deb/clinicam-relay_<version>_<arch>.deb.
#
# Debian's own tools, no dh-virtualenv: a virtual environment under /opt/clinicam/venv
# built with the host's python3.11 (Debian 12's), holding clinicam and only what the
# relay imports (cryptography, paho-mqtt, prometheus-client, pydicom, pynetdicom: no
# numpy, zbar or camera stack), pinned to the versions the tests ran with; then
# dpkg-deb. The package carries the systemd unit, the service user (sysusers.d, or
# adduser without systemd) and /etc/clinicam/relay.toml as a conffile. No logrotate
# policy: the relay rotates its audit log itself ([audit] in relay.toml), and the
# maintainer scripts remove the policy older packages shipped. Build on the
# architecture you deploy (the wheels are binary): amd64 here, arm64 on a Pi.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's interpreter, which the venv links to and the package depends on (never a
# pyenv or /usr/local one: the venv would point at a path the relay host lacks)
PY=/usr/bin/python3.11
[ -x "$PY" ] || { echo "build-deb: $PY missing: apt-get install python3.11 python3-venv" >&2; exit 1; }
VERSION=$($PY -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
ARCH=$(dpkg --print-architecture)
NAME=clinicam-relay_${VERSION}_${ARCH}
OUT=build/deb
STAGE=$OUT/$NAME
VENV=/opt/clinicam/venv
RELAY_DEPS="cryptography paho-mqtt prometheus-client pydicom pynetdicom"

rm -rf "$STAGE" "$OUT/$NAME.deb"
mkdir -p "$STAGE/DEBIAN"

# 1. the venv, built in the staging tree, then moved in place by fixing its paths
$PY -m venv "$STAGE$VENV"
pip=("$STAGE$VENV/bin/python" -m pip --disable-pip-version-check -q)
constraints=$OUT/constraints.txt
if [ -x .venv/bin/python ]; then .venv/bin/python -m pip freeze --exclude-editable > "$constraints"; else : > "$constraints"; fi
"${pip[@]}" install --no-compile --no-deps .
# clinicam's own requirements are the station's (camera, codes): the relay takes only its
# own, so pip's note that the station's are missing is expected and filtered
# shellcheck disable=SC2086
"${pip[@]}" install --no-compile -c "$constraints" $RELAY_DEPS 2>&1 \
    | { grep -v -e '^clinicam .* requires ' -e "dependency resolver does not currently" || true; } >&2
"${pip[@]}" uninstall -y pip setuptools >/dev/null 2>&1 || true
rm -f "$STAGE$VENV"/bin/pip* "$STAGE$VENV"/bin/activate.csh "$STAGE$VENV"/bin/activate.fish "$STAGE$VENV"/bin/Activate.ps1
find "$STAGE$VENV" -name __pycache__ -prune -exec rm -rf {} +
grep -rlI --null "$PWD/$STAGE" "$STAGE$VENV" | xargs -0r sed -i "s|$PWD/$STAGE||g"
if grep -rqI "$PWD/$STAGE" "$STAGE$VENV"; then echo "build-deb: staging path left in the venv" >&2; exit 1; fi

# 2. what the system sees
install -D -m 0644 systemd/clinicam-relay.service "$STAGE/lib/systemd/system/clinicam-relay.service"
install -D -m 0644 packaging/relay/sysusers.conf "$STAGE/usr/lib/sysusers.d/clinicam-relay.conf"
install -D -m 0644 relay/relay.example.toml "$STAGE/etc/clinicam/relay.toml"
install -D -m 0644 docs/prometheus/clinicam-alerts.yml "$STAGE/usr/share/doc/clinicam-relay/clinicam-alerts.yml"
install -d "$STAGE/usr/bin"
ln -s "$VENV/bin/clinicam" "$STAGE/usr/bin/clinicam"

# 3. the control files
install -m 0644 packaging/relay/conffiles "$STAGE/DEBIAN/conffiles"
install -m 0755 packaging/relay/preinst packaging/relay/postinst packaging/relay/prerm packaging/relay/postrm \
    "$STAGE/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" \
    packaging/relay/control.in > "$STAGE/DEBIAN/control"

dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT/$NAME.deb" >/dev/null
echo "$OUT/$NAME.deb: $(du -k "$OUT/$NAME.deb" | cut -f1) KiB, installed ${size} KiB"
