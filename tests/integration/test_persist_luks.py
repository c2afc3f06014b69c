"""The encrypted persistent partition on real LUKS2 headers and real ext4 images.

cryptsetup, blkid, debugfs and mke2fs all work on image files, so everything but the
dm-crypt mapping itself (``cryptsetup open``, which needs the kernel's device mapper)
runs here for real. The mapping is exercised in the QEMU boot test (make test-image).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from clinicam.common.errors import StorageError
from clinicam.provisioning.persist import erase as persist_erase
from clinicam.provisioning.persist import partition as persist
from clinicam.provisioning.persist.keys import FileKey
from clinicam.provisioning.persist.partition import Layout, State

TOML = b'backend = "sim-persist-marker"\n'
PEM = b"-----BEGIN PRIVATE KEY-----\nsynthetic-test-key\n-----END PRIVATE KEY-----\n"


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool, package in (("cryptsetup", "cryptsetup-bin"), ("debugfs", "e2fsprogs"), ("blkid", "util-linux")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install {package})")


def provisioned_tree(root: Path) -> Path:
    """What a provisioned station's partition holds: config and identity, root:975."""
    etc = root / "etc"
    (etc / "identity").mkdir(parents=True)
    (etc / "station.toml").write_bytes(TOML)
    (etc / "identity" / "device.key").write_bytes(PEM)
    (etc / "identity" / "device.key").chmod(0o600)
    (etc / "link.toml").symlink_to("station.toml")
    if os.geteuid() == 0:
        for path in (etc, etc / "identity", etc / "station.toml"):
            os.chown(path, 0, 975, follow_symlinks=False)
        os.chown(etc / "identity" / "device.key", 975, 975)
    return root


def plain_partition(tmp_path: Path, content: Path | None = None) -> Path:
    image = tmp_path / "persist.img"
    argv = ["mke2fs", "-q", "-t", "ext4", "-L", "clinicam"]
    argv += ["-d", str(content)] if content else []
    subprocess.run([*argv, str(image), "64M"], check=True)
    return image


def luks_partition(tmp_path: Path, key: bytes) -> Path:
    image = tmp_path / "luks.img"
    image.write_bytes(bytes(32 << 20))
    persist.format_luks(image, key)
    return image


