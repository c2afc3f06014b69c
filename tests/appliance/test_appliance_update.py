"""A/B updates (image-build/update/, bundle.sh): RAUC's own tooling validates both
system configurations and verifies a bundle built by bundle.sh; the tryboot backend,
the version handler and the update boot test's judge run for real on scratch files.
The boot itself (install, trial, mark-good, rollback) runs in `make test-update`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from appliance_support import IMAGE_BUILD, SYSTEMD, need, run

UPDATE = IMAGE_BUILD / "update"
CONFS = ["system-standin.conf", "system-pi4.conf"]
TRYBOOT = UPDATE / "rauc-tryboot"
PRE_INSTALL = UPDATE / "rauc-pre-install"


def conf_value(conf: Path, section: str, key: str) -> str:
    current = ""
    for line in conf.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    raise KeyError(f"{conf.name}: no {key} in [{section}]")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("openssl", "openssl")
    out = tmp_path_factory.mktemp("keys") / "k"
    subprocess.run(["sh", str(UPDATE / "dev-keys.sh"), str(out)], check=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Path:
    """A bundle made by bundle.sh from a small root tree, as make bundle makes one."""
    need("rauc", "rauc")
    need("mksquashfs", "squashfs-tools")
    need("mke2fs", "e2fsprogs")
    base = tmp_path_factory.mktemp("bundle")
    root = base / "root"
    (root / "usr/share/clinicam").mkdir(parents=True)
    (root / "etc/rauc").mkdir(parents=True)
    (root / "usr/share/clinicam/image-version").write_text("2.1.0\n")
    (root / "etc/rauc/system.conf").write_text((UPDATE / "system-standin.conf").read_text())
    (root / "noise").write_bytes(os.urandom(1 << 16))  # a squashfs must exceed 4 KiB
    out = base / "station.raucb"
    env = dict(os.environ, CLINICAM_UPDATE_CERT=str(keys / "signing.pem"),
               CLINICAM_UPDATE_KEY=str(keys / "signing.key"), CLINICAM_UPDATE_KEYRING=str(keys / "ca.pem"))
    result = subprocess.run(["sh", str(IMAGE_BUILD / "bundle.sh"), "--rootfs", str(root), "--out", str(out),
                             "--size", "4"], env=env, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def make_bundle(keys: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLINICAM_UPDATE_CERT=str(keys / "signing.pem"),
               CLINICAM_UPDATE_KEY=str(keys / "signing.key"), CLINICAM_UPDATE_KEYRING=str(keys / "ca.pem"))
    return subprocess.run(["sh", str(IMAGE_BUILD / "bundle.sh"), *args], env=env, capture_output=True, text=True,
                          check=False, timeout=120)


def pi_root(base: Path) -> Path:
    """A small release-like root: the Pi's system.conf and a /boot/firmware."""
    root = base / "pi-root"
    (root / "usr/share/clinicam").mkdir(parents=True)
    (root / "etc/rauc").mkdir(parents=True)
    (root / "boot/firmware/overlays").mkdir(parents=True)
    (root / "usr/share/clinicam/image-version").write_text("2.2.0\n")
    (root / "etc/rauc/system.conf").write_text((UPDATE / "system-pi4.conf").read_text())
    (root / "boot/firmware/config.txt").write_text("[all]\narm_64bit=1\n")
    (root / "boot/firmware/cmdline.txt").write_text("console=serial0,115200 root=PARTLABEL=rootfs-a rootwait\n")
    (root / "boot/firmware/kernel8.img").write_bytes(os.urandom(1 << 16))
    (root / "boot/firmware/overlays/disable-bt.dtbo").write_bytes(b"dtbo")
    (root / "noise").write_bytes(os.urandom(1 << 16))
    return root


