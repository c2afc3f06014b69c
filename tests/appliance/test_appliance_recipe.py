"""The image recipe: overlay files, firewall, and the customize hook run for real on a
scratch root (with chroot and systemctl recorded instead of executed), so what it
installs, enables, masks and writes on the kernel command line is checked, not grepped."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from appliance_support import CUSTOMIZE, IMAGE_BUILD, OVERLAY, REPO, SYSTEMD, need, run

RULESET = OVERLAY / "etc" / "nftables.conf"
# A header followed by a base64 body line: a real key, not code that mentions one.
PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z0-9 ]+ )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40,}")
RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >> "$CALLS"\n'


def settings(path: Path) -> dict[str, str]:
    """``key=value`` lines of a systemd .conf or sysctl file, last one wins."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_journal_is_volatile() -> None:
    journald = settings(OVERLAY / "etc/systemd/journald.conf.d/10-clinicam.conf")
    assert journald["Storage"] == "volatile"


def test_no_core_dumps_anywhere() -> None:
    assert settings(OVERLAY / "etc/systemd/system.conf.d/10-clinicam.conf")["DefaultLimitCORE"] == "0"
    assert settings(OVERLAY / "etc/systemd/coredump.conf.d/10-clinicam.conf")["Storage"] == "none"
    sysctl = settings(OVERLAY / "etc/sysctl.d/10-clinicam.conf")
    assert sysctl["kernel.core_pattern"] == "|/bin/false"
    assert sysctl["fs.suid_dumpable"] == "0"


def test_hardware_watchdog_is_petted_by_pid1() -> None:
    manager = settings(OVERLAY / "etc/systemd/system.conf.d/10-clinicam.conf")
    assert manager["RuntimeWatchdogSec"] not in ("", "0", "off")


