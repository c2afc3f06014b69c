#!/bin/sh
# updatecheck.sh -- runs on every boot of the update boot test (test-update.sh,
# updatecheck-report.service) and drives one step of the story, chosen by the image
# version we booted and what update-confirm left in /run/clinicam-update/result:
#   1.0.0            slot A, first boot: refusals, then install the good bundle (2.0.0)
#   2.0.0 "updated"  slot B, trial confirmed: checks, then install the broken bundle
#   3.0.0            slot A, trial of a station that cannot start: nothing to do,
#                    update-confirm rolls back by itself
#   2.0.0 "update-failed"  slot B again: the rollback and its report; power off
# Every bundle comes from the update server on the host (10.0.2.2, recorded at
# provisioning in identity/allow.json), pulled by update-fetch as root with the
# station's certificate; SHA256SUMS on the same server names each bundle's digest (the
# operator's command carries it on a site).
# Prints "BOOTCHECK <name> PASS|FAIL <detail>" on the serial console (judged by
# parse_update_console.py on the host). Test-only: never part of a station image.
# The sh -c checks expand in their own shell: single quotes are meant.
# shellcheck disable=SC2016
set -u

UPDATES=/run/updates
STATION=clinicam-station.service
IDENT=/etc/clinicam/identity
FETCH=/usr/lib/clinicam/update-fetch
report() { printf 'BOOTCHECK %s %s %s\n' "$1" "$2" "$3"; }
info() { printf 'BOOTCHECK-INFO %s\n' "$*"; }
check() {  # check NAME DETAIL COMMAND...
    name=$1 detail=$2; shift 2
    if "$@" >/dev/null 2>&1; then report "$name" PASS "$detail"; else report "$name" FAIL "$detail"; fi
}
prop() { systemctl show -P "$2" "$1"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
slot() { tr ' ' '\n' < /proc/cmdline | sed -n 's/^rauc\.slot=//p'; }
version=$(cat /usr/share/clinicam/image-version)
cmdline_arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN {printf "%.0f", b - a}'; }
# The update server recorded by "clinicam provision install --update-server".
SERVER=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["update_server"]["url"])' $IDENT/allow.json 2>/dev/null)
get() {  # get URL: as update-fetch connects (root, the station's certificate, the site CA)
    curl --fail --silent --show-error --proto =https --connect-timeout 10 --max-time 120 \
        --cacert $IDENT/ca.pem --cert $IDENT/device.pem --key $IDENT/device.key "$1"
}
digest() { get "$SERVER/SHA256SUMS" | awk -v n="$1" '$2 == n {print $1}'; }
reach() { if get "$1/SHA256SUMS" >/dev/null 2>&1; then echo reached; else echo blocked; fi; }
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(uptime_s)" "$line"; done; }
committed_part() { awk -F= '/^\[/ {a = ($0 == "[all]"); next} a && $1 == "boot_partition" {print $2}' /boot/firmware/autoboot.txt; }

wait_active() {  # wait_active UNIT SECONDS: until active or failed
    i=0
    while [ $i -lt "$2" ]; do
        case $(prop "$1" ActiveState) in active|failed) return 0 ;; esac
        sleep 1; i=$((i + 1))
    done
}

identity() {  # the persistent partition's identity and config, unchanged by every update
    sum=$(cd /etc/clinicam && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16)
    check "identity-$1" "sha=$sum files=$(find /etc/clinicam/ -type f | wc -l) mapped=$(findmnt -n -o SOURCE /var/lib/clinicam)" \
        sh -c "test -f /etc/clinicam/identity/device.key && test \"$(findmnt -n -o SOURCE /var/lib/clinicam)\" = /dev/mapper/clinicam"
    # The partition was unlocked with the key it was encrypted with at first boot.
    info "persist: $(journalctl -b -u persist-clinicam.service -o cat --no-pager | grep '^persist: ' | tail -n 1)"
}

station_logged() {  # station_logged TEXT: wait (bounded) for the station to log it
    i=0
    while [ $i -lt 60 ] && ! journalctl -b -u $STATION -o cat --no-pager | grep -qF "$1"; do
        sleep 1; i=$((i + 1))
    done
}

station_ready() {  # station_ready NAME
    wait_active $STATION 300
    fw=$(journalctl -b -u $STATION -o cat --no-pager | grep -m 1 -o 'firmware [^ ]*' || true)
    check "$1" "state=$(prop $STATION ActiveState) $fw" test "$(prop $STATION ActiveState)" = active
}

