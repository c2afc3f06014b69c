#!/bin/sh
# bootcheck.sh -- runs once in the booted CI stand-in (bootcheck-report.service), checks
# the appliance's promises from inside, prints one "BOOTCHECK <name> PASS|FAIL|PENDING
# <detail>" line per check on the serial console, then powers the VM off. The host
# (parse_console.py) fails the test on any FAIL or missing line. Test-only: this file
# is never part of a station image.
set -u

report() { printf 'BOOTCHECK %s %s %s\n' "$1" "$2" "$3"; }
check() {  # check NAME DETAIL COMMAND...
    name=$1 detail=$2; shift 2
    if "$@" >/dev/null 2>&1; then report "$name" PASS "$detail"; else report "$name" FAIL "$detail"; fi
}
cmdline_has() { tr ' ' '\n' < /proc/cmdline | grep -qx "$1"; }
unit_prop() { systemctl show -P "$2" "$1"; }
mounted() {  # mounted MOUNTPOINT FSTYPE ro|rw|ro-or-rw -- the last mount on it counts
    awk -v m="$1" -v t="$2" -v o="$3" '$2 == m {split($4, a, ","); ok = ($3 == t && (o == "ro-or-rw" || a[1] == o))} END {exit !ok}' /proc/mounts
}
init_on_free_active() { cmdline_has init_on_free=1 && dmesg | grep -q 'heap free:on'; }

STATION=clinicam-station.service
station_mode=required
cmdline_has clinicam.bootcheck.station=pending && station_mode=pending

wait_for_station() {
    # Python under TCG emulation starts slowly: allow three minutes.
    i=0
    while [ $i -lt 180 ]; do
        state=$(unit_prop $STATION ActiveState)
        case $state in active|failed) return 0 ;; esac
        sleep 1; i=$((i + 1))
    done
}

check_station_ready() {
    if [ $station_mode = pending ]; then
        report station-ready PENDING "clinicam station run is not built yet: unit disabled in this stand-in"
        report station-memory PENDING "clinicam station run is not built yet"
        return
    fi
    wait_for_station
    # Type=notify: "active" is only reached after the daemon sent READY=1.
    [ "$(unit_prop $STATION ActiveState)" = active ] ||
        journalctl -b -u $STATION -o cat --no-pager | tail -n 15 | sed 's/^/BOOTCHECK-INFO station: /'
    check station-ready "state=$(unit_prop $STATION ActiveState)/$(unit_prop $STATION SubState) status=$(unit_prop $STATION StatusText)" \
        test "$(unit_prop $STATION ActiveState)" = active
}

check_station_memory() {
    [ $station_mode = pending ] && return
    # mlockall under LimitMEMLOCK, PR_SET_DUMPABLE 0, RLIMIT_CORE 0 inside the sandbox:
    # the station's own start-up line (clinicam.firmware.capture.memory) says whether it worked.
    line=$(journalctl -b -u $STATION -o cat --no-pager | grep -m 1 'memory .*hardened' || true)
    case $line in
        *"memory hardened"*) report station-memory PASS "$line" ;;
        *) report station-memory FAIL "${line:-no memory hardening line in the journal}" ;;
    esac
}

recorded_allow_only() {  # recorded_allow_only "ADDRESS LIST"
    case " $1 " in *" 10.0.2.2 "* | *" 10.0.2.2/32 "*) ;; *) return 1 ;; esac
    case " $1 " in *192.0.2.1*) return 1 ;; esac
}

check_station_ip_allow() {
    if [ $station_mode = pending ]; then
        report station-ip-allow PENDING "clinicam station run is not built yet"
        return
    fi
    # The address recorded at provisioning (10.0.2.2) replaced the image's fallback
    # list (192.0.2.1) before the station started.
    allow=$(unit_prop $STATION IPAddressAllow)
    check station-ip-allow "IPAddressAllow=$allow" recorded_allow_only "$allow"
}

