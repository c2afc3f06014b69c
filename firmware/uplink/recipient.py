"""Following the site's recipient key (issue 17): adopt a signed announcement, persist it.

The uplink hands every ``P/_site/recipient`` payload here (on its delivery thread). An
announcement is adopted only when it verifies against the station's pinned root
(``protocol.recipientann``), keeps the KEM, and is newer than the last one adopted
(``identity/recipient.json``): a replayed or stale retained copy never moves the
station back to a retired key. Adopting writes ``identity/recipient.pub`` atomically
(the next boot seals to it as well) and returns the key for the sealer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from clinicam.protocol import recipientann as ra
from clinicam.protocol.manifest import parse_rfc3339_ms, rfc3339_ms
from clinicam.protocol.recipient import RecipientPublicKey
from clinicam.provisioning import pki
from cryptography import x509

log = logging.getLogger(__name__)
STATE = "recipient.json"
PUB = "recipient.pub"


class RecipientFollower:
    """``handle(payload) -> new key | None`` for one station's identity directory."""

    def __init__(self, identity_dir: Path, root: x509.Certificate | Sequence[x509.Certificate],
                 current: RecipientPublicKey, wall: Callable[[], datetime]) -> None:
        self.dir, self.root, self.current, self._wall = identity_dir, root, current, wall

    def _held_at(self) -> datetime | None:
        try:
            return parse_rfc3339_ms(json.loads((self.dir / STATE).read_text())["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def handle(self, payload: bytes) -> RecipientPublicKey | None:
        now = self._wall()
        try:
            ann = ra.parse_announcement(payload, root=self.root, now=now, current=self.current)
        except ra.AnnouncementError as exc:
            log.warning("uplink: recipient announcement ignored: %s", exc)
            return None
        held = self._held_at()
        if held is not None and ann.at <= held:
            return None  # the one we hold, or an older one: never go back
        state = json.dumps({"fingerprint": ann.recipient.fingerprint, "at": rfc3339_ms(ann.at)}).encode()
        if ann.recipient.fingerprint == self.current.fingerprint:
            pki.write_public(self.dir / STATE, state)
            return None
        pki.write_public(self.dir / PUB, ann.pem)
        pki.write_public(self.dir / STATE, state)
        log.info("uplink: sealing to the site's new recipient key %s", ann.recipient.fingerprint[:12])
        self.current = ann.recipient
        return ann.recipient
