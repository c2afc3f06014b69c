"""Certificate renewal over MQTT 5 (issue 17): the station's request, the registrar's answer.

``P/D/renew`` (station → registrar) carries a CSR made with a *new* key (self-signed:
proof of possession), the station's *current* certificate, and a signature by the
current key over the rest. The broker's ACL already ties ``P/D/renew`` to the CN ``D``
(mutual TLS), so only station ``D`` can post there; the signature makes the request
stand on its own as well, so the registrar does not have to trust the broker alone.

``P/D/cert`` (registrar → station) answers ``issued`` with the new certificate chain
(leaf, then the issuing CA), ``refused`` with a reason code, or ``retry`` with a delay.
Both sides parse strictly with this module, so they cannot drift. Nothing here ever
carries PHI: device ids, serials, times and certificates only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clinicam.common.errors import ClinicamError
from clinicam.protocol.ids import is_device_id
from clinicam.protocol.manifest import b64, canonical, parse_rfc3339_ms, rfc3339_ms, sign, strict_json, unb64
from cryptography.hazmat.primitives.asymmetric import ec

VERSION = 1
REQUEST_LEAF, ANSWER_LEAF = "renew", "cert"
STATUSES = ("issued", "refused", "retry")
# Closed set, like the relay's reason codes: never free text from a library.
REASONS = ("malformed", "identity", "certificate", "revoked", "signature", "rate-limited", "unavailable")
_REQ_ID = re.compile(r"[0-9a-f]{32}")
MAX_PEM = 16384  # a CSR or a short chain; anything bigger is not a renewal


class RenewalRefused(ClinicamError):
    """A renewal request or answer the other side must refuse; ``reason`` is in ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown renewal reason {reason!r}")
        super().__init__(f"renewal refused ({reason}): {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class RenewalRequest:
    req_id: str
    device: str
    at: datetime
    csr_pem: str
    cert_pem: str
    sig: bytes
    body: dict[str, Any]  # what ``sig`` covers: the request without ``sig``


@dataclass(frozen=True)
class RenewalAnswer:
    req_id: str
    status: str
    reason: str | None = None
    cert_pem: str | None = None
    retry_after_s: int | None = None


def _pem(x: Any, label: str) -> bool:
    return (isinstance(x, str) and x.isascii() and len(x) <= MAX_PEM
            and x.lstrip().startswith(f"-----BEGIN {label}-----"))


def build_request(*, device: str, req_id: str, at: datetime, csr_pem: str, cert_pem: str,
                  current_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The ``P/D/renew`` payload, signed by the station's current key."""
    body = {"v": VERSION, "req_id": req_id, "device": device, "at": rfc3339_ms(at),
            "csr": csr_pem, "cert": cert_pem}
    return canonical({**body, "sig": b64(sign(canonical(body), current_key))})


_REQUEST_FIELDS = {
    "v": lambda x: type(x) is int and x == VERSION,
    "req_id": lambda x: isinstance(x, str) and _REQ_ID.fullmatch(x) is not None,
    "device": is_device_id,
    "at": lambda x: isinstance(x, str) and _is_stamp(x),
    "csr": lambda x: _pem(x, "CERTIFICATE REQUEST"),
    "cert": lambda x: _pem(x, "CERTIFICATE") and x.count("-----BEGIN CERTIFICATE-----") == 1,
    "sig": lambda x: isinstance(x, str) and _is_b64(x),
}


def _is_stamp(x: str) -> bool:
    try:
        parse_rfc3339_ms(x)
    except ValueError:
        return False
    return True


def _is_b64(x: str) -> bool:
    try:
        unb64(x)
    except ValueError:
        return False
    return True


def _object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = strict_json(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RenewalRefused("malformed", f"{what} is not strict UTF-8 JSON") from exc
    if type(obj) is not dict:
        raise RenewalRefused("malformed", f"{what} must be a JSON object")
    return obj


def parse_request(payload: bytes) -> RenewalRequest:
    """Strictly parse ``P/D/renew``; ``RenewalRefused("malformed")`` for anything off."""
    obj = _object(payload, "renewal request")
    if set(obj) != set(_REQUEST_FIELDS):
        raise RenewalRefused("malformed", "renewal request keys are not exactly v, req_id, device, at, "
                                          "csr, cert, sig")
    bad = sorted(k for k, ok in _REQUEST_FIELDS.items() if not ok(obj[k]))
    if bad:
        raise RenewalRefused("malformed", f"renewal request fields out of format: {', '.join(bad)}")
    body = {k: v for k, v in obj.items() if k != "sig"}
    return RenewalRequest(obj["req_id"], obj["device"], parse_rfc3339_ms(obj["at"]), obj["csr"],
                          obj["cert"], unb64(obj["sig"]), body)


def build_answer(req_id: str, status: str, *, reason: str | None = None, cert_pem: str | None = None,
                 retry_after_s: int | None = None) -> bytes:
    """The ``P/D/cert`` payload."""
    answer = RenewalAnswer(req_id, status, reason, cert_pem, retry_after_s)
    _check_answer(answer)
    return canonical({"v": VERSION, "req_id": req_id, "status": status, "reason": reason,
                      "cert": cert_pem, "retry_after_s": retry_after_s})


def parse_answer(payload: bytes) -> RenewalAnswer:
    """Strictly parse ``P/D/cert``; ``RenewalRefused("malformed")`` for anything off."""
    obj = _object(payload, "renewal answer")
    if set(obj) != {"v", "req_id", "status", "reason", "cert", "retry_after_s"} or obj["v"] != VERSION:
        raise RenewalRefused("malformed", "renewal answer keys are not exactly v, req_id, status, reason, "
                                          "cert, retry_after_s")
    answer = RenewalAnswer(obj["req_id"], obj["status"], obj["reason"], obj["cert"], obj["retry_after_s"])
    _check_answer(answer)
    return answer


def _check_answer(a: RenewalAnswer) -> None:
    ok = (isinstance(a.req_id, str) and _REQ_ID.fullmatch(a.req_id) is not None and a.status in STATUSES
          and (a.reason is None or a.reason in REASONS))
    if a.status == "issued":
        ok = ok and _pem(a.cert_pem, "CERTIFICATE") and a.reason is None
    else:
        ok = ok and a.cert_pem is None and a.reason is not None
    if a.retry_after_s is not None:
        ok = ok and type(a.retry_after_s) is int and a.retry_after_s >= 0 and a.status == "retry"
    if not ok:
        raise RenewalRefused("malformed", "renewal answer fields out of format")

