"""The persistent partition's life: encrypt on first boot, unlock on every boot, erase.

The partition (``LABEL=clinicam``) holds the station's identity and configuration,
never PHI. The image ships it as an empty (or, on stations provisioned before this
existed, populated) plain ext4. ``unlock`` turns it into LUKS2 on first boot, carrying
its files across, and opens it as ``/dev/mapper/clinicam`` on every boot after; fstab
mounts that. ``erase`` destroys the keyslots (``cryptsetup erase``) and the key: the
crypto-erase of decommissioning. The next boot after an erase starts a fresh, empty
encrypted partition.

No file system is ever mounted here: ``debugfs rdump`` reads the old plain partition
and ``mke2fs -d`` writes the new one, so the only privileged kernel facility used is
dm-crypt itself, and all but ``cryptsetup open`` runs on an image file in the tests.
"""

from __future__ import annotations

import dataclasses
import enum
import grp
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clinicam.common.errors import StorageError
from clinicam.provisioning.persist.keys import KEY_BYTES, FileKey, KeySource, default_sources

log = logging.getLogger(__name__)

LABEL = "clinicam"
# The file system inside the mapping gets another label: two block devices labelled
# "clinicam" would fight over /dev/disk/by-label/clinicam.
DATA_LABEL = "clinicam-data"
STATION_GROUP = "clinicam"
STATION_GID = 975  # fixed by clinicam.sysusers.conf; used when the group is not known here
# A 256-bit random passphrase needs no stretching: PBKDF2 at the minimum count keeps
# unlock instant on a Pi (Argon2's default would want ~1 GiB of RAM at every boot).
LUKS_FORMAT = (
    "--type", "luks2", "--batch-mode", "--cipher", "aes-xts-plain64", "--key-size", "512",
    "--hash", "sha256", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
)  # fmt: skip


class State(enum.Enum):
    """What the partition holds, as probed from its first bytes."""

    PLAIN = "plain ext4 (not yet encrypted)"
    ENCRYPTED = "LUKS2, keyslots present"
    ERASED = "LUKS2 with no keyslot (crypto-erased)"
    BLANK = "no file system or header"
    OTHER = "an unexpected signature"


@dataclass(frozen=True)
class Layout:
    """Where the partition, its mapping and its scratch space are."""

    device: Path = Path(f"/dev/disk/by-label/{LABEL}")
    mapping: str = LABEL
    # tmpfs, root only: the identity passes through here while the partition is
    # re-made (RAM; init_on_free zeroes the pages when the files are removed).
    scratch: Path = Path("/run/persist-clinicam")

    @property
    def mapped(self) -> Path:
        return Path("/dev/mapper") / self.mapping


def run(argv: Sequence[str], *, stdin: bytes | None = None, what: str) -> str:
    """Run a tool; a failure is a ``StorageError`` naming ``what`` and the tool's words."""
    try:
        result = subprocess.run(list(argv), input=stdin, capture_output=True, check=False, timeout=120)
    except FileNotFoundError:
        raise StorageError(f"cannot {what}: {argv[0]} is not installed") from None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        raise StorageError(f"cannot {what}: {detail}")
    return result.stdout.decode(errors="replace")


def probe(device: Path) -> State:
    """Classify the partition by its signature (low-level probe: no cache, no udev)."""
    if not device.exists():
        raise StorageError(
            f"{device} does not exist: the image must have a partition labelled {LABEL!r} "
            "(see image-build/README.md)"
        )
    result = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", str(device)], capture_output=True, text=True, check=False
    )
    kind = result.stdout.strip()
    if result.returncode == 2 or not kind:
        return State.BLANK
    if kind == "ext4":
        return State.PLAIN
    if kind == "crypto_LUKS":
        return State.ENCRYPTED if keyslots(device) else State.ERASED
    return State.OTHER


def header(device: Path) -> dict:
    """The LUKS2 JSON metadata (no secrets: keyslot parameters, segments, label)."""
    return json.loads(run(["cryptsetup", "luksDump", "--dump-json-metadata", str(device)], what="read the header"))


def keyslots(device: Path) -> list[str]:
    return sorted(header(device).get("keyslots", {}))


