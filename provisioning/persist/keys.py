"""Where the key of the encrypted persistent partition comes from.

The persistent partition (identity and configuration, never PHI) is LUKS2. Its
passphrase is 32 random-looking bytes from one of two sources, tried in order:

* ``OtpKey``: derived with HKDF-SHA256 from the board's 256-bit device-specific
  private key in OTP (Raspberry Pi 4/5, CM4/5, programmed once with
  ``rpi-otp-private-key -w``). The key is never on the card: a card alone opens
  nothing, and a card moved to another board opens nothing.
* ``FileKey``: 32 bytes from the kernel's CSPRNG, written at first boot to the boot
  partition (``/boot/firmware/clinicam/persist.key``, vfat mounted root-only). Boards
  without a programmed OTP key use it: no Pi has a secure element, so this key
  protects against nothing but is what makes erasure cheap and certain.

Either way the *erase* is ``cryptsetup erase``: the LUKS keyslots, the only place the
volume key exists, are destroyed, and no passphrase opens the data again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from clinicam.common.errors import StorageError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

KEY_BYTES = 32
# Fixed context for the HKDF: a different product deriving from the same OTP key gets
# an unrelated key, and a new layout version gets a new one.
HKDF_INFO = b"clinicam persistent partition v1"
DEFAULT_KEY_FILE = Path("/boot/firmware/clinicam/persist.key")
OTP_TOOL = "rpi-otp-private-key"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class KeySource(Protocol):
    """One place a partition key can come from."""

    name: str

    def available(self) -> bool:
        """Whether this source can produce a key on this station now."""

    def key(self) -> bytes:
        """The 32-byte passphrase; raises ``StorageError`` when it cannot."""


def derive_from_otp(otp_key: bytes) -> bytes:
    """The partition passphrase for a board's OTP private key (HKDF-SHA256, no salt)."""
    if len(otp_key) != KEY_BYTES:
        raise StorageError(f"the OTP private key must be {KEY_BYTES} bytes, got {len(otp_key)}")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=HKDF_INFO).derive(otp_key)


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run_text(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)


@dataclass
class OtpKey:
    """The board's OTP private key through Raspberry Pi's ``rpi-otp-private-key``.

    ``command`` is injectable because the OTP cannot exist off a Pi: tests give it a
    script with the same interface (``-c`` exits 0 when a non-zero key is programmed;
    no argument prints the key as 64 hex digits).
    """

    command: Sequence[str] = (OTP_TOOL,)
    run: Runner = _run_text
    name: str = "otp"

    def available(self) -> bool:
        if shutil.which(self.command[0]) is None:
            return False
        return self.run([*self.command, "-c"]).returncode == 0

    def key(self) -> bytes:
        result = self.run(list(self.command))
        text = result.stdout.strip()
        if result.returncode != 0 or not _HEX64.fullmatch(text):
            raise StorageError(
                f"{self.command[0]} did not print a 64-digit hex key (exit {result.returncode}); "
                "check that this board has an OTP private key and that /dev/vcio is readable by root"
            )
        otp = bytes.fromhex(text)
        if otp == bytes(KEY_BYTES):
            raise StorageError("the OTP private key is all zeros: it was never programmed")
        return derive_from_otp(otp)


@dataclass
class FileKey:
    """A random key file on the boot partition, created at first boot."""

    path: Path = DEFAULT_KEY_FILE
    random: Callable[[int], bytes] = os.urandom
    name: str = field(default="file")

    def available(self) -> bool:
        return self.path.is_file()

    def key(self) -> bytes:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read the partition key {self.path}: {exc.strerror}") from None
        if len(data) != KEY_BYTES:
            raise StorageError(
                f"the partition key {self.path} has {len(data)} bytes, not {KEY_BYTES}: it is damaged; "
                "the partition cannot be opened and the station must be re-provisioned"
            )
        return data

    def create(self) -> bytes:
        """Write a new random key (the old one, if any, is destroyed first)."""
        key = self.random(KEY_BYTES)
        with writable(self.path.parent):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.path.exists():
                _destroy(self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.path.parent)
        return key

    def destroy(self) -> bool:
        """Overwrite and remove the key file; False when there was none."""
        if not self.path.exists():
            return False
        with writable(self.path.parent):
            _destroy(self.path)
        return True


def _destroy(path: Path) -> None:
    # Overwriting in place does not reach every copy on flash (wear levelling); the
    # keyslots the key opened are destroyed too, which is what makes the erase final.
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # vfat directories may refuse fsync; the file itself was synced
    finally:
        os.close(fd)


def _nearest_existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


@contextlib.contextmanager
def writable(directory: Path) -> Iterator[None]:
    """Remount the file system holding ``directory`` read-write for the block, if it is
    mounted read-only (the boot partition is ``ro`` in the appliance's fstab)."""
    existing = _nearest_existing(directory)
    if not os.statvfs(existing).f_flag & os.ST_RDONLY:
        yield
        return
    target = _run_text(["findmnt", "-n", "-o", "TARGET", "--target", str(existing)]).stdout.strip()
    if not target:
        raise StorageError(f"{existing} is read-only and its mount point cannot be found")
    _check(_run_text(["mount", "-o", "remount,rw", target]), f"remount {target} read-write")
    try:
        yield
    finally:
        _check(_run_text(["mount", "-o", "remount,ro", target]), f"remount {target} read-only")


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise StorageError(f"could not {what}: {result.stderr.strip() or f'exit {result.returncode}'}")


def default_sources(key_file: Path = DEFAULT_KEY_FILE) -> list[KeySource]:
    """OTP first (the key never on the card), then the key file."""
    return [OtpKey(), FileKey(key_file)]
