#!/bin/sh
# gpio-sim.sh -- CI stand-in only (standin-gpio-sim.service): give the VM the GPIO chips
# of a Raspberry Pi 5 on a kernel from 6.6.45 on, as real /dev/gpiochipN devices from
# the kernel's gpio-sim driver (configfs). The header controller, labelled
# "pinctrl-rp1" as on a Pi 5, comes first (gpiochip0); four chips labelled like the
# Pi 5's other controllers follow, so /dev/gpiochip4 exists but is not the header: the
# chip PyPI gpiozero 2.0.1 would open on a Pi 5 (issue 1166). The station must find
# the header by its label. Prints "gpiochipN label" lines for the journal.
set -eu
SIM=/sys/kernel/config/gpio-sim/standin
modprobe gpio-sim
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
mkdir "$SIM"
i=0
for spec in pinctrl-rp1:54 gpio-brcmstb@107d508500:32 gpio-brcmstb@107d517c00:32 \
            7d517c00.gpio:6 7d508500.gpio:4; do
    mkdir "$SIM/bank$i"
    echo "${spec%:*}" > "$SIM/bank$i/label"
    echo "${spec#*:}" > "$SIM/bank$i/num_lines"
    i=$((i + 1))
done
echo 1 > "$SIM/live"
udevadm settle  # the gpio group and mode (the stand-in's copy of sys-mods' rule)
for bank in "$SIM"/bank*; do
    echo "$(cat "$bank/chip_name") $(cat "$bank/label") $(cat "$SIM/dev_name")"
done
