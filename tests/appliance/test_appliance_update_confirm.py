"""update-confirm (image-build/update/update-confirm) on a trial boot, with stand-ins for
what only a booted appliance has: systemctl answers from a timeline of the station's
state and status line, rauc and mount record their calls, and sleep advances the
uptime (the clock is the timeline's, no real waiting). The real boot test (make
test-update) runs it under systemd with a station connected to a real broker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from appliance_support import IMAGE_BUILD

CONFIRM = IMAGE_BUILD / "update" / "update-confirm"

SYSTEMCTL = """#!/bin/sh
# systemctl show -P PROP UNIT: the last timeline line at or before the uptime.
# Timeline lines: SECONDS STATE NRESTARTS STATUS...
d=$(dirname "$0")
case $1 in
    show) now=$(cut -d. -f1 "$d/uptime")
          line=$(awk -v now="$now" '$1 <= now {l = $0} END {print l}' "$d/timeline")
          case $3 in
              ActiveState) echo "$line" | cut -d' ' -f2 ;;
              NRestarts) echo "$line" | cut -d' ' -f3 ;;
              StatusText) echo "$line" | cut -d' ' -f4- ;;
          esac ;;
    *) echo "systemctl $* at $(cut -d. -f1 "$d/uptime")" >> "$d/calls" ;;
esac
"""
RAUC = '#!/bin/sh\necho "rauc $* at $(cut -d. -f1 "$(dirname "$0")/uptime")" >> "$(dirname "$0")/calls"\n'
MOUNT = "#!/bin/sh\nexit 0\n"
SLEEP = '#!/bin/sh\nd=$(dirname "$0"); echo "$(( $(cut -d. -f1 "$d/uptime") + $1 )).00 0.00" > "$d/uptime"\n'


def confirm(tmp: Path, timeline: str, start: int = 5) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run update-confirm on a trial boot of slot B (committed: A) of version 2.0.0."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, text in (("systemctl", SYSTEMCTL), ("rauc", RAUC), ("mount", MOUNT), ("sleep", SLEEP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "timeline").write_text(timeline)
    (bin_dir / "uptime").write_text(f"{start}.00 0.00\n")
    boot = tmp / "boot"
    (boot / "clinicam").mkdir(parents=True)
    (boot / "autoboot.txt").write_text("[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n")
    (boot / "clinicam/pending-update").write_text("slot=B version=2.0.0 from=1.0.0\n")
    (tmp / "cmdline").write_text("root=/dev/vda3 rauc.slot=B ro\n")
    (tmp / "update.conf").write_text("DEADLINE_S=300\nSETTLE_S=30\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CLINICAM_BOOT_DIR=str(boot),
               CLINICAM_UPDATE_RUN=str(tmp / "run"), CLINICAM_CMDLINE=str(tmp / "cmdline"),
               CLINICAM_UPTIME=str(bin_dir / "uptime"), CLINICAM_UPDATE_SETTINGS=str(tmp / "update.conf"),
               CLINICAM_RAUC_CONF=str(tmp / "system.conf"))
    result = subprocess.run(["sh", str(CONFIRM)], env=env, capture_output=True, text=True, check=False, timeout=60)
    calls = (bin_dir / "calls").read_text().splitlines() if (bin_dir / "calls").exists() else []
    return result, calls


def at(calls: list[str], prefix: str) -> int:
    """The uptime of the first recorded call starting with prefix."""
    return next(int(c.rsplit(" at ", 1)[1]) for c in calls if c.startswith(prefix))


def test_ready_and_connected_station_is_committed(tmp_path: Path) -> None:
    result, calls = confirm(tmp_path, "0 activating 0 \n20 active 0 idle; 0 pending; online\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c.split(" at ")[0] for c in calls] == [f"rauc --conf={tmp_path / 'system.conf'} status mark-good"]
    assert at(calls, "rauc") >= 20 + 30  # connected, then steady for SETTLE_S
    assert (tmp_path / "run/result").read_text() == "updated 2.0.0\n"
    assert not (tmp_path / "boot/clinicam/pending-update").exists()
    assert "ready and connected (idle; 0 pending; online)" in result.stdout


def test_commit_waits_for_the_broker_connection(tmp_path: Path) -> None:
    """READY long before the broker answers: the slot is committed only once connected."""
    timeline = "0 activating 0 \n20 active 0 idle; 0 pending; offline\n140 active 0 idle; 0 pending; online\n"
    result, calls = confirm(tmp_path, timeline)
    assert result.returncode == 0, result.stdout + result.stderr
    assert at(calls, "rauc") >= 140 + 30
    assert "not connected to its broker yet (status 'idle; 0 pending; offline')" in result.stdout
    assert (tmp_path / "run/result").read_text() == "updated 2.0.0\n"


def test_a_station_that_never_connects_is_rolled_back(tmp_path: Path) -> None:
    """Active (READY, selftest passed) but offline until the deadline: marked bad, reboot."""
    result, calls = confirm(tmp_path, "0 activating 0 \n20 active 0 idle; 0 pending; offline\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c.split(" at ")[0] for c in calls] == [f"rauc --conf={tmp_path / 'system.conf'} status mark-bad",
                                                  "systemctl reboot"]
    assert at(calls, "rauc") >= 300
    assert "not healthy 300s after boot (state active, status 'idle; 0 pending; offline')" in result.stdout
    assert not (tmp_path / "run/result").exists()  # reported after the rollback, on the old slot
    assert (tmp_path / "boot/clinicam/pending-update").exists()


@pytest.mark.parametrize(("timeline", "why"), [
    ("0 activating 0 \n30 failed 5 \n", "crash loop: 5 restarts"),
    # Connected, but restarted (watchdog, a crash systemd recovers from) every 20 s,
    # within the settle time: the wait starts over each time, the deadline comes first.
    ("".join(f"{t} active {t // 20} idle; 0 pending; online\n" for t in range(0, 400, 20)), "not healthy 300s"),
])
def test_crash_loop_or_restart_is_rolled_back(tmp_path: Path, timeline: str, why: str) -> None:
    result, calls = confirm(tmp_path, timeline)
    assert why in result.stdout
    assert [c.split(" at ")[0] for c in calls][-1] == "systemctl reboot"
    assert not any("mark-good" in c for c in calls)