firewall() {
    # Root reaches the update server only because provisioning recorded it: the set
    # apply-network filled from allow.json lets it through; emptied, the same request is
    # dropped; refilled by apply-network, it passes again. Another port of the same host,
    # served by a second update server: dropped, until added to the set by hand.
    other="https://10.0.2.2:$(cmdline_arg clinicam.updatecheck.other)"
    t0=$(uptime_s)
    recorded=$(reach "$SERVER") other_before=$(reach "$other")
    nft flush set inet clinicam update4
    flushed=$(reach "$SERVER")
    /opt/clinicam/venv/bin/clinicam provision apply-network | sed 's/^/BOOTCHECK-INFO /'
    reapplied=$(reach "$SERVER")
    nft add element inet clinicam update4 "{ 10.0.2.2 . ${other##*:} }"
    other_opened=$(reach "$other")
    nft delete element inet clinicam update4 "{ 10.0.2.2 . ${other##*:} }"
    info "set update4: $(nft list set inet clinicam update4 | grep elements | tr -s ' ')"
    check update-server-firewall "$SERVER: recorded=$recorded emptied=$flushed reapplied=$reapplied" \
        test "$recorded/$flushed/$reapplied" = reached/blocked/reached
    check update-server-other-port "$other: $other_before; added to the set by hand: $other_opened" \
        test "$other_before/$other_opened" = blocked/reached
    info "time firewall checks: $(since "$t0")s"
}

refused() {  # refused NAME BUNDLE EXPECTED-TEXT [ARGS]: fetched, refused, station untouched
    name=$1 bundle=$2 want=$3; shift 3
    pid=$(prop $STATION MainPID) n=$(prop $STATION NRestarts)
    out=$($FETCH "$SERVER/$bundle" "$(digest "$bundle")" "$@" 2>&1); rc=$?
    printf '%s\n' "$out" | tail -n 2 | sed "s/^/BOOTCHECK-INFO $name: /"
    ok=no
    if [ $rc = 3 ] && printf '%s\n' "$out" | grep -q "$want" &&
        [ "$(prop $STATION ActiveState)" = active ] && [ "$(prop $STATION MainPID)" = "$pid" ] &&
        [ "$(prop $STATION NRestarts)" = "$n" ]; then ok=yes; fi
    check "$name" "exit=$rc station=$(prop $STATION ActiveState) pid $pid->$(prop $STATION MainPID)" test $ok = yes
}

rauc_refuses() {  # rauc_refuses NAME BUNDLE EXPECTED-TEXT: RAUC itself (no wrapper) refuses
    get "$SERVER/$2" > "$UPDATES/$2"
    out=$(rauc install "$UPDATES/$2" 2>&1); rc=$?
    rm -f "$UPDATES/$2"
    printf '%s\n' "$out" | grep -v '^rauc-Message' | tail -n 1 | sed "s/^/BOOTCHECK-INFO $1: /"
    check "$1" "rauc install exit=$rc" sh -c "test $rc != 0 && printf '%s\n' \"\$0\" | grep -q \"\$1\"" "$out" "$3"
}

install_bundle() {  # install_bundle NAME BUNDLE [CHECK-RESUMED]: fetch, install; reboots on success
    # Lines are judged as they come: after "SHA-256 matches" update-install runs and
    # queues the reboot, which may stop this script before the pipe ends.
    t0=$(uptime_s)
    info "$1: update-fetch $SERVER/$2 at uptime ${t0}s"
    { $FETCH "$SERVER/$2" "$(digest "$2")" --wait-idle 120 2>&1; echo "exit $?"; } | while IFS= read -r line; do
        case $line in *%*) continue ;; esac
        info "$1: $line"
        case $line in
            *"link dropped at"*) dropped=$line ;;
            *"SHA-256 matches"*)
                info "time $1 fetch: $(since "$t0")s"; t1=$(uptime_s)
                # The update server cut the first transfer half way: update-fetch resumed.
                if [ -n "${3:-}" ]; then
                    check "$3" "${dropped:-no dropped link}; $line" sh -c 'case "$0" in *"link dropped at "[1-9]*) ;; *) exit 1 ;; esac' "${dropped:-}"
                fi ;;
            *"rebooting for a trial boot"*) info "time $1 install: $(since "${t1:-$t0}")s" ;;
            "exit "*) echo "${line#exit }" > /run/update-install.rc ;;
        esac
    done
    rc=$(cat /run/update-install.rc 2>/dev/null || echo "?")
    # Exit 0: the reboot is queued (systemctl returns at once); the next boot judges.
    if [ "$rc" = 0 ]; then info "$1: rebooting at uptime $(uptime_s)s"; sleep 900; fi
    report "$1" FAIL "update-install exit $rc"
    systemctl --no-block poweroff
}

