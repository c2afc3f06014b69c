"""The registrar's decisions (issue 17), on a two-tier site and a fixed clock: what it
issues, and every refusal of docs/interfaces.md, each after a positive control."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.common.errors import ProvisioningError
from clinicam.protocol import certprofile
from clinicam.protocol import chain as trust
from clinicam.protocol import renewal as rn
from clinicam.protocol.topics import Topics
from clinicam.provisioning import identity, pki
from clinicam.provisioning.operators import issue_operator
from clinicam.provisioning.site import Site
from clinicam.relay.registrar.core import Journal, Policy, RegistrarCore
from clinicam.relay.registrar.service import FileTrust
from cryptography.hazmat.primitives import serialization

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
T = Topics()


class Kit:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.site = Site.create(tmp / "site", "Unit Clinic", ["b.example"], relays=1, kem="x25519", now=NOW, tiers=2)
        self.now = NOW
        self.journal = Journal(tmp / "journal.jsonl")
        self.core = RegistrarCore(
            issuing_key=self.site.issuing_key(), issuing_cert=self.site.issuing,  # type: ignore[arg-type]
            trust_store=FileTrust(self.site.ca_pem, self.site.chain_pem, self.site.crl_pem),
            journal=self.journal, policy=Policy(min_interval=timedelta(hours=1)), utc=lambda: self.now)

    def station(self, name: str) -> identity.DeviceIdentity:
        d = self.tmp / "st" / name
        csr = identity.create_device_key(d, name)
        self.site.sign(csr.read_bytes(), now=NOW)
        identity.install(identity.InstallFiles.from_bundle(self.site.bundle(name, self.tmp / "b" / name, now=NOW)),
                         d, now=NOW)
        return identity.load_identity(d)

    def request(self, ident: identity.DeviceIdentity, *, device: str | None = None,
                signer: pki.PrivateKey | None = None, req_id: str | None = None) -> tuple[bytes, pki.PrivateKey]:
        new = pki.new_key()
        dev = device or ident.device_id
        csr = pki.make_csr(new, dev).public_bytes(serialization.Encoding.PEM).decode()
        payload = rn.build_request(device=dev, req_id=req_id or os.urandom(16).hex(), at=self.now, csr_pem=csr,
                                   cert_pem=ident.cert_pem.decode(), current_key=signer or ident.key)
        return payload, new

    def ask(self, topic_device: str, payload: bytes) -> rn.RenewalAnswer:
        out = self.core.handle(T.renew(topic_device), payload)
        assert out is not None
        assert out[0] == T.cert(topic_device)
        return rn.parse_answer(out[1])


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return Kit(tmp_path)


def test_a_station_is_renewed_under_the_issuing_ca(kit: Kit):
    a = kit.station("ward3-cart1")
    kit.now = NOW + timedelta(days=340)  # inside the 60-day margin
    payload, new = kit.request(a)
    ans = kit.ask("ward3-cart1", payload)
    assert ans.status == "issued" and ans.reason is None
    certs = trust.load_certs(str(ans.cert_pem).encode(), "answer")
    leaf = certs[0]
    assert leaf.public_key() == new.public_key()
    assert certprofile.profile(leaf) == "station"
    assert trust.TrustStore([kit.site.ca], certs[1:]).path(leaf, kit.now) == [kit.site.issuing, kit.site.ca]
    assert leaf.not_valid_after_utc > a.not_after
    assert kit.core.counts == {"issued": 1}
    # The same request again (the answer was lost): the same certificate, not a second one.
    again = kit.ask("ward3-cart1", payload)
    assert again.cert_pem == ans.cert_pem and kit.core.counts["repeated"] == 1
    # A second, new request within the interval: retry later, with the delay.
    later, _ = kit.request(a)
    limited = kit.ask("ward3-cart1", later)
    assert (limited.status, limited.reason) == ("retry", "rate-limited")
    assert 0 < (limited.retry_after_s or 0) <= 3601
    kit.now += timedelta(hours=2)
    assert kit.ask("ward3-cart1", kit.request(a)[0]).status == "issued"
    # The journal survives a restart of the registrar.
    assert len(Journal(kit.journal.path).issued()) == 2


def test_an_operator_identity_is_refused(kit: Kit):
    kit.station("ward3-cart1")
    op = issue_operator(kit.site, "alice", kit.tmp / "op", now=NOW)
    op_ident = identity.DeviceIdentity(kit.tmp, op.cn, pki.load_key(op.key), pki.load_cert(op.cert),
                                       op.cert.read_bytes(), kit.site.ca, b"", None, "b", 1)  # type: ignore[arg-type]
    ans = kit.ask(op.cn, kit.request(op_ident)[0])
    assert (ans.status, ans.reason) == ("refused", "identity")


def test_another_stations_identity_is_refused(kit: Kit):
    a, b = kit.station("ward3-cart1"), kit.station("ward3-cart2")
    assert kit.ask("ward3-cart2", kit.request(b)[0]).status == "issued"  # control
    # B asks for A's name with its own certificate, on A's topic and on its own.
    forged, _ = kit.request(b, device="ward3-cart1")
    assert kit.ask("ward3-cart1", forged).reason == "identity"
    assert kit.ask("ward3-cart2", forged).reason == "identity"
    # A's certificate but B's key: the signature does not hold.
    stolen, _ = kit.request(a, signer=b.key)
    assert kit.ask("ward3-cart1", stolen).reason == "signature"


def test_a_revoked_station_is_refused(kit: Kit):
    a = kit.station("ward3-cart1")
    b = kit.station("ward3-cart2")
    kit.site.revoke("ward3-cart1", now=NOW)
    assert kit.ask("ward3-cart2", kit.request(b)[0]).status == "issued"  # control, same CRL
    ans = kit.ask("ward3-cart1", kit.request(a)[0])
    assert (ans.status, ans.reason) == ("refused", "revoked")
    assert "issued" not in [e.outcome for e in kit.journal.entries if e.device == "ward3-cart1"]


def test_malformed_requests_get_a_clear_answer_or_none(kit: Kit):
    a = kit.station("ward3-cart1")
    assert kit.core.handle(T.renew("ward3-cart1"), b"\xff not json") is None  # nothing to correlate
    rid = "ab" * 16
    ans = kit.ask("ward3-cart1", b'{"req_id": "' + rid.encode() + b'", "v": 1}')
    assert (ans.req_id, ans.status, ans.reason) == (rid, "refused", "malformed")
    same_key = rn.build_request(
        device="ward3-cart1", req_id=rid, at=NOW, current_key=a.key, cert_pem=a.cert_pem.decode(),
        csr_pem=pki.make_csr(a.key, "ward3-cart1").public_bytes(serialization.Encoding.PEM).decode())
    assert kit.ask("ward3-cart1", same_key).reason == "malformed"  # the new key must be new
    assert kit.core.handle(T.status("ward3-cart1"), b"{}") is None  # not the registrar's topic


def test_revoke_covers_renewed_certificates_once_the_journal_is_imported(kit: Kit):
    a = kit.station("ward3-cart1")
    kit.now = NOW + timedelta(days=340)
    ans = kit.ask("ward3-cart1", kit.request(a)[0])
    renewed = trust.load_certs(str(ans.cert_pem).encode(), "answer")[0]
    assert [r.serial for r in kit.site.import_renewals(kit.journal.path)] == [pki.serial_hex(renewed.serial_number)]
    assert kit.site.import_renewals(kit.journal.path) == []  # twice is harmless
    kit.site.revoke("ward3-cart1", now=kit.now)
    crls = trust.load_crls(kit.site.crl_pem.read_bytes(), "crl.pem")
    store = trust.TrustStore([kit.site.ca], [kit.site.issuing], crls)  # type: ignore[list-item]
    for cert in (a.cert, renewed):
        with pytest.raises(trust.ChainError, match="revoked"):
            store.verify(cert, kit.now)
    foreign = Kit(kit.tmp / "other")
    b = foreign.station("ward3-cart1")
    foreign.now = kit.now
    foreign.ask("ward3-cart1", foreign.request(b)[0])
    with pytest.raises(ProvisioningError, match="not issued by this site's issuing CA"):
        kit.site.import_renewals(foreign.journal.path)