GPIO_SIM_DIR=/sys/kernel/config/gpio-sim/standin
gpio_mode=required
cmdline_has clinicam.bootcheck.gpio=pending && gpio_mode=pending
sim_line() {  # sim_line N ATTR: the header chip's line N in gpio-sim's sysfs
    echo "/sys/devices/platform/$(cat $GPIO_SIM_DIR/dev_name)/$(cat $GPIO_SIM_DIR/bank0/chip_name)/sim_gpio$1/$2"
}
station_events() { journalctl -b -u $STATION -o cat --no-pager | grep '^{"kind": "signal"' || true; }
fifo_in_runtime_dir() { find /run/clinicam -maxdepth 1 -name '.lgd-nfy*' -type p | grep -q .; }
header_not_chip4() {  # the station opened the labelled chip, while a non-header gpiochip4 exists
    test -e /dev/gpiochip4 && test "$(cat $GPIO_SIM_DIR/bank0/chip_name)" != gpiochip4 &&
        journalctl -b -u $STATION -o cat --no-pager | grep -q "gpio: header chip $(cat $GPIO_SIM_DIR/bank0/chip_name) (pinctrl-rp1)"
}
light_samples() {  # lines 22, 23, 24 (RGB light) and 18 (buzzer) for ~6 s: values seen
    r=$(sim_line 22 value) g=$(sim_line 23 value) b=$(sim_line 24 value) z=$(sim_line 18 value)
    seen="" n=0 now=0
    read -r up _ < /proc/uptime; end=$(( ${up%.*} + 6 ))
    while [ "$now" -lt $end ]; do
        # builtins only (read, case, arithmetic): no fork per sample, so a 0.15 s flash
        # is not missed under TCG
        read -r vr < "$r"; read -r vg < "$g"; read -r vb < "$b"; read -r vz < "$z"
        case " $seen " in *" $vr$vg$vb$vz "*) ;; *) seen="$seen $vr$vg$vb$vz" ;; esac
        n=$((n + 1))
        read -r up _ < /proc/uptime; now=${up%.*}
    done
    echo "${seen# } ($n samples)"
}
light_driven() {  # some output went high: a colour or the buzzer (no_patient: red + tone)
    printf '%s' "$1" | sed 's/([^)]*)//g' | grep -q 1
}
press_button() {  # pull the shutter line (17, active low) down for a second (< long press)
    echo pull-down > "$(sim_line 17 pull)"; sleep 1; echo pull-up > "$(sim_line 17 pull)"
}
saw_no_patient() {
    i=0
    while [ $i -lt 30 ]; do
        station_events | grep -q '"pattern": "no_patient"' && return 0
        sleep 0.5; i=$((i + 1))
    done
    return 1
}

check_station_gpio() {
    # The pi backend's GPIO inside the real unit: lgpio (PyPI) on gpio-sim chips shaped
    # like a Pi 5's, its notify FIFO in the unit's RuntimeDirectory (LG_WD), the header
    # chip found by label, outputs driven, and a press on the shutter line arriving as
    # the workflow's "no_patient" signal (idle station: scan a wristband first).
    if [ $gpio_mode = pending ] || [ $station_mode = pending ]; then
        for name in gpio-chips gpio-lg-fifo gpio-header-chip gpio-outputs gpio-button; do
            report $name PENDING "no gpio-sim module or no station in this stand-in"
        done
        return
    fi
    journalctl -b -u standin-gpio-sim.service -o cat --no-pager | sed 's/^/BOOTCHECK-INFO gpio-sim: /'
    check gpio-chips "$(echo /dev/gpiochip*) group $(stat -c %G /dev/gpiochip0)" \
        test "$(stat -c %G /dev/gpiochip0)" = gpio
    check gpio-lg-fifo "$(find /run/clinicam -maxdepth 1 -name '.lgd-nfy*' -printf '%p(%y) ' 2>/dev/null)" fifo_in_runtime_dir
    check gpio-header-chip "$(journalctl -b -u $STATION -o cat --no-pager | grep -m 1 'gpio: header chip' || echo 'no header chip line')" header_not_chip4
    # Control: no "no_patient" signal before the press.
    before=$(station_events | grep -c '"pattern": "no_patient"')
    # Up to three presses: under TCG emulation on a loaded host the station may be busy
    # for seconds; the attempts are reported. The outputs are sampled meanwhile: the
    # signal flashes red with the buzzer.
    tries=0 seen=no samples=""
    while [ $tries -lt 3 ] && [ $seen = no ]; do
        tries=$((tries + 1))
        press_button &
        samples="$samples $(light_samples)"
        wait
        saw_no_patient && seen=yes
    done
    check gpio-outputs "rgb+buzzer values seen:$samples" light_driven "$samples"
    if [ "$before" = 0 ] && [ $seen = yes ]; then
        report gpio-button PASS "line 17 pulled down and up (press $tries of 3): $(station_events | grep -m 1 no_patient)"
    else
        report gpio-button FAIL "before=$before presses=$tries; signals: $(station_events | tail -n 3 | tr '\n' ' ')"
        journalctl -b -u $STATION -o cat --no-pager | tail -n 12 | sed 's/^/BOOTCHECK-INFO station: /'
        # which lines the station holds, and the shutter line's simulated state
        mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
        sed -n '/pinctrl-rp1/,/^$/p' /sys/kernel/debug/gpio | head -n 12 | sed 's/^/BOOTCHECK-INFO debugfs: /'
        echo "line 17 value=$(cat "$(sim_line 17 value)") pull=$(cat "$(sim_line 17 pull)")" | sed 's/^/BOOTCHECK-INFO /'
    fi
}