order_bundle() {  # order_bundle NAME BUNDLE VERSION [CHECK-RESUMED]: as a remote "update" command
    # The station's hand-off (clinicam.firmware.update_handoff): it writes the order
    # into its RuntimeDirectory; update-request.path starts update-request.service
    # (root), which checks it and runs update-fetch. Here the order is written as the
    # station writes it; the service's journal is followed until the reboot.
    if ! systemctl -q is-enabled update-request.path 2>/dev/null; then
        info "$1: no update-request.path in this image: update-fetch called directly"
        install_bundle "$1" "$2" "${4:-}"
        return
    fi
    t0=$(uptime_s) seen=0 fetched="" order=/run/clinicam/update-request.json
    info "$1: order for $3 written to $order at uptime ${t0}s"
    printf '{"id": "updatecheck-%s", "url": "%s/%s", "sha256": "%s", "version": "%s", "allow_downgrade": false}\n' \
        "$3" "$SERVER" "$2" "$(digest "$2")" "$3" > "$order.tmp"
    chown clinicam:clinicam "$order.tmp"; mv "$order.tmp" "$order"
    i=0
    while [ $i -lt 1800 ]; do
        journalctl -b -u update-request.service -o cat --no-pager > /run/update-request.log 2>/dev/null
        tail -n +$((seen + 1)) /run/update-request.log | grep -v '%' | sed "s/^/BOOTCHECK-INFO $1: /"
        seen=$(wc -l < /run/update-request.log)
        if [ -z "$fetched" ] && grep -q "SHA-256 matches" /run/update-request.log; then
            fetched=$(uptime_s)
            info "time $1 order to fetched: $(since "$t0")s"
            if [ -n "${4:-}" ]; then
                check "$4" "$(grep -E 'link dropped|SHA-256 matches' /run/update-request.log | tr '\n' ' ')" \
                    grep -q "link dropped at [1-9]" /run/update-request.log
            fi
        fi
        if grep -q "rebooting for a trial boot" /run/update-request.log; then
            info "time $1 install: $(since "${fetched:-$t0}")s"; info "$1: rebooting at uptime $(uptime_s)s"; sleep 900
        fi
        if grep -q "update-fetch exit" /run/update-request.log; then break; fi
        sleep 2; i=$((i + 2))
    done
    report "$1" FAIL "update-request ended without a reboot: $(grep 'update-fetch exit' /run/update-request.log || echo 'no exit line')"
    systemctl --no-block poweroff
}

first_boot() {
    report update-begin INFO "slot=$(slot) version=$version"
    station_ready station-ready-1
    check ab-slot-a "rauc.slot=$(slot) root=$(findmnt -n -o SOURCE /media/root-ro) committed=p$(committed_part)" \
        sh -c '[ "$(tr " " "\n" < /proc/cmdline | sed -n "s/^rauc\.slot=//p")" = A ] && [ "$(findmnt -n -o SOURCE /media/root-ro)" = /dev/vda2 ]'
    check keyring "/etc/rauc/keyring.pem: $(openssl x509 -noout -subject -in /etc/rauc/keyring.pem 2>/dev/null || echo missing)" \
        test -s /etc/rauc/keyring.pem
    check rauc-status "$(rauc status --output-format=shell 2>/dev/null | grep -E '^RAUC_(SYSTEM_BOOTED_BOOTNAME|BOOT_PRIMARY)=' | tr '\n' ' ')" \
        sh -c 'rauc status --output-format=shell | grep -q "^RAUC_SYSTEM_BOOTED_BOOTNAME=.A.$"'
    identity 1
    firewall
    t0=$(uptime_s)
    refused refuse-bad-signature rogue.raucb "signature verification failed"
    refused refuse-unsigned unsigned.raucb "update refused"
    refused refuse-compatible other.raucb "made for 'clinicam-station-other'"
    refused refuse-downgrade downgrade.raucb "older than the running"
    rauc_refuses rauc-refuses-compatible other.raucb "Compatible mismatch"
    rauc_refuses rauc-refuses-downgrade downgrade.raucb "Pre-install handler error"
    info "time refusals (six, each fetched over HTTPS): $(since "$t0")s (uptime $(uptime_s)s)"
    station_ready station-after-refusals
    order_bundle install-good good.raucb 2.0.0 good-fetch-resumed
}