def test_probe_tells_the_four_states_apart(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    assert persist.probe(blank) is State.BLANK
    assert persist.probe(plain_partition(tmp_path)) is State.PLAIN
    luks = luks_partition(tmp_path, b"k" * 32)
    assert persist.probe(luks) is State.ENCRYPTED
    subprocess.run(["cryptsetup", "erase", "--batch-mode", str(luks)], check=True)
    assert persist.probe(luks) is State.ERASED


def test_missing_partition_names_the_label(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="labelled 'clinicam'"):
        persist.probe(tmp_path / "nothing")


def test_evacuate_carries_files_owners_and_modes_without_mounting(tmp_path: Path) -> None:
    image = plain_partition(tmp_path, provisioned_tree(tmp_path / "src"))
    out = tmp_path / "out"
    out.mkdir()
    assert persist.evacuate(image, out) == 3
    key = out / "etc" / "identity" / "device.key"
    assert key.read_bytes() == PEM
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert os.readlink(out / "etc" / "link.toml") == "station.toml"
    assert not (out / "lost+found").exists()
    if os.geteuid() == 0:
        assert (key.stat().st_uid, (out / "etc").stat().st_gid) == (975, 975)


def test_the_encryption_steps_leave_no_plaintext_and_round_trip(tmp_path: Path) -> None:
    # The first-boot path up to the mapping: carry out, zero, format, refill.
    image = plain_partition(tmp_path, provisioned_tree(tmp_path / "src"))
    content = tmp_path / "content"
    content.mkdir()
    persist.evacuate(image, content)
    persist.skeleton(content)
    _source, key = persist.new_key([FileKey(tmp_path / "boot" / "persist.key")])
    persist.zero(image)
    persist.format_luks(image, key)
    raw = image.read_bytes()
    assert b"PRIVATE KEY" not in raw and b"sim-persist-marker" not in raw
    assert persist.probe(image) is State.ENCRYPTED
    assert persist.opens(image, key) and not persist.opens(image, bytes(32))
    meta = persist.header(image)
    assert meta["segments"]["0"]["encryption"] == "aes-xts-plain64"
    assert meta["keyslots"]["0"]["kdf"]["type"] == "pbkdf2"
    # The inner file system made from the carried files holds them intact.
    inner = tmp_path / "inner.img"
    inner.write_bytes(bytes(16 << 20))
    persist.make_filesystem(inner, content)
    back = tmp_path / "back"
    back.mkdir()
    persist.evacuate(inner, back)
    assert (back / "etc" / "identity" / "device.key").read_bytes() == PEM
    assert "LABEL=\"clinicam-data\"" in subprocess.run(["blkid", str(inner)], capture_output=True, text=True).stdout


def test_unlock_refuses_to_touch_a_partition_without_dm_crypt(tmp_path: Path) -> None:
    image = plain_partition(tmp_path, provisioned_tree(tmp_path / "src"))
    before = image.read_bytes()
    layout = Layout(device=image, mapping="clinicam-test-absent", scratch=tmp_path / "scratch")
    with pytest.raises(StorageError, match=r"no dm-crypt.*left as it is"):
        persist.unlock(layout, [FileKey(tmp_path / "persist.key")], dm_ready=lambda: False)
    assert image.read_bytes() == before
    assert not (tmp_path / "persist.key").exists()


def test_unlock_refuses_a_foreign_signature(tmp_path: Path) -> None:
    image = tmp_path / "vfat.img"
    subprocess.run(["mkfs.vfat", "-C", str(image), "4096"], check=False, capture_output=True)
    if not image.exists():
        pytest.skip("mkfs.vfat not installed (apt-get install dosfstools)")
    layout = Layout(device=image, mapping="clinicam-test-absent")
    with pytest.raises(StorageError, match="neither ext4 nor LUKS2: refusing"):
        persist.unlock(layout, [FileKey(tmp_path / "persist.key")], dm_ready=lambda: True)


def test_lost_key_is_a_clear_error_not_a_reformat(tmp_path: Path) -> None:
    image = luks_partition(tmp_path, b"a" * 32)
    wrong = FileKey(tmp_path / "persist.key")
    wrong.create()
    layout = Layout(device=image, mapping="clinicam-test-absent")
    with pytest.raises(StorageError, match=r"no key opens.*tried: file.*clinicam persist erase --yes"):
        persist.unlock(layout, [wrong], dm_ready=lambda: True)
    assert persist.probe(image) is State.ENCRYPTED and persist.opens(image, b"a" * 32)


def test_erase_destroys_keyslots_and_key_and_verifies(tmp_path: Path) -> None:
    file_key = FileKey(tmp_path / "boot" / "persist.key")
    key = file_key.create()
    image = luks_partition(tmp_path, key)
    layout = Layout(device=image, mapping="clinicam-test-absent")
    record = persist_erase.erase(layout, [file_key])
    assert record.verified and record.before == State.ENCRYPTED.value
    assert any("every keyslot wiped" in a for a in record.actions)
    assert not file_key.path.exists()
    assert persist.probe(image) is State.ERASED
    assert persist.keyslots(image) == []
    assert not persist.opens(image, key)  # the remembered key opens nothing
    assert "verified: yes" in record.lines()


def test_erase_of_an_unencrypted_partition_zeroes_it(tmp_path: Path) -> None:
    image = plain_partition(tmp_path, provisioned_tree(tmp_path / "src"))
    record = persist_erase.erase(Layout(device=image, mapping="clinicam-test-absent"), [])
    assert record.verified and persist.probe(image) is State.BLANK
    assert image.read_bytes().count(0) == image.stat().st_size


def test_status_reads_no_secret(tmp_path: Path) -> None:
    file_key = FileKey(tmp_path / "persist.key")
    key = file_key.create()
    image = luks_partition(tmp_path, key)
    info = persist_erase.status(Layout(device=image, mapping="clinicam-test-absent"), [file_key])
    assert info["state"] == State.ENCRYPTED.value and info["keyslots"] == "1"
    assert info["cipher"] == "aes-xts-plain64" and info["key-sources"] == "file"
    assert key.hex() not in repr(info)


def test_cli_erase_without_yes_explains_and_changes_nothing(tmp_path: Path) -> None:
    from clinicam.tools.cli import main

    file_key = FileKey(tmp_path / "persist.key")
    key = file_key.create()
    image = luks_partition(tmp_path, key)
    assert main(["persist", "erase", "--device", str(image), "--key-file", str(file_key.path)]) == 2
    assert persist.opens(image, key) and file_key.path.exists()


def test_cli_status_then_erase_prints_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from clinicam.tools.cli import main

    file_key = FileKey(tmp_path / "persist.key")
    image = luks_partition(tmp_path, file_key.create())
    common = ["--device", str(image), "--key-file", str(file_key.path), "--mapping", "clinicam-test-absent"]
    assert main(["persist", "status", "--json", *common]) == 0
    assert '"keyslots": "1"' in capsys.readouterr().out
    assert main(["persist", "erase", "--yes", *common]) == 0
    out = capsys.readouterr().out
    assert "erase: verified: yes" in out and "overwritten and removed" in out
    assert persist.probe(image) is State.ERASED