def test_fstab_root_read_only_and_no_swap() -> None:
    entries = [
        line.split()
        for line in (OVERLAY / "etc/fstab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    by_mount = {e[1]: e for e in entries}
    assert "ro" in by_mount["/"][3].split(",")
    assert not [e for e in entries if e[2] == "swap"]
    persistent = by_mount["/var/lib/clinicam"]
    assert {"nodev", "nosuid", "noexec"} <= set(persistent[3].split(","))


def test_fstab_persistent_partition_is_the_encrypted_mapping() -> None:
    # The mount is of the dm-crypt mapping, never of the raw partition, and it pulls
    # in the unit that encrypts (first boot) and unlocks (every boot) it.
    entries = [line.split() for line in (OVERLAY / "etc/fstab").read_text().splitlines() if line.startswith("/dev/")]
    persistent = next(e for e in entries if e[1] == "/var/lib/clinicam")
    assert persistent[0] == "/dev/mapper/clinicam"
    assert "x-systemd.requires=persist-clinicam.service" in persistent[3].split(",")
    assert "LABEL=clinicam " not in (OVERLAY / "etc/fstab").read_text()


def test_station_uid_is_the_firewalls() -> None:
    sysusers = (SYSTEMD / "clinicam.sysusers.conf").read_text()
    uid = re.search(r"^u clinicam\s+(\d+)", sysusers, re.M)
    nft = re.search(r"define STATION_UID = (\d+)", RULESET.read_text())
    assert uid and nft and uid.group(1) == nft.group(1)
    assert re.search(r"meta skuid \$STATION_UID", RULESET.read_text())


def test_nft_accepts_the_ruleset(tmp_path: Path) -> None:
    nft = need("nft", "nftables")
    if os.geteuid() != 0:
        pytest.skip("nft -c needs CAP_NET_ADMIN (run as root, as make test does)")
    ok = run(nft, "-c", "-f", str(RULESET))
    assert ok.returncode == 0, ok.stderr
    # Positive control: nft -c does reject a broken rule set.
    broken = tmp_path / "broken.nft"
    broken.write_text(RULESET.read_text().replace("policy drop;", "policy dorp;", 1))
    assert run(nft, "-c", "-f", str(broken)).returncode != 0


def test_nft_accepts_what_apply_network_fills_in(tmp_path: Path) -> None:
    """The ruleset plus apply-network's script (provisioning/netallow.py), checked by nft."""
    from clinicam.provisioning import netallow

    nft = need("nft", "nftables")
    if os.geteuid() != 0:
        pytest.skip("nft -c needs CAP_NET_ADMIN (run as root, as make test does)")
    server = netallow.UpdateServer("https://10.0.2.2:8443", ("10.0.2.2", "fd00::7"), 8443)
    script = netallow.nft_script(netallow.Allowed(["10.0.2.2", "192.0.2.0/28", "fd00::5"], 18883, server))
    both = tmp_path / "both.nft"
    both.write_text(RULESET.read_text() + script)
    ok = run(nft, "-c", "-f", str(both))
    assert ok.returncode == 0, ok.stderr
    # Root reaches the update server's address and port only; the station its broker's.
    text = RULESET.read_text()
    assert "meta skuid 0 ip daddr . tcp dport @update4 accept" in text
    assert "meta skuid $STATION_UID ip daddr . tcp dport @broker4 accept" in text
    # Positive control: a set the ruleset does not have is refused.
    both.write_text(RULESET.read_text() + script.replace("update4", "updates4"))
    assert run(nft, "-c", "-f", str(both)).returncode != 0


def test_firewall_drops_by_default() -> None:
    text = RULESET.read_text()
    for chain in ("input", "forward", "output"):
        body = re.search(rf"chain {chain} \{{(.*?)\}}", text, re.S)
        assert body and "policy drop;" in body.group(1), chain


def scripts() -> list[Path]:
    """Every shell script of the recipe (by suffix or shebang); build output (work/,
    which holds a whole root file system during a boot test) is never entered."""
    found = []
    for top, dirs, files in os.walk(IMAGE_BUILD):
        dirs[:] = [d for d in dirs if not (top == str(IMAGE_BUILD) and d == "work")]
        found += [Path(top) / f for f in files]
    return sorted(p for p in found if p.suffix == ".sh" or p.read_bytes().startswith(b"#!/bin/sh"))


@pytest.mark.parametrize("script", scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(script: Path) -> None:
    shellcheck = need("shellcheck", "shellcheck")
    result = run(shellcheck, "-x", str(script))
    assert result.returncode == 0, result.stdout


def test_no_private_key_committed(tmp_path: Path) -> None:
    planted = tmp_path / "planted.pem"
    planted.write_bytes(b"-----BEGIN EC PRIVATE KEY-----\n" + b"A" * 64 + b"\n-----END EC PRIVATE KEY-----\n")
    assert PRIVATE_KEY.search(planted.read_bytes())  # positive control for the pattern
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    offenders = [
        name.decode()
        for name in listed
        if name and (REPO / name.decode()).is_file() and PRIVATE_KEY.search((REPO / name.decode()).read_bytes())
    ]
    assert offenders == []


@pytest.fixture(scope="module")
def customized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Run customize.sh on a scratch root: real cp/install/systemd-sysusers, recorded
    chroot and systemctl (no target binaries to run, no host units to touch)."""
    need("systemd-sysusers", "systemd")
    base = tmp_path_factory.mktemp("customize")
    root, bin_dir, wheels = base / "root", base / "bin", base / "wheels"
    for d in (root / "etc", root / "boot/firmware", bin_dir, wheels):
        d.mkdir(parents=True)
    (root / "boot/firmware/cmdline.txt").write_text("console=tty1 root=LABEL=rootfs rootwait\n")
    (root / "boot/firmware/config.txt").write_text("arm_64bit=1\n")
    (root / "boot/firmware/ssh").write_text("")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    for tool in ("chroot", "systemctl"):
        (bin_dir / tool).write_text(RECORDER)
        (bin_dir / tool).chmod(0o755)
    calls = base / "calls"
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        CALLS=str(calls),
        CLINICAM_WHEELHOUSE=str(wheels),
        CLINICAM_IP_ALLOW="192.0.2.10",
    )
    result = subprocess.run(
        ["sh", str(CUSTOMIZE), str(root)], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return root, calls.read_text().splitlines()


def test_customize_kernel_cmdline(customized: tuple[Path, list[str]]) -> None:
    root, _ = customized
    line = (root / "boot/firmware/cmdline.txt").read_text()
    assert line.count("\n") == 1  # cmdline.txt must stay one line
    params = line.split()
    assert "init_on_free=1" in params
    assert "overlayroot=tmpfs:recurse=0" in params
    assert (root / "usr/share/clinicam/kernel-cmdline").read_text().split() == params[3:]


def test_customize_masks_ssh_getty_bluetooth_swap(customized: tuple[Path, list[str]]) -> None:
    root, calls = customized
    masked = {w for c in calls if c.startswith("systemctl") and " mask " in c for w in c.split()}
    assert {
        "ssh.service",
        "ssh.socket",
        "getty@.service",
        "autovt@.service",
        "serial-getty@.service",
        "bluetooth.service",
        "hciuart.service",
        "swap.target",
        "dphys-swapfile.service",
    } <= masked
    assert not (root / "boot/firmware/ssh").exists()
    assert "dtoverlay=disable-bt" in (root / "boot/firmware/config.txt").read_text()


def test_customize_enables_station_and_firewall(customized: tuple[Path, list[str]]) -> None:
    _, calls = customized
    enabled = {w for c in calls if c.startswith("systemctl") and " enable " in c for w in c.split()}
    assert {"clinicam-station.service", "nftables.service", "systemd-timesyncd.service"} <= enabled


def test_customize_installs_wheel_offline_in_system_site_venv(
    customized: tuple[Path, list[str]],
) -> None:
    _, calls = customized
    venv = [c for c in calls if " venv " in c]
    pip = [c for c in calls if "/pip install" in c]
    assert venv and "--system-site-packages" in venv[0].split()
    assert pip and "--no-index" in pip[0].split() and "-c" in pip[0].split()


def test_customize_installs_units_users_and_layout(customized: tuple[Path, list[str]]) -> None:
    root, _ = customized
    units = root / "usr/lib/systemd/system"
    assert (units / "clinicam-station.service").is_file()
    assert (units / "persist-clinicam.service").is_file()
    assert (units / "clinicam-.service.d/10-sandbox.conf").is_file()
    assert "IPAddressAllow=192.0.2.10" in (units / "clinicam-station.service.d/50-network.conf").read_text()
    assert re.search(r"^clinicam:x:975:", (root / "etc/passwd").read_text(), re.M)
    assert os.readlink(root / "etc/clinicam") == "/var/lib/clinicam/etc"
    assert settings(root / "etc/systemd/journald.conf.d/10-clinicam.conf")["Storage"] == "volatile"
    assert not list(root.glob("etc/ssh/ssh_host_*"))


def test_release_layer_installs_every_listed_package() -> None:
    # packages/*.txt are the lists of record; the rpi-image-gen layer must carry them.
    layer = (IMAGE_BUILD / "rpi-image-gen/layer/clinicam-appliance.yaml").read_text()
    in_layer = set(re.findall(r"^    - (\S+)$", layer, re.M))
    for name in ("debian.txt", "rpi.txt"):
        listed = {
            line.strip() for line in (IMAGE_BUILD / "packages" / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        assert listed <= in_layer, f"{name}: {sorted(listed - in_layer)} missing from the layer"
    assert "cryptsetup-bin" in in_layer


def test_release_layout_has_the_partitions_fstab_mounts() -> None:
    layout = (IMAGE_BUILD / "rpi-image-gen/image/clinicam/genimage.cfg.in").read_text()
    labels = set(re.findall(r'label = "([^"]+)"', layout))
    assert labels == {"bootfs", "boot-a", "boot-b", "rootfs", "clinicam"}
    # A/B (image-build/README.md, "Updates"): GPT partition names are what RAUC's slots
    # and each slot's cmdline.txt use; the persistent partition is never a slot.
    assert re.findall(r"^   partition (\S+) \{", layout, re.M) == [
        "bootfs", "boot-a", "boot-b", "rootfs-a", "rootfs-b", "clinicam"]
    assert 'partition-table-type = "gpt"' in layout