def opens(device: Path, key: bytes) -> bool:
    """Whether ``key`` opens a keyslot (checked without creating a mapping)."""
    result = subprocess.run(
        ["cryptsetup", "open", "--test-passphrase", "--key-file=-", str(device)],
        input=key,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def find_key(device: Path, sources: Sequence[KeySource]) -> tuple[KeySource, bytes]:
    """The first source whose key opens the partition."""
    tried = []
    for source in sources:
        if not source.available():
            continue
        tried.append(source.name)
        key = source.key()
        if opens(device, key):
            return source, key
    raise StorageError(
        f"no key opens the encrypted persistent partition {device} (tried: {', '.join(tried) or 'none available'}). "
        "Its identity cannot be recovered: erase it with 'clinicam persist erase --yes', reboot, "
        "and provision the station again"
    )


def new_key(sources: Sequence[KeySource]) -> tuple[KeySource, bytes]:
    """The key a new partition is formatted with: the first available source, else a new key file."""
    for source in sources:
        if source.available() and not isinstance(source, FileKey):
            return source, source.key()
    file_key = next((s for s in sources if isinstance(s, FileKey)), None)
    if file_key is None:
        raise StorageError("no key source can create a key: neither an OTP key nor a key file path")
    return file_key, file_key.create()


def zero(device: Path) -> None:
    """Overwrite the whole partition with zeros (after a best-effort discard), so the
    plaintext it held is not left under the new header."""
    subprocess.run(["blkdiscard", "-f", str(device)], capture_output=True, check=False)
    size = _size(device)
    chunk = bytes(1 << 20)
    with device.open("r+b", buffering=0) as handle:
        done = 0
        while done < size:
            done += handle.write(chunk[: min(len(chunk), size - done)])
        os.fsync(handle.fileno())


def _size(device: Path) -> int:
    with device.open("rb") as handle:
        return handle.seek(0, os.SEEK_END)


def format_luks(device: Path, key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise StorageError(f"refusing a {len(key)}-byte partition key")
    run(
        ["cryptsetup", "luksFormat", *LUKS_FORMAT, "--label", LABEL, "--key-file=-", str(device)],
        stdin=key,
        what=f"encrypt {device}",
    )


def evacuate(device: Path, into: Path) -> int:
    """Copy the plain partition's files (owners and modes kept) into ``into``, unmounted."""
    listing = run(["debugfs", "-R", "ls -p /", str(device)], what=f"list {device}")
    names = [f.split("/")[5] for f in listing.splitlines() if f.count("/") >= 6]
    names = [n for n in names if n not in (".", "..", "lost+found")]
    for name in names:
        run(["debugfs", "-R", f"rdump /{name} {into}", str(device)], what=f"copy /{name} out of {device}")
    return sum(len(files) for _, _, files in os.walk(into))


def skeleton(into: Path) -> None:
    """The layout the station expects (tmpfiles.d says the same), made where missing."""
    try:
        gid = grp.getgrnam(STATION_GROUP).gr_gid
    except KeyError:
        gid = STATION_GID
    for sub in ("etc", "etc/identity"):
        path = into / sub
        if not path.exists():
            path.mkdir(mode=0o750)
            os.chown(path, 0, gid)
    into.chmod(0o755)


def make_filesystem(target: Path, content: Path) -> None:
    run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", DATA_LABEL, "-d", str(content), str(target)],
        what=f"make the file system on {target}",
    )


def is_open(layout: Layout) -> bool:
    return layout.mapped.exists()


def open_mapping(layout: Layout, key: bytes) -> None:
    run(
        ["cryptsetup", "open", "--type=luks2", "--allow-discards", "--key-file=-", str(layout.device), layout.mapping],
        stdin=key,
        what=f"open {layout.device} as {layout.mapped}",
    )


def close_mapping(layout: Layout) -> bool:
    if not is_open(layout):
        return False
    run(["cryptsetup", "close", layout.mapping], what=f"close {layout.mapped}")
    return True


def dm_crypt_ready() -> bool:
    """Whether the kernel can map an encrypted volume now (dm_mod and dm_crypt there)."""
    misc = Path("/proc/misc")
    if not misc.exists() or "device-mapper" not in misc.read_text():
        return False
    if Path("/sys/module/dm_crypt").exists():
        return True
    builtin = Path("/lib/modules") / os.uname().release / "modules.builtin"
    return builtin.exists() and "dm-crypt.ko" in builtin.read_text()


def unlock(
    layout: Layout, sources: Sequence[KeySource] | None = None, dm_ready: Callable[[], bool] = dm_crypt_ready
) -> str:
    """Make ``/dev/mapper/clinicam`` exist, encrypting the partition first if it must be.

    Returns a one-line account of what was done, for the journal. Nothing is
    overwritten unless dm-crypt is known to work: a kernel without it would otherwise
    lose the carried identity between the format and the open.
    """
    sources = list(sources if sources is not None else default_sources())
    if is_open(layout):
        return f"{layout.mapped} already open"
    state = probe(layout.device)
    # The by-label link comes and goes while the partition is rewritten (udev re-probes
    # it on every close): work on the node it points to.
    layout = dataclasses.replace(layout, device=layout.device.resolve())
    if state is State.ENCRYPTED:
        source, key = find_key(layout.device, sources)
        open_mapping(layout, key)
        return f"unlocked {layout.device} with the {source.name} key"
    if state is State.OTHER:
        raise StorageError(
            f"{layout.device} holds neither ext4 nor LUKS2: refusing to overwrite it; "
            "check the partition labelled 'clinicam', or erase it with 'clinicam persist erase --yes'"
        )
    if not dm_ready():
        raise StorageError(
            "the kernel has no dm-crypt (modules dm_mod, dm_crypt): the persistent partition was left as it is; "
            "install a kernel with dm-crypt"
        )
    return _encrypt(layout, state, sources)


def _encrypt(layout: Layout, state: State, sources: Sequence[KeySource]) -> str:
    layout.scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.scratch) as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        carried = evacuate(layout.device, content) if state is State.PLAIN else 0
        skeleton(content)
        source, key = new_key(sources)
        if state is State.PLAIN:
            zero(layout.device)
        format_luks(layout.device, key)
        open_mapping(layout, key)
        make_filesystem(layout.mapped, content)
        shutil.rmtree(content)
    # Let udev re-probe the partition so /dev/disk/by-label/clinicam (now the LUKS2
    # label) exists again before systemd looks for it.
    subprocess.run(["udevadm", "settle", "--timeout=30"], capture_output=True, check=False)
    was = {State.PLAIN: "plain ext4", State.ERASED: "erased", State.BLANK: "blank"}[state]
    return f"encrypted {layout.device} (was {was}, carried {carried} files) with the {source.name} key"
