"""What the station says about A/B updates (image-build/README.md, "Updates").

The appliance's firmware is its whole root file system, so the version a station
reports (status ``fw``) is the image's, ``/usr/share/clinicam/image-version``, the
version of the RAUC bundle it was installed from; outside an image it is the package's.

After a reboot into a new slot, ``update-confirm`` (root, outside the sandbox) leaves
one line in ``/run/clinicam-update/result``: ``updated VERSION`` once the trial slot was
committed, ``update-failed VERSION`` when a trial was rolled back. The station turns it
into an audit event (``updated`` / ``update-failed`` with ``fw``) when it starts: the
operator learns that an update did not take without visiting the cart. Nothing here
carries PHI: versions only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_VERSION = Path("/usr/share/clinicam/image-version")
RESULT = Path("/run/clinicam-update/result")
_VERSION = re.compile(r"[0-9A-Za-z.+~-]{1,64}")
OUTCOMES = frozenset({"updated", "update-failed"})


@dataclass(frozen=True)
class UpdateResult:
    """The outcome of the last update, as update-confirm recorded it."""

    event: str  # "updated" or "update-failed": also the audit event's name
    version: str


def image_version(path: Path = IMAGE_VERSION) -> str | None:
    """The running image's version, or None outside an appliance image."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if _VERSION.fullmatch(text) else None


def update_result(path: Path = RESULT) -> UpdateResult | None:
    """The result line of this boot, or None (no update, or an unreadable line)."""
    try:
        words = path.read_text().split()
    except OSError:
        return None
    if len(words) != 2 or words[0] not in OUTCOMES or not _VERSION.fullmatch(words[1]):
        return None
    return UpdateResult(words[0], words[1])
