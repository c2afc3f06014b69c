"""The station's side of certificate renewal over MQTT (issue 17, docs/interfaces.md).

From ``margin_days`` before its certificate ends, the station makes a new key in RAM,
writes it to its identity store as ``next.key`` (so a reboot re-sends the same request
instead of minting another), and asks the registrar on ``P/D/renew``, signing with its
current key. An ``issued`` answer is checked (it chains to ``ca.pem``, names this
station, carries the station profile, is for ``next.key``, is valid now) and written as
``next.pem``. The uplink then reconnects with the new pair; only once the broker has
accepted it does :meth:`RenewalAgent.promote` move ``next.*`` over ``device.*``. A
station never goes offline for a renewal: anything that fails keeps the current pair,
is shown in status, and is retried with back-off.

This class does file and crypto work but no networking and reads no clock of its own:
the uplink drives it, with its UTC clock and randomness, from its delivery thread.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clinicam.common.errors import ProvisioningError
from clinicam.protocol import certprofile
from clinicam.protocol import chain as trust
from clinicam.protocol import renewal as rn
from clinicam.protocol.manifest import rfc3339_ms
from clinicam.protocol.trustann import same_cert
from clinicam.provisioning import identity, pki
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

NEXT_KEY, NEXT_CERT, NEXT_REQ, NEXT_CA = "next.key", "next.pem", "next.json", "next-ca.pem"
LAST = "renewal.json"  # the last outcome, for selftest (no secrets: state, time, reason code)


@dataclass(frozen=True)
class RenewalPolicy:
    """``[renewal]`` of station.toml."""

    enabled: bool = True
    margin_days: float = 60.0
    retry_min_s: float = 60.0
    retry_max_s: float = 21600.0
    answer_timeout_s: float = 120.0


class RenewalAgent:
    """One station's renewal state: ``idle``, ``requested``, ``installing``, ``failed``, ``installed``."""

    def __init__(self, directory: Path, device: str, policy: RenewalPolicy = RenewalPolicy(), *,
                 utc: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rng: random.Random | None = None) -> None:
        self.dir, self.device, self.policy = Path(directory), device, policy
        self._utc, self._rng = utc, rng or random.Random()
        self.state = "idle"
        self.reason: str | None = None
        self.last: datetime | None = None
        self._failures = 0
        self._not_before: datetime | None = None
        self._sent_at: datetime | None = None
        self.forced = False  # the site's trust update names another issuing CA: renew now

    # -- asking ------------------------------------------------------------------------

    def due(self, not_after: datetime) -> bool:
        """Whether to send a request now (also after a lost answer or a back-off)."""
        now = self._utc()
        if not self.policy.enabled:
            return False
        if not self.forced and now < not_after - timedelta(days=self.policy.margin_days):
            return False
        if self.state == "installing":
            return False
        if self.state == "requested" and self._sent_at is not None:
            if now - self._sent_at < timedelta(seconds=self.policy.answer_timeout_s):
                return False
            self._fail("unavailable")  # no answer: the registrar is down or the message lost
        return self._not_before is None or now >= self._not_before

    def force(self, on: bool = True) -> None:
        """A CA rotation (issue 17): renew now, whatever the margin (back-off still applies)."""
        if on and not self.forced:
            log.info("renewal: the site's issuing CA changed: renewing now")
        self.forced = on

    def wake_in_s(self) -> float | None:
        """Seconds until ``due`` may change its answer (an answer's timeout, the end of a
        back-off), so the uplink's loop wakes for it instead of at its next 30-s tick."""
        now = self._utc()
        if self.state == "requested" and self._sent_at is not None:
            at = self._sent_at + timedelta(seconds=self.policy.answer_timeout_s)
        elif self.state != "installing" and self._not_before is not None:
            at = self._not_before
        else:
            return None
        # a deadline already past needs no wake-up: the next tick acts on it
        return (at - now).total_seconds() if at > now else None

    def request(self, current: identity.StationIdentity) -> bytes:
        """The ``P/D/renew`` payload; makes (or reuses, after a reboot) ``next.key``."""
        key, req_id = self._pending()
        csr = pki.make_csr(key, self.device).public_bytes(serialization.Encoding.PEM).decode()
        now = self._utc()
        self.state, self._sent_at = "requested", now
        self._save()
        log.info("renewal: requesting a new certificate (current ends %s)", f"{current.not_after:%Y-%m-%d}")
        return rn.build_request(device=self.device, req_id=req_id, at=now, csr_pem=csr,
                                cert_pem=current.cert_pem.decode(), current_key=current.key)

    def _pending(self) -> tuple[pki.PrivateKey, str]:
        key_path, req_path = self.dir / NEXT_KEY, self.dir / NEXT_REQ
        if key_path.exists() and req_path.exists():
            try:
                return pki.load_key(key_path), str(json.loads(req_path.read_text())["req_id"])
            except (ProvisioningError, ValueError, KeyError, TypeError):
                log.warning("renewal: an unreadable pending request was replaced")
        key, req_id = pki.new_key(), self._rng.getrandbits(128).to_bytes(16, "big").hex()
        pki.write_private(key_path, pki.key_pem(key))  # before asking: the answer must find it
        pki.write_private(req_path, json.dumps({"req_id": req_id}).encode())
        return key, req_id

    # -- the answer --------------------------------------------------------------------

    def answer(self, payload: bytes, current: identity.StationIdentity) -> bool:
        """Handle ``P/D/cert``; ``True`` when ``next.pem`` is ready for a reconnect."""
        try:
            ans = rn.parse_answer(payload)
        except rn.RenewalRefused:
            log.warning("renewal: malformed answer ignored")
            return False
        pending = self._req_id()
        if self.state != "requested" or ans.req_id != pending:
            return False  # an old or foreign answer: the ACL makes foreign ones impossible
        if ans.status != "issued":
            self._fail(ans.reason or "unavailable", ans.retry_after_s)
            log.warning("renewal: %s (%s)", ans.status, ans.reason)
            return False
        try:
            chain, root = self._check_issued(str(ans.cert_pem), current)
        except ProvisioningError as exc:
            log.warning("renewal: issued certificate refused: %s", exc)
            self._fail("certificate")
            return False
        pki.write_public(self.dir / NEXT_CERT, b"".join(pki.cert_pem(c) for c in chain))
        if root is not None:
            pki.write_public(self.dir / NEXT_CA, b"".join(pki.cert_pem(r) for r in root))
        self.state = "installing"
        return True

    def _check_issued(self, chain_pem: str, current: identity.StationIdentity
                      ) -> tuple[list[x509.Certificate], list[x509.Certificate] | None]:
        """The chain to install (leaf, issuing CA) and the new ``ca.pem`` roots when one
        of ours came re-issued.

        A root in the answer is adopted only when it is *our* root re-issued: the same
        name and key as one in ``ca.pem`` (what ``provision two-tier`` does), never
        another one; a new root only ever arrives in a signed trust update.
        """
        try:
            certs = trust.load_certs(chain_pem.encode(), "the renewal answer")
            key = pki.load_key(self.dir / NEXT_KEY)
        except Exception as exc:
            raise ProvisioningError(f"unusable answer or pending key ({type(exc).__name__})") from exc
        leaf, rest = certs[0], certs[1:]
        anchors = tuple(current.anchors)
        # our root re-issued (same name and key, another certificate): adopted in its place
        reissued = {a.subject: c for c in rest for a in anchors
                    if c.subject == c.issuer and same_cert(c, a) and c != a}
        roots = [reissued.get(a.subject, a) for a in anchors]
        inter = [c for c in rest if c.subject != c.issuer]
        try:
            trust.TrustStore(roots, inter).path(leaf, self._utc())
        except trust.ChainError as exc:
            raise ProvisioningError(f"does not chain to ca.pem: {exc}") from exc
        pki.check_validity(leaf, "the renewed certificate", self._utc())
        if not pki.same_key(leaf, key) or pki.common_name(leaf.subject, "renewed") != self.device:
            raise ProvisioningError("not for this station's new key and id")
        if certprofile.profile(leaf) != "station" or not pki.has_client_auth(leaf):
            raise ProvisioningError("not a station certificate")
        return [leaf, *inter], (roots if reissued else None)

    @property
    def next_files(self) -> tuple[Path, Path]:
        return self.dir / NEXT_CERT, self.dir / NEXT_KEY

    # -- after the reconnect ---------------------------------------------------------------

    def promote(self) -> identity.DeviceIdentity:
        """The broker accepted the new pair: make it the identity (certificate first)."""
        if (self.dir / NEXT_CA).exists():  # the re-issued root first: the new chain needs it
            os.replace(self.dir / NEXT_CA, self.dir / identity.CA)
        os.replace(self.dir / NEXT_CERT, self.dir / identity.CERT)
        os.replace(self.dir / NEXT_KEY, self.dir / identity.KEY)
        (self.dir / NEXT_REQ).unlink(missing_ok=True)
        _fsync_dir(self.dir)
        self.state, self.reason, self.last = "installed", None, self._utc()
        self.forced = False
        self._failures, self._not_before = 0, None
        self._save()
        new = identity.load_identity(self.dir)
        log.info("renewal: installed, valid until %s", f"{new.not_after:%Y-%m-%d}")
        return new

    def not_allowed(self) -> None:
        """The broker's ACL refused the request: this site has no registrar (one tier).

        Back off as long as the policy allows, so a single-tier station asks rarely.
        """
        self._failures = max(self._failures, 64)
        self._fail("not-allowed")

    def install_failed(self) -> None:
        """The broker refused the new pair: back to the current one, retry later."""
        (self.dir / NEXT_CERT).unlink(missing_ok=True)
        (self.dir / NEXT_CA).unlink(missing_ok=True)
        self._fail("install-failed")

    # -- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``{"state", "at", "reason"}`` for the station's status and selftest."""
        return {"state": self.state, "at": rfc3339_ms(self.last) if self.last else None, "reason": self.reason}

    def _fail(self, reason: str, retry_after_s: int | None = None) -> None:
        self._failures += 1
        base = min(self.policy.retry_max_s, self.policy.retry_min_s * 2 ** (self._failures - 1))
        delay = max(base * (0.5 + self._rng.random() / 2), float(retry_after_s or 0))
        now = self._utc()
        self.state, self.reason, self.last = "failed", reason, now
        self._not_before, self._sent_at = now + timedelta(seconds=delay), None
        self._save()

    def _save(self) -> None:
        try:
            pki.write_public(self.dir / LAST, json.dumps(self.status(), sort_keys=True).encode())
        except OSError:
            log.warning("renewal: cannot record the last outcome for selftest")

    def _req_id(self) -> str | None:
        try:
            return str(json.loads((self.dir / NEXT_REQ).read_text())["req_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