check_hid_support() {
    # [reader] hid_device needs evdev in the station's venv (python3-evdev from Debian,
    # seen through --system-site-packages): without it the station would not start.
    check hid-evdev "$(/opt/clinicam/venv/bin/python -c 'import evdev; print(evdev.__file__)' 2>&1 | tail -n 1)" \
        /opt/clinicam/venv/bin/python -c 'import evdev'
}

check_station_stop() {
    if [ $station_mode = pending ]; then
        report station-stop PENDING "clinicam station run is not built yet"
        report station-wiped PENDING "clinicam station run is not built yet"
        return
    fi
    systemctl stop $STATION
    code=$(unit_prop $STATION ExecMainCode) status=$(unit_prop $STATION ExecMainStatus)
    # Code 1 is CLD_EXITED: the daemon exited by itself with status 0 after draining
    # and wiping, rather than being killed by SIGTERM or SIGKILL.
    check station-stop "result=$(unit_prop $STATION Result) code=$code status=$status" \
        test "$(unit_prop $STATION Result)/$code/$status" = success/1/0
    # The station's own wipe report line (clinicam.firmware.capture.wipe.report_line): ids and
    # counts only, never PHI.
    wiped=$(journalctl -b -u $STATION -o cat --no-pager | grep -m 1 'wiped trigger=' || true)
    check station-wiped "${wiped:-no wipe report in the journal}" test -n "$wiped"
    # Its one writable disk path (StateDirectory=clinicam/events): undelivered audit
    # events on the persistent partition; the station found it (no "RAM only" warning).
    events=$(stat -c '%U %a' /var/lib/clinicam/events 2>&1)
    ram_only=$(journalctl -b -u $STATION -o cat --no-pager | grep -c 'live in RAM only' || true)
    check station-events-dir "/var/lib/clinicam/events: $events; RAM-only warnings: $ram_only" \
        test "$events/$ram_only" = "clinicam 700/0"
}

probe_result() {  # the probe units print "PROBE <what> <outcome>" to the journal
    journalctl -b -u "$1" -o cat --no-pager | grep "^PROBE $2 " | tail -n 1 | cut -d' ' -f3-
}

check_sandbox_writes() {
    systemctl start clinicam-probe-fs.service
    for path in /etc /var/lib/clinicam /var/tmp /opt/clinicam /root; do
        # Positive control: outside the sandbox, root can write there (overlay or the
        # persistent partition), so a denial inside is the sandbox's doing.
        if ( : > "$path/.bootcheck" ) 2>/dev/null; then rm -f "$path/.bootcheck"; else
            report "sandbox-write:$path" FAIL "control: root outside the sandbox cannot write either"
            continue
        fi
        got=$(probe_result clinicam-probe-fs.service "write:$path")
        check "sandbox-write:$path" "inside=$got" test "$got" = denied
    done
    got=$(probe_result clinicam-probe-fs.service "write:runtime")
    check sandbox-write:runtime-dir "inside=$got" test "$got" = allowed
}

