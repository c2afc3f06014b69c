"""The certificates a relay host holds, read from the files its configurations name."""

from __future__ import annotations

from pathlib import Path

from clinicam.provisioning import pki
from clinicam.relay.certificates import (
    HeldCertificate,
    Unreadable,
    distinct,
    registrar_certificates,
    relay_certificates,
)
from clinicam.relay.config import IdentitySection


def test_relay_ca_chain_and_registrar_certificates_each_once(tmp_path: Path) -> None:
    now = pki.utcnow()
    root_key, issuing_key = pki.new_key(), pki.new_key()
    root = pki.make_ca(root_key, "north", now=now, path_length=1)
    issuing = pki.make_issuing_ca(root_key, root, issuing_key, "north", 1, now=now)
    relay = pki.issue(root_key, root, pki.new_key().public_key(), "relay-1", now=now, days=30)
    for name, cert in (("ca.pem", root), ("relay.pem", relay), ("issuing.pem", issuing)):
        (tmp_path / name).write_bytes(pki.cert_pem(cert))
    (tmp_path / "chain.pem").write_bytes(pki.cert_pem(issuing))
    ident = IdentitySection(cert=str(tmp_path / "relay.pem"), ca=str(tmp_path / "ca.pem"),
                            chain=str(tmp_path / "chain.pem"))
    registrar = tmp_path / "registrar.toml"
    registrar.write_text(f'[identity]\ncert = "{tmp_path / "missing.pem"}"\n'
                         f'[issuing]\ncert = "{tmp_path / "issuing.pem"}"\n')
    found = distinct([*relay_certificates(ident), *registrar_certificates(registrar)])
    held = [(c.role, c.name, c.not_after) for c in found if isinstance(c, HeldCertificate)]
    assert held == [("relay", "relay-1", relay.not_valid_after_utc.timestamp()),
                    ("site-ca", pki.common_name(root.subject, "root"), root.not_valid_after_utc.timestamp()),
                    ("issuing-ca", pki.common_name(issuing.subject, "i"), issuing.not_valid_after_utc.timestamp())]
    # the registrar's issuing CA is the relays' chain: listed once; its missing certificate is named
    missing = [c for c in found if isinstance(c, Unreadable)]
    assert len(missing) == 1 and missing[0].source == f"registrar.toml [identity] cert: {tmp_path / 'missing.pem'}"
    assert "cannot be read" in missing[0].problem
    broken = tmp_path / "broken.toml"
    broken.write_text("[nope]\n")
    assert isinstance(next(registrar_certificates(broken)), Unreadable)