@pytest.fixture(scope="module")
def pi_bundle(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Path:
    need("rauc", "rauc")
    need("mkfs.vfat", "dosfstools")
    need("mcopy", "mtools")
    base = tmp_path_factory.mktemp("pi-bundle")
    out = base / "pi.raucb"
    result = make_bundle(keys, "--rootfs", str(pi_root(base)), "--out", str(out), "--size", "4", "--boot-size", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "root + boot slot" in result.stdout
    return out


def test_pi_bundle_carries_the_boot_slot(pi_bundle: Path, keys: Path, tmp_path: Path) -> None:
    """The release's bundle: rootfs.ext4 and boot.vfat, both checked against the Pi's
    system.conf by RAUC; boot.vfat holds the root's /boot/firmware, the slot's size."""
    conf = UPDATE / "system-pi4.conf"
    result = rauc_info(conf, keys / "ca.pem", pi_bundle)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["compatible"] == "clinicam-station-pi4" and info["version"] == "2.2.0"
    images = {slot: image["filename"] for entry in info["images"] for slot, image in entry.items()}
    assert images == {"rootfs": "rootfs.ext4", "boot": "boot.vfat"}
    # Each image's slot class exists in the Pi's config (RAUC installs by class).
    assert "[slot.boot.0]" in conf.read_text() and "[slot.rootfs.0]" in conf.read_text()
    out = tmp_path / "x"
    extracted = run("rauc", f"--conf={conf}", f"--keyring={keys / 'ca.pem'}", "extract", str(pi_bundle), str(out))
    assert extracted.returncode == 0, extracted.stderr
    vfat = out / "boot.vfat"
    assert vfat.stat().st_size == 8 * 1048576
    listing = run("mdir", "-/", "-b", "-i", str(vfat), "::")
    names = {line.rsplit("/", 1)[-1] for line in listing.stdout.split()}
    assert {"config.txt", "cmdline.txt", "kernel8.img", "disable-bt.dtbo"} <= names, listing.stdout


def test_standin_bundle_has_no_boot_image_and_refuses_one(bundle: Path, keys: Path, tmp_path: Path) -> None:
    info = json.loads(rauc_info(UPDATE / "system-standin.conf", keys / "ca.pem", bundle).stdout)
    assert [list(entry) for entry in info["images"]] == [["rootfs"]]
    root = pi_root(tmp_path)
    (root / "etc/rauc/system.conf").write_text((UPDATE / "system-standin.conf").read_text())
    result = make_bundle(keys, "--rootfs", str(root), "--out", str(tmp_path / "s.raucb"),
                         "--boot", str(root / "boot/firmware"))
    assert result.returncode != 0 and "has no [slot.boot.N]" in result.stderr


def test_pi_bundle_needs_a_real_boot_partition(keys: Path, tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    (root / "boot/firmware/cmdline.txt").unlink()
    result = make_bundle(keys, "--rootfs", str(root), "--out", str(tmp_path / "p.raucb"), "--boot-size", "8")
    assert result.returncode != 0 and "cmdline.txt missing" in result.stderr
    assert not (tmp_path / "p.raucb").exists()


def rauc_info(conf: Path, keyring: Path, bundle: Path) -> subprocess.CompletedProcess[str]:
    return run("rauc", f"--conf={conf}", f"--keyring={keyring}", "info", "--output-format=json", str(bundle))


@pytest.mark.parametrize("name", CONFS)
def test_rauc_accepts_the_system_config(name: str, keys: Path, bundle: Path) -> None:
    # rauc info loads and validates the whole system.conf before it reads the bundle.
    result = rauc_info(UPDATE / name, keys / "ca.pem", bundle)
    assert result.returncode == 0, result.stderr


def test_rauc_rejects_a_broken_system_config(tmp_path: Path, keys: Path, bundle: Path) -> None:
    # Positive control for the check above: RAUC names the bad key.
    broken = tmp_path / "system.conf"
    broken.write_text((UPDATE / "system-standin.conf").read_text().replace("bootloader=custom", "bootloader=tryboot"))
    result = rauc_info(broken, keys / "ca.pem", bundle)
    assert result.returncode != 0 and "Unsupported bootloader 'tryboot'" in result.stderr


@pytest.mark.parametrize("name", CONFS)
def test_system_config_layout(name: str) -> None:
    conf = UPDATE / name
    assert conf_value(conf, "system", "bootloader") == "custom"
    assert conf_value(conf, "handlers", "bootloader-custom-backend") == "/usr/lib/clinicam/rauc-tryboot"
    assert conf_value(conf, "handlers", "pre-install") == "/usr/lib/clinicam/rauc-pre-install"
    assert conf_value(conf, "system", "bundle-formats") == "-plain"
    assert conf_value(conf, "keyring", "path") == "/etc/rauc/keyring.pem"
    assert conf_value(conf, "keyring", "check-purpose") == "codesign"
    # Two root slots A/B on partitions named like the release's; never the persistent one.
    assert conf_value(conf, "slot.rootfs.0", "bootname") == "A"
    assert conf_value(conf, "slot.rootfs.1", "bootname") == "B"
    assert conf_value(conf, "slot.rootfs.0", "device") == "/dev/disk/by-partlabel/rootfs-a"
    assert conf_value(conf, "slot.rootfs.1", "device") == "/dev/disk/by-partlabel/rootfs-b"
    assert "clinicam" not in "".join(line for line in conf.read_text().splitlines() if line.startswith("device="))
    assert conf_value(conf, "system", "statusfile").startswith("/var/lib/clinicam/")


def test_bundle_manifest(bundle: Path, keys: Path) -> None:
    result = rauc_info(UPDATE / "system-standin.conf", keys / "ca.pem", bundle)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["compatible"] == conf_value(UPDATE / "system-standin.conf", "system", "compatible")
    assert info["version"] == "2.1.0"
    assert [(i["rootfs"]["filename"]) for i in info["images"]] == ["rootfs.ext4"]
    text = run("rauc", f"--conf={UPDATE / 'system-standin.conf'}", f"--keyring={keys / 'ca.pem'}", "info", str(bundle))
    assert "Bundle Format: \tverity" in text.stdout  # what the stations accept (bundle-formats=-plain)


def test_bundle_from_another_ca_is_refused(bundle: Path, keys: Path) -> None:
    # The same bundle the test above accepts fails against any other keyring.
    result = rauc_info(UPDATE / "system-standin.conf", keys / "rogue-ca.pem", bundle)
    assert result.returncode != 0 and "signature verification failed" in result.stderr


def test_customize_installs_keyring_config_and_units(tmp_path: Path, keys: Path) -> None:
    need("systemd-sysusers", "systemd")
    root, bin_dir, wheels = tmp_path / "root", tmp_path / "bin", tmp_path / "wheels"
    for d in (root / "etc", root / "boot/firmware", bin_dir, wheels):
        d.mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    for tool in ("chroot", "systemctl"):  # recorded, not run: no target binaries here
        (bin_dir / tool).write_text('#!/bin/sh\necho "$(basename "$0") $*" >> "$CALLS"\n')
        (bin_dir / tool).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(tmp_path / "calls"),
               CLINICAM_WHEELHOUSE=str(wheels), CLINICAM_UPDATE_TARGET="standin",
               CLINICAM_UPDATE_KEYRING=str(keys / "ca.pem"), CLINICAM_IMAGE_VERSION="1.4.0")
    result = subprocess.run(["sh", str(IMAGE_BUILD / "hooks/customize.sh"), str(root)], env=env,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "etc/rauc/keyring.pem").read_bytes() == (keys / "ca.pem").read_bytes()
    assert (root / "etc/rauc/system.conf").read_text() == (UPDATE / "system-standin.conf").read_text()
    assert (root / "usr/share/clinicam/image-version").read_text() == "1.4.0\n"
    for tool in ("rauc-tryboot", "rauc-pre-install", "rauc-post-install", "update-install", "update-confirm",
                 "update-fetch"):
        assert os.access(root / "usr/lib/clinicam" / tool, os.X_OK), tool
    assert (root / "usr/lib/systemd/system/update-confirm.service").is_file()
    dropin = (root / "usr/lib/systemd/system/rauc.service.d/10-clinicam.conf").read_text()
    assert "mkdir -p -m 0700 /var/lib/clinicam/rauc" in dropin  # the statusfile's directory
    assert "systemctl --root=" + str(root) + " enable update-confirm.service" in (tmp_path / "calls").read_text()


def test_no_keyring_is_said_loudly(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("chroot", "systemctl"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CLINICAM_UPDATE_KEYRING"}
    (tmp_path / "wheels").mkdir()
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", CLINICAM_WHEELHOUSE=str(tmp_path / "wheels"))
    result = subprocess.run(["sh", str(IMAGE_BUILD / "hooks/customize.sh"), str(root)], env=env,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "will refuse every update bundle" in result.stdout
    assert not (root / "etc/rauc/keyring.pem").exists()


class Firmware:
    """The Pi's boot firmware as test-update.sh emulates it, over a scratch boot dir."""

    def __init__(self, tmp: Path) -> None:
        self.boot, self.cmdline = tmp / "boot", tmp / "cmdline"
        self.boot.mkdir()
        (self.boot / "autoboot.txt").write_text("[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n")
        self.slot = self.start()

    def backend(self, *args: str) -> str:
        env = dict(os.environ, CLINICAM_BOOT_DIR=str(self.boot), CLINICAM_CMDLINE=str(self.cmdline))
        result = subprocess.run(["sh", str(TRYBOOT), *args], env=env, capture_output=True, text=True,
                                check=False, timeout=10)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def start(self) -> str:
        """Boot: [tryboot] once if the flag is armed (consumed), else [all]."""
        section = "all"
        if (self.boot / "tryboot.flag").exists():
            section = "tryboot"
            (self.boot / "tryboot.flag").unlink()
        current, part = "", ""
        for line in (self.boot / "autoboot.txt").read_text().splitlines():
            if line.startswith("["):
                current = line.strip("[]")
            elif current == section and line.startswith("boot_partition="):
                part = line.split("=")[1]
        self.slot = {"2": "A", "3": "B"}[part]
        self.cmdline.write_text(f"root=/dev/vda{part} rauc.slot={self.slot} ro\n")
        return self.slot


def install(fw: Firmware, target: str) -> None:
    """What RAUC does around writing a slot: mark it bad, write, make it primary."""
    fw.backend("set-state", target, "bad")
    fw.backend("set-primary", target)


def test_tryboot_good_update_is_committed(tmp_path: Path) -> None:
    fw = Firmware(tmp_path)
    assert (fw.slot, fw.backend("get-primary"), fw.backend("get-state", "A")) == ("A", "A", "good")
    install(fw, "B")
    assert fw.backend("get-primary") == "B"  # next boot: the trial
    assert fw.start() == "B"
    fw.backend("set-state", "B", "good")  # rauc status mark-good
    assert "boot_partition=3" in (fw.boot / "autoboot.txt").read_text().split("[tryboot]")[0]
    assert (fw.backend("get-state", "B"), fw.backend("get-state", "A")) == ("good", "good")
    assert fw.start() == "B"  # committed: every later boot


def test_tryboot_unconfirmed_trial_returns_to_the_old_slot(tmp_path: Path) -> None:
    fw = Firmware(tmp_path)
    install(fw, "B")
    assert fw.start() == "B"  # the trial boot; nobody marks it good (crash loop, hang)
    assert fw.backend("get-primary") == "A"  # the flag was one-shot
    assert fw.start() == "A"
    assert fw.backend("get-state", "B") == "bad"


def test_tryboot_marking_a_trial_bad_disarms_it(tmp_path: Path) -> None:
    fw = Firmware(tmp_path)
    install(fw, "B")
    fw.backend("set-state", "B", "bad")
    assert fw.start() == "A"


def test_tryboot_refuses_unknown_slots(tmp_path: Path) -> None:
    fw = Firmware(tmp_path)
    env = dict(os.environ, CLINICAM_BOOT_DIR=str(fw.boot), CLINICAM_CMDLINE=str(fw.cmdline))
    result = subprocess.run(["sh", str(TRYBOOT), "set-primary", "C"], env=env, capture_output=True, text=True,
                            check=False, timeout=10)
    assert result.returncode != 0 and "unknown slot 'C'" in result.stderr


def pre_install(tmp_path: Path, offered: str, running: str, allow: bool = False) -> subprocess.CompletedProcess[str]:
    mount = tmp_path / "bundle"
    mount.mkdir(exist_ok=True)
    (mount / "manifest.raucm").write_text(f"[update]\ncompatible=x\nversion={offered}\n\n[bundle]\nformat=verity\n")
    (tmp_path / "image-version").write_text(running + "\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    if allow:
        (run_dir / "allow-downgrade").write_text("")
    env = dict(os.environ, RAUC_BUNDLE_MOUNT_POINT=str(mount), CLINICAM_UPDATE_RUN=str(run_dir),
               CLINICAM_IMAGE_VERSION_FILE=str(tmp_path / "image-version"))
    return subprocess.run(["sh", str(PRE_INSTALL)], env=env, capture_output=True, text=True, check=False, timeout=10)


def test_pre_install_refuses_a_downgrade(tmp_path: Path) -> None:
    result = pre_install(tmp_path, "1.9.0", "1.10.0")  # version order, not string order
    assert result.returncode == 1
    assert "<< error update refused: version 1.9.0 is older than the running 1.10.0" in result.stdout


def test_pre_install_accepts_newer_and_same(tmp_path: Path) -> None:
    assert pre_install(tmp_path, "1.10.0", "1.9.0").returncode == 0
    assert pre_install(tmp_path, "1.9.0", "1.9.0").returncode == 0


def test_pre_install_allowed_downgrade_is_one_shot(tmp_path: Path) -> None:
    assert pre_install(tmp_path, "1.0.0", "2.0.0", allow=True).returncode == 0
    assert not (tmp_path / "run/allow-downgrade").exists()
    assert pre_install(tmp_path, "1.0.0", "2.0.0").returncode == 1


def test_update_confirm_unit_verifies(analyze_root: Path) -> None:
    units = analyze_root / "usr/lib/systemd/system"
    (units / "update-confirm.service").write_text((SYSTEMD / "update-confirm.service").read_text())
    exe = analyze_root / "usr/lib/clinicam/update-confirm"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    result = run("systemd-analyze", "verify", f"--root={analyze_root}", "update-confirm.service")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def judge() -> object:
    sys.path.insert(0, str(IMAGE_BUILD / "standin"))
    try:
        spec = importlib.util.spec_from_file_location("parse_update_console",
                                                      IMAGE_BUILD / "standin/parse_update_console.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(IMAGE_BUILD / "standin"))


def story(overrides: dict[str, str] | None = None, shas: tuple[str, ...] = ("0123456789abcdef",) * 3) -> str:
    pu = judge()
    lines, ids = [], iter(shas)
    for name in pu.EXPECTED:  # type: ignore[attr-defined]
        status = (overrides or {}).get(name, "INFO" if name in pu.INFO_ONLY else "PASS")  # type: ignore[attr-defined]
        detail = f"sha={next(ids)} files=9" if name.startswith("identity-") else "ok"
        if status != "ABSENT":
            lines.append(f"BOOTCHECK {name} {status} {detail}\r")
    return "\n".join(lines)


def test_update_judge_accepts_the_whole_story(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(story())
    assert judge().main([str(log)]) == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("overrides", [{"rollback-reported": "FAIL"}, {"good-marked-good": "ABSENT"},
                                       {"update-server-other-port": "FAIL"}, {"good-marked-after-connected": "ABSENT"},
                                       {"refuse-bad-signature": "FAIL"}])
def test_update_judge_refuses_a_failed_or_missing_step(tmp_path: Path, overrides: dict[str, str]) -> None:
    log = tmp_path / "console.log"
    log.write_text(story(overrides))
    assert judge().main([str(log)]) == 1  # type: ignore[attr-defined]


def test_update_judge_refuses_a_changed_identity(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(story(shas=("0123456789abcdef", "0123456789abcdef", "fedcba9876543210")))
    assert judge().main([str(log)]) == 1  # type: ignore[attr-defined]