check_sandbox_network() {
    systemctl start clinicam-probe-net.service
    # Control: the station's UID outside the sandbox reaches 10.0.2.2:8883 (a refusal
    # from the host proves the packet left and came back); inside, IPAddressDeny drops
    # it (EPERM, or for TCP a SYN that never leaves: timeout).
    outside=$(setpriv --reuid=975 --regid=975 --clear-groups python3 /usr/local/libexec/clinicam-probe-net.py 10.0.2.2 8883)
    inside=$(probe_result clinicam-probe-net.service "connect:10.0.2.2:8883")
    local_in=$(probe_result clinicam-probe-net.service "connect:127.0.0.1:9")
    case "$inside/$outside" in
        blocked/refused|blocked/connected|timeout/refused|timeout/connected)
            report sandbox-ip-deny PASS "outside=$outside inside=$inside" ;;
        *) report sandbox-ip-deny FAIL "outside=$outside inside=$inside" ;;
    esac
    check sandbox-ip-localhost "inside=$local_in" test "$local_in" != blocked -a -n "$local_in"
}

check_system() {
    check firewall "table inet clinicam, policy drop" \
        sh -c 'nft list chain inet clinicam output | grep -q "policy drop"'
    check no-swap "$(wc -l < /proc/swaps) line(s) in /proc/swaps" test "$(wc -l < /proc/swaps)" = 1
    check journal-volatile "/run/log/journal present, no /var/log/journal files" \
        sh -c 'test -d /run/log/journal && ! find /var/log/journal -name "*.journal" 2>/dev/null | grep -q .'
    check root-overlay "/ is $(awk '$2 == "/" {t = $3} END {print t}' /proc/mounts)" mounted / overlay ro-or-rw
    check root-lower-ro "overlayroot's lower layer /media/root-ro is ext4, ro" mounted /media/root-ro ext4 ro
    check tmp-in-ram "/tmp is a tmpfs (the sandbox's private /tmp lives there)" mounted /tmp tmpfs rw
    check persistent-rw "/var/lib/clinicam is a real ext4 mount, rw" mounted /var/lib/clinicam ext4 rw
    check init-on-free "kernel: $(dmesg | grep -o 'mem auto-init:.*' | head -n 1)" init_on_free_active
    check core-pattern "$(cat /proc/sys/kernel/core_pattern)" test "$(cat /proc/sys/kernel/core_pattern)" = "|/bin/false"
    check suid-dumpable "$(cat /proc/sys/fs/suid_dumpable)" test "$(cat /proc/sys/fs/suid_dumpable)" = 0
    check getty-masked "getty@tty1 $(unit_prop getty@tty1.service LoadState)" test "$(unit_prop getty@tty1.service LoadState)" = masked
    check ssh-off "no sshd listening or enabled" sh -c '! systemctl is-enabled ssh.service 2>/dev/null | grep -qx enabled'
    check station-uid "clinicam uid $(id -u clinicam)" test "$(id -u clinicam)" = 975
    check watchdog-configured "RuntimeWatchdogUSec=$(systemctl show -P RuntimeWatchdogUSec)" \
        test "$(systemctl show -P RuntimeWatchdogUSec)" != 0
}

PERSIST_DEV=/dev/disk/by-label/clinicam
PERSIST_KEY=/boot/firmware/clinicam/persist.key
persist_journal() { journalctl -b -u persist-clinicam.service -o cat --no-pager | grep '^persist: '; }
persist_last() { persist_journal | tail -n 1; }
keyslots() { cryptsetup luksDump --dump-json-metadata "$PERSIST_DEV" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["keyslots"]))'; }
mapped_luks2() {
    test "$(findmnt -n -o SOURCE /var/lib/clinicam)" = /dev/mapper/clinicam &&
        cryptsetup status clinicam | grep -q 'type: *LUKS2'
}
first_boot_carried() { persist_journal | grep -q 'was plain ext4, carried [1-9][0-9]* files'; }
no_plaintext() {  # the raw partition must not hold the identity or the config in clear
    ! grep -a -q -e 'PRIVATE KEY' -e 'backend = "sim"' "$PERSIST_DEV"
}
key_private() {
    test "$(stat -c %s "$PERSIST_KEY")" = 32 &&
        ! setpriv --reuid=975 --regid=975 --clear-groups cat "$PERSIST_KEY" >/dev/null 2>&1
}
reopened() {
    test "$1" = yes && test -f /etc/clinicam/station.toml &&
        persist_last | grep -q '^persist: unlocked .* with the file key'
}
erased() {  # erased OUTPUT
    printf '%s\n' "$1" | grep -q '^erase: verified: yes' && test "$(keyslots)" = 0 &&
        test ! -e "$PERSIST_KEY" &&
        ! cryptsetup open --test-passphrase --key-file /run/old-persist.key "$PERSIST_DEV"
}
fresh_after_erase() {
    test -d /etc/clinicam/identity && test ! -e /etc/clinicam/station.toml &&
        persist_last | grep -q '^persist: encrypted .*(was erased'
}