confirmed_boot() {
    wait_active update-confirm.service 600
    journalctl -b -u update-confirm.service -o cat --no-pager | tail -n 3 | sed 's/^/BOOTCHECK-INFO confirm: /'
    station_ready station-ready-2
    # Marked good only once the station was connected to the broker (update-confirm reads
    # the station's status line; here: the journal's monotonic times of both).
    connected=$(journalctl -b -u $STATION -o short-monotonic --no-pager | grep -m 1 'uplink: connected' | sed 's/^\[ *\([0-9.]*\)\].*/\1/')
    marked=$(journalctl -b -u update-confirm.service -o short-monotonic --no-pager | grep -m 1 ' confirmed' | sed 's/^\[ *\([0-9.]*\)\].*/\1/')
    info "time trial boot to mark-good: ${marked:-?}s after the kernel started (station connected at ${connected:-?}s)"
    check good-marked-after-connected "connected at ${connected:-never}s, marked good at ${marked:-never}s, status '$(prop $STATION StatusText)'" \
        sh -c '[ -n "$0" ] && [ -n "$1" ] && awk -v c="$0" -v m="$1" "BEGIN {exit !(m >= c)}"' "$connected" "$marked"
    check good-booted-b "rauc.slot=$(slot) image $version" sh -c '[ "$0" = B ] && [ "$1" = 2.0.0 ]' "$(slot)" "$version"
    check good-marked-good "result=$(cat /run/clinicam-update/result) committed=p$(committed_part) B=$(/usr/lib/clinicam/rauc-tryboot get-state B)" \
        sh -c '[ "$(cat /run/clinicam-update/result)" = "updated 2.0.0" ] && [ "$0" = 3 ] && [ "$(/usr/lib/clinicam/rauc-tryboot get-state B)" = good ]' "$(committed_part)"
    station_logged 'update: updated 2.0.0'
    check good-reported "$(journalctl -b -u $STATION -o cat --no-pager | grep -E 'firmware 2\.0\.0|update: ' | tr '\n' ' ')" \
        sh -c "journalctl -b -u $STATION -o cat --no-pager | grep -q 'firmware 2.0.0)' &&
               journalctl -b -u $STATION -o cat --no-pager | grep -q 'update: updated 2.0.0'"
    identity 2
    install_bundle install-broken broken.raucb
}

failed_boot() {
    report trial-broken INFO "slot=$(slot) version=$version: update-confirm decides (uptime $(uptime_s)s)"
}
# (Boot 3's journal is gone with its reboot: boot 4 reads the rollback from the
# result update-confirm left and rauc-tryboot's slot state.)

rolled_back_boot() {
    wait_active update-confirm.service 600
    journalctl -b -u update-confirm.service -o cat --no-pager | tail -n 3 | sed 's/^/BOOTCHECK-INFO confirm: /'
    station_ready station-ready-4
    check rollback-slot-b "rauc.slot=$(slot) image $version committed=p$(committed_part)" \
        sh -c '[ "$0" = B ] && [ "$1" = 2.0.0 ] && [ "$2" = 3 ]' "$(slot)" "$version" "$(committed_part)"
    check rollback-reported "result=$(cat /run/clinicam-update/result) A=$(/usr/lib/clinicam/rauc-tryboot get-state A)" \
        sh -c '[ "$(cat /run/clinicam-update/result)" = "update-failed 3.0.0" ] && [ "$(/usr/lib/clinicam/rauc-tryboot get-state A)" = bad ]'
    station_logged 'update: update-failed 3.0.0'
    check rollback-station-event "$(journalctl -b -u $STATION -o cat --no-pager | grep -m 1 'update-failed' || echo 'no update-failed line')" \
        sh -c "journalctl -b -u $STATION -o cat --no-pager | grep -q 'update-failed 3.0.0'"
    identity 4
    failed=$(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')
    check failed-units "failed: ${failed:-none}" test -z "$failed"
    report update-end INFO "uptime=$(uptime_s)s"
    systemctl --no-block poweroff
}

mkdir -p $UPDATES
[ -n "$SERVER" ] || info "no update_server in $IDENT/allow.json"
result=$(cat /run/clinicam-update/result 2>/dev/null || true)
info "boot: slot=$(slot) version=$version result='$result' uptime=$(uptime_s)s"
case $version/$result in
    1.0.0/*) first_boot ;;
    2.0.0/updated*) confirmed_boot ;;
    3.0.0/*) failed_boot ;;
    2.0.0/update-failed*) rolled_back_boot ;;
    2.0.0/)  # update-confirm has not written its result yet
        wait_active update-confirm.service 600
        case $(cat /run/clinicam-update/result 2>/dev/null) in
            updated*) confirmed_boot ;;
            update-failed*) rolled_back_boot ;;
            *) report update-state FAIL "slot B 2.0.0 without an update result"; systemctl --no-block poweroff ;;
        esac ;;
    *) report update-state FAIL "unexpected version $version"; systemctl --no-block poweroff ;;
esac
