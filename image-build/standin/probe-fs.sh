#!/bin/sh
# Sandbox probe for the CI stand-in (clinicam-probe-fs.service): runs as root inside
# the clinicam sandbox drop-in and reports whether each write succeeded. Root, so that
# a denial is the sandbox's (read-only mounts), not file permissions.
for path in /etc /var/lib/clinicam /var/tmp /opt/clinicam /root; do
    if ( : > "$path/.probe" ) 2>/dev/null; then
        rm -f "$path/.probe"; echo "PROBE write:$path allowed"
    else
        echo "PROBE write:$path denied"
    fi
done
if ( : > "$RUNTIME_DIRECTORY/probe" ) 2>/dev/null; then
    echo "PROBE write:runtime allowed"
else
    echo "PROBE write:runtime denied"
fi