persist_diagnose() {  # the why, for the CI log (this partition never holds PHI)
    { journalctl -b -u persist-clinicam.service -o cat --no-pager | tail -n 20
      ls -l /dev/disk/by-label; blkid; udevadm info --query=property "$(blkid -o device -t TYPE=crypto_LUKS | head -n 1)"
    } 2>&1 | sed 's/^/BOOTCHECK-INFO persist: /'
}

check_persist_encrypted() {
    # First boot: the plain ext4 the image carried (provisioned, in this stand-in) was
    # encrypted with a new key and its files carried into the LUKS2 volume.
    mapped_luks2 || persist_diagnose
    check persist-encrypted "$(findmnt -n -o SOURCE /var/lib/clinicam) $(cryptsetup status clinicam | awk '$1 == "type:" {print $2}')" mapped_luks2
    check persist-first-boot "$(persist_journal | head -n 1)" first_boot_carried
    check persist-no-plaintext "raw $PERSIST_DEV: no private key, no config in clear" no_plaintext
    check persist-key-private "$(stat -c %s "$PERSIST_KEY" 2>/dev/null || echo no)-byte key file, unreadable to uid 975" key_private
}

check_persist_lifecycle() {
    # The reboot path without a reboot: stop the unit (its mount goes with it), then
    # start the mount again: the same key must reopen the same volume, files intact.
    systemctl stop persist-clinicam.service
    closed=$([ -e /dev/mapper/clinicam ] && echo no || echo yes)
    systemctl start var-lib-clinicam.mount
    check persist-reopen "closed=$closed; $(persist_last)" reopened "$closed"
    # Decommissioning: crypto-erase (it stops persist-clinicam.service itself), then
    # prove the old key no longer opens anything.
    install -m 0600 "$PERSIST_KEY" /run/old-persist.key
    out=$(/opt/clinicam/venv/bin/clinicam persist erase --yes 2>&1)
    printf '%s\n' "$out" | sed 's/^/BOOTCHECK-INFO /'
    check persist-erase "keyslots=$(keyslots) key-file=$([ -e "$PERSIST_KEY" ] && echo present || echo gone)" erased "$out"
    rm -f /run/old-persist.key
    # The next start after an erase makes a fresh, empty encrypted partition.
    systemctl start var-lib-clinicam.mount
    check persist-fresh "$(persist_last)" fresh_after_erase
}

check_failed_units() {
    failed=$(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')
    check failed-units "failed: ${failed:-none}" test -z "$failed"
    for unit in $failed; do  # the why, for the CI log (no PHI exists in this VM)
        journalctl -b -u "$unit" -o cat --no-pager | tail -n 8 | sed "s|^|BOOTCHECK-INFO $unit: |"
    done
}

main() {
    report begin INFO "station=$station_mode kernel=$(uname -r) arch=$(uname -m)"
    check_station_ready
    check_station_memory
    check_station_ip_allow
    check_station_gpio
    check_hid_support
    check_system
    check_sandbox_writes
    check_sandbox_network
    check_persist_encrypted
    check_station_stop
    check_persist_lifecycle
    check_failed_units
    report end INFO "uptime=$(cut -d' ' -f1 /proc/uptime)s"
}

main
systemctl --no-block poweroff
