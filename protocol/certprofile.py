"""What makes a certificate a *station* certificate (DESIGN §3.5, §7): its profile.

Only a station may put a photo into the record. The broker grants rights by CN, and a
CN is only a name: once a hospital brings its own PKI, or an admin issues an operator
or relay identity, a name alone does not say what a certificate is for. So station
signing (``clinicam provision sign`` and ``renew``) — and nothing else — adds a
certificate policy, ``STATION_POLICY``, and the relay opens a capture only when the
device certificate carries it (DESIGN §4: "a non-station profile is ``identity``").

Why a certificate policy rather than an EKU or a name constraint: the certificate
still needs EKU ``clientAuth`` for TLS, and a private EKU next to it is skipped or
refused by some TLS stacks' purpose checks; a name constraint lives on the CA and
cannot tell one leaf from another. A policy OID is the standard X.509 way to say
"issued under this profile", every CA product can set it (OpenSSL
``certificatePolicies``, an ADCS template's issuance policy, EJBCA's certificate
profile), and TLS ignores it. The OID is under ``2.25`` (ITU-T X.667: an arc from a
UUID, no registration needed), so it can never collide with a hospital's own OIDs.

Names still count, as a second rule: ids starting with ``relay``, ``broker``,
``admin``, ``operator`` or ``registrar`` belong to the site's own services and are never stations,
whatever the certificate says.

Certificates issued before this profile existed (*pre-policy*) carry no policy. They
are stations only while the relay is told so for a grace period (``[relay]
legacy_station_certs_until``); otherwise the relay answers ``retry`` with reason
``identity`` so the station keeps the photo until its certificate is renewed or the
grace period is set — never ``rejected``, which would make it drop the photo.
"""

from __future__ import annotations

from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

# 2.25.<UUID 15cd74dc-67b0-4a9e-a8f4-1532cc47bc92 as an integer> is clinicam's arc;
# .1 certificate policies, .1.1 the station profile, version 1.
CLINICAM_ARC = "2.25.28980578989282729064482540288060406930"
STATION_POLICY = x509.ObjectIdentifier(f"{CLINICAM_ARC}.1.1")

RESERVED_PREFIXES: tuple[str, ...] = ("relay", "broker", "admin", "operator", "registrar")

Profile = Literal["station", "pre-policy", "other"]


def is_reserved(name: str) -> bool:
    """Whether ``name`` belongs to the site's own services (never a station's id)."""
    return name.startswith(RESERVED_PREFIXES)


def station_policies() -> x509.CertificatePolicies:
    """The extension station signing adds (non-critical: TLS stacks need not know it)."""
    return x509.CertificatePolicies([x509.PolicyInformation(STATION_POLICY, None)])


def has_station_policy(cert: x509.Certificate) -> bool:
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return False
    return any(p.policy_identifier == STATION_POLICY for p in policies)


def profile(cert: x509.Certificate) -> Profile:
    """``station``, ``pre-policy`` (no policy, a station-like name) or ``other``.

    A reserved name is ``other`` even with the policy: a misissued certificate must not
    turn an operator or relay identity into a station.
    """
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    # Not exactly one CN is the CN check's business ("certificate"), not a profile.
    if any(isinstance(cn.value, str) and is_reserved(cn.value) for cn in cns):
        return "other"
    return "station" if has_station_policy(cert) else "pre-policy"
