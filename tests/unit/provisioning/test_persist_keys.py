"""Key sources of the encrypted persistent partition: the OTP derivation checked
against OpenSSL's HKDF, the OTP tool's interface (the Pi's OTP cannot exist here, so a
script plays ``rpi-otp-private-key`` with its exact interface), and the key file."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from clinicam.common.errors import StorageError
from clinicam.provisioning.persist.keys import HKDF_INFO, FileKey, OtpKey, derive_from_otp, writable
from clinicam.provisioning.persist.partition import new_key

OTP_HEX = "f8dbc7b0a4fcfb1d706e298ac9d0485c2226ce8df7f7596ac77337bd09fbe160"


def fake_otp_tool(tmp_path: Path, key_hex: str, *, programmed: bool = True) -> Path:
    """A stand-in for rpi-otp-private-key: ``-c`` tells whether a key is programmed,
    no argument prints it as hex (as the real script does)."""
    tool = tmp_path / "rpi-otp-private-key"
    tool.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -c ]; then exit {0 if programmed else 1}; fi\n'
        f"echo {key_hex}\n"
    )
    tool.chmod(0o755)
    return tool


def test_otp_derivation_matches_openssl_hkdf() -> None:
    # An independent implementation of RFC 5869 computes the same key.
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    expected = subprocess.run(
        [openssl, "kdf", "-keylen", "32", "-kdfopt", "digest:SHA256", "-kdfopt", f"hexkey:{OTP_HEX}",
         "-kdfopt", f"hexinfo:{HKDF_INFO.hex()}", "-binary", "HKDF"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert derive_from_otp(bytes.fromhex(OTP_HEX)) == expected
    assert len(expected) == 32


def test_otp_key_is_derived_never_the_raw_otp_value(tmp_path: Path) -> None:
    source = OtpKey(command=[str(fake_otp_tool(tmp_path, OTP_HEX))])
    assert source.available()
    key = source.key()
    assert key == derive_from_otp(bytes.fromhex(OTP_HEX))
    assert key != bytes.fromhex(OTP_HEX)


def test_otp_unprogrammed_board_is_not_a_source(tmp_path: Path) -> None:
    source = OtpKey(command=[str(fake_otp_tool(tmp_path, "0" * 64, programmed=False))])
    assert not source.available()
    with pytest.raises(StorageError, match="all zeros"):
        source.key()


def test_otp_garbled_output_is_refused_with_advice(tmp_path: Path) -> None:
    source = OtpKey(command=[str(fake_otp_tool(tmp_path, "not-a-key"))])
    with pytest.raises(StorageError, match=r"64-digit hex key.*/dev/vcio"):
        source.key()


def test_otp_tool_absent_is_not_a_source(tmp_path: Path) -> None:
    assert not OtpKey(command=[str(tmp_path / "no-such-tool")]).available()


def test_key_file_created_root_only_and_read_back(tmp_path: Path) -> None:
    source = FileKey(tmp_path / "boot" / "clinicam" / "persist.key")
    assert not source.available()
    key = source.create()
    assert len(key) == 32 and source.available() and source.key() == key
    assert stat.S_IMODE(source.path.stat().st_mode) == 0o400
    assert stat.S_IMODE(source.path.parent.stat().st_mode) == 0o700


def test_key_file_create_replaces_and_destroy_removes(tmp_path: Path) -> None:
    counter = iter(range(1, 10))
    source = FileKey(tmp_path / "persist.key", random=lambda n: bytes([next(counter)]) * n)
    first = source.create()
    second = source.create()
    assert first != second and source.key() == second
    assert source.destroy() is True
    assert not source.path.exists()
    assert source.destroy() is False


def test_damaged_key_file_says_reprovision(tmp_path: Path) -> None:
    path = tmp_path / "persist.key"
    path.write_bytes(b"short")
    with pytest.raises(StorageError, match=r"5 bytes, not 32.*re-provisioned"):
        FileKey(path).key()


def test_new_key_prefers_otp_over_a_key_file(tmp_path: Path) -> None:
    otp = OtpKey(command=[str(fake_otp_tool(tmp_path, OTP_HEX))])
    file_key = FileKey(tmp_path / "persist.key")
    source, key = new_key([otp, file_key])
    assert source is otp and key == derive_from_otp(bytes.fromhex(OTP_HEX))
    assert not file_key.path.exists()  # no key on the card when the board has one


def test_new_key_falls_back_to_a_new_key_file(tmp_path: Path) -> None:
    otp = OtpKey(command=[str(tmp_path / "absent")])
    file_key = FileKey(tmp_path / "persist.key")
    source, key = new_key([otp, file_key])
    assert source is file_key and file_key.key() == key


def test_writable_leaves_a_writable_directory_alone(tmp_path: Path) -> None:
    with writable(tmp_path / "not" / "yet"):
        (tmp_path / "f").write_text("x")
    assert not os.statvfs(tmp_path).f_flag & os.ST_RDONLY
