"""Following the site's trust update (issue 17, CA rotation): new roots without a visit.

The uplink hands every ``P/_site/trust`` payload here (on its delivery thread). An
update is installed only when it verifies against the roots of the station's own
``ca.pem`` (``protocol.trustann``: signed by one of them, or by a root one of them
cross-certified), its number is above the one held (``identity/trust.json``), and its
roots still cover the station's own certificate — a ``ca.pem`` that did not would keep
the station from starting again. Installing writes ``ca.pem`` (the roots, current
first) atomically.

Whatever the number, when the station's certificate was not issued by the update's
issuing CA the station must renew now (the caller forces its renewal agent): that is
how every station reaches the new chain without waiting for its renewal margin, also
after a reboot (the update is retained and arrives at every connection).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from clinicam.common.errors import ConfigError
from clinicam.protocol import chain as trust
from clinicam.protocol import trustann as ta
from clinicam.protocol.manifest import rfc3339_ms
from clinicam.provisioning import identity, pki
from cryptography import x509
from cryptography.hazmat.primitives import hashes

log = logging.getLogger(__name__)
STATE = "trust.json"


@dataclass(frozen=True)
class TrustOutcome:
    """What one update meant: ``installed`` (``ca.pem`` changed), ``renew`` (not on its issuing CA)."""

    update: ta.TrustUpdate
    installed: bool
    renew: bool


def held_number(directory: Path) -> int:
    """The number of the last update installed (0: none)."""
    try:
        return int(json.loads((directory / STATE).read_text())["number"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def root_of(ident: identity.DeviceIdentity) -> x509.Certificate | None:
    """The root the station's certificate chains to (for status and selftest)."""
    try:
        return trust.TrustStore(ident.anchors, ident.chain).path(ident.cert)[-1]
    except trust.ChainError:
        return None


def trust_status(ident: identity.DeviceIdentity) -> dict[str, object]:
    """``{"number", "root"}`` for the station's status: which root it is on."""
    root = root_of(ident)
    number = held_number(ident.dir)
    return {"number": number or None, "root": root.fingerprint(hashes.SHA256()).hex() if root else None}


class TrustFollower:
    """``handle(payload, identity) -> TrustOutcome | None`` for one identity directory."""

    def __init__(self, identity_dir: Path, wall: Callable[[], datetime]) -> None:
        self.dir, self._wall = Path(identity_dir), wall

    def handle(self, payload: bytes, current: identity.DeviceIdentity) -> TrustOutcome | None:
        try:
            held_roots = trust.load_certs((self.dir / identity.CA).read_bytes(), str(self.dir / identity.CA))
            update = ta.parse_trust(payload, held_roots, self._wall())
        except (ta.TrustUpdateError, ConfigError, OSError) as exc:
            log.warning("uplink: trust update ignored: %s", exc)
            return None
        held = held_number(self.dir)
        if update.number < held:
            return None  # a stale copy: never go back
        renew = not trust.issued_by(current.cert, update.issuing)
        if update.number == held:
            return TrustOutcome(update, installed=False, renew=renew)
        if not update.covers(current.cert, current.chain):
            log.warning("uplink: trust update %d not installed: its roots do not cover this station's "
                        "certificate (renew it first)", update.number)
            return TrustOutcome(update, installed=False, renew=renew)
        pki.write_public(self.dir / identity.CA, update.roots_pem)
        pki.write_public(self.dir / STATE, json.dumps({"number": update.number, "at": rfc3339_ms(update.at)}).encode())
        log.info("uplink: trust update %d installed (%d root(s))", update.number, len(update.roots))
        return TrustOutcome(update, installed=True, renew=renew)

