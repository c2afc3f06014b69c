"""The station's renewal agent (issue 17) against the real registrar core, in process:
margin, request, checked install, promotion, back-off, and recovery after a crash.
Fixed clocks; no network."""

from __future__ import annotations

import os
import random
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.firmware.uplink.renewal import NEXT_CERT, NEXT_KEY, NEXT_REQ, RenewalAgent, RenewalPolicy
from clinicam.protocol import renewal as rn
from clinicam.protocol.topics import Topics
from clinicam.provisioning import identity, pki
from clinicam.provisioning.site import Site
from clinicam.relay.registrar.core import Journal, Policy, RegistrarCore
from clinicam.relay.registrar.service import FileTrust

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DUE = NOW + timedelta(days=340)  # 57 days before the 397-day certificate ends


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def env(tmp_path: Path):
    site = Site.create(tmp_path / "site", "Unit Clinic", ["b.example"], relays=1, kem="x25519", now=NOW, tiers=2)
    d = tmp_path / "identity"
    csr = identity.create_device_key(d, "ward3-cart1")
    site.sign(csr.read_bytes(), now=NOW)
    identity.install(identity.InstallFiles.from_bundle(site.bundle("ward3-cart1", tmp_path / "b", now=NOW)), d,
                     now=NOW)
    clock = Clock(NOW)
    core = RegistrarCore(issuing_key=site.issuing_key(), issuing_cert=site.issuing,  # type: ignore[arg-type]
                         trust_store=FileTrust(site.ca_pem, site.chain_pem, site.crl_pem),
                         journal=Journal(None), policy=Policy(min_interval=timedelta(0)), utc=clock)
    agent = RenewalAgent(d, "ward3-cart1", RenewalPolicy(retry_min_s=60, retry_max_s=3600), utc=clock,
                         rng=random.Random(7))
    return site, d, clock, core, agent


def _ask(core: RegistrarCore, payload: bytes) -> bytes:
    out = core.handle(Topics().renew("ward3-cart1"), payload)
    assert out is not None
    return out[1]


def test_renews_from_the_margin_and_installs_only_after_promotion(env):
    site, d, clock, core, agent = env
    current = identity.load_identity(d)
    assert not agent.due(current.not_after)  # a year left
    clock.at = DUE
    assert agent.due(current.not_after)
    payload = agent.request(current)
    assert stat.S_IMODE((d / NEXT_KEY).stat().st_mode) == 0o600
    assert agent.status()["state"] == "requested" and not agent.due(current.not_after)
    assert agent.answer(_ask(core, payload), current)
    assert (d / NEXT_CERT).exists()
    # Until the broker has taken the new pair, the identity on disk is the old one.
    assert identity.load_identity(d).cert.serial_number == current.cert.serial_number
    new = agent.promote()
    assert new.not_after > current.not_after and new.cert.issuer == site.issuing.subject
    assert not (d / NEXT_KEY).exists() and not (d / NEXT_CERT).exists() and not (d / NEXT_REQ).exists()
    assert agent.status() == {"state": "installed", "at": "2027-11-01T12:00:00.000Z", "reason": None}
    assert not agent.due(new.not_after)


def test_refusal_backs_off_and_keeps_the_current_pair(env):
    site, d, clock, core, agent = env
    current = identity.load_identity(d)
    clock.at = DUE
    site.revoke("ward3-cart1", now=NOW)
    assert not agent.answer(_ask(core, agent.request(current)), current)
    assert agent.status()["state"] == "failed" and agent.status()["reason"] == "revoked"
    assert not agent.due(current.not_after)  # backing off
    clock.at += timedelta(seconds=61)
    assert agent.due(current.not_after)
    assert identity.load_identity(d).cert.serial_number == current.cert.serial_number


def test_no_answer_counts_as_a_failure_after_the_timeout(env):
    _, d, clock, _, agent = env
    current = identity.load_identity(d)
    clock.at = DUE
    agent.request(current)
    clock.at += timedelta(seconds=119)
    assert not agent.due(current.not_after)
    clock.at += timedelta(seconds=2)
    assert not agent.due(current.not_after)  # failed now, backing off
    assert agent.status()["reason"] == "unavailable"


def test_foreign_or_tampered_answers_are_not_installed(env):
    _, d, clock, core, agent = env
    current = identity.load_identity(d)
    clock.at = DUE
    answer = _ask(core, agent.request(current))
    other = rn.parse_answer(answer)
    assert not agent.answer(rn.build_answer("00" * 16, "issued", cert_pem=other.cert_pem), current)  # wrong req
    # A certificate for a key that is not next.key (e.g. a replayed answer) is refused.
    pki.write_private(d / NEXT_KEY, pki.key_pem(pki.new_key()))
    assert not agent.answer(answer, current)
    assert agent.status()["reason"] == "certificate" and not (d / NEXT_CERT).exists()


def test_a_reboot_resends_the_same_request_and_gets_the_same_certificate(env):
    _, d, clock, core, agent = env
    current = identity.load_identity(d)
    clock.at = DUE
    first = rn.parse_answer(_ask(core, agent.request(current)))
    rebooted = RenewalAgent(d, "ward3-cart1", utc=clock)
    again = rn.parse_answer(_ask(core, rebooted.request(current)))
    assert again.req_id == first.req_id and again.cert_pem == first.cert_pem


def test_an_install_cut_between_the_renames_is_finished_at_load(env):
    _, d, clock, core, agent = env
    current = identity.load_identity(d)
    clock.at = DUE
    assert agent.answer(_ask(core, agent.request(current)), current)
    os.replace(d / NEXT_CERT, d / identity.CERT)  # the first rename happened, then power went
    loaded = identity.load_identity(d)
    assert loaded.cert.serial_number != current.cert.serial_number
    assert pki.same_key(loaded.cert, loaded.key) and not (d / NEXT_KEY).exists()


def test_selftest_reports_margin_and_last_outcome(env):
    from clinicam.firmware.config import RenewalSection
    from clinicam.firmware.selftest.identity import IdentityReview, check_renewal

    site, d, clock, core, agent = env
    review = IdentityReview(d, NOW)
    assert review.check_certificate().status == "PASS"
    first = check_renewal(RenewalSection(), review, NOW)
    assert (first.status, first.detail) == ("PASS", "margin 60 days, renews from 2027-10-29; last: never")
    clock.at = DUE
    site.revoke("ward3-cart1", now=NOW)
    current = identity.load_identity(d)
    agent.answer(_ask(core, agent.request(current)), current)
    failed = check_renewal(RenewalSection(), review, DUE)
    assert failed.status == "WARN"
    assert failed.detail == "margin 60 days, renews due now; last: failed 2027-11-01 (revoked)"
    off = check_renewal(RenewalSection(enabled=False), review, DUE)
    assert off.status == "WARN" and "renew by hand before 2027-12-28" in off.detail


def test_a_station_of_a_migrated_site_renews_and_adopts_the_reissued_root(tmp_path: Path):
    from cryptography import x509

    site = Site.create(tmp_path / "site", "Unit Clinic", ["b.example"], relays=1, kem="x25519", now=NOW, tiers=1)
    d = tmp_path / "identity"
    site.sign(identity.create_device_key(d, "ward3-cart1").read_bytes(), now=NOW)
    identity.install(identity.InstallFiles.from_bundle(site.bundle("ward3-cart1", tmp_path / "b", now=NOW)), d,
                     now=NOW)
    old_root = identity.load_identity(d).ca
    site.two_tier(now=NOW)
    site = Site(site.path)
    clock = Clock(DUE)
    core = RegistrarCore(issuing_key=site.issuing_key(), issuing_cert=site.issuing,  # type: ignore[arg-type]
                         trust_store=FileTrust(site.ca_pem, site.chain_pem, site.crl_pem), journal=Journal(None),
                         utc=clock)
    agent = RenewalAgent(d, "ward3-cart1", utc=clock)
    current = identity.load_identity(d)
    assert agent.answer(_ask(core, agent.request(current)), current)
    new = agent.promote()
    assert new.cert.issuer == site.issuing.subject  # type: ignore[union-attr]
    assert new.ca.public_key() == old_root.public_key() and new.ca != old_root
    assert new.ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert (d / identity.CERT).read_bytes().count(b"BEGIN CERTIFICATE") == 2  # leaf and issuing CA, no root


def test_a_root_that_is_not_ours_is_never_adopted(env, tmp_path: Path):
    _, d, clock, core, agent = env
    stranger = Site.create(tmp_path / "other", "Unit Clinic", ["b.example"], relays=1, kem="x25519", now=NOW,
                           tiers=2)
    clock.at = DUE
    current = identity.load_identity(d)
    answer = rn.parse_answer(_ask(core, agent.request(current)))
    forged = str(answer.cert_pem) + pki.cert_pem(stranger.ca).decode()
    assert agent.answer(rn.build_answer(answer.req_id, "issued", cert_pem=forged), current)  # the root is ignored
    assert not (d / "next-ca.pem").exists()


def test_wake_in_s_names_the_answer_timeout_and_the_end_of_the_back_off(env):
    """The uplink sleeps until then instead of its 30-s tick (a lost request is re-sent
    about answer_timeout_s + back-off later, not a minute later)."""
    _site, d, clock, _core, agent = env
    current = identity.load_identity(d)
    assert agent.wake_in_s() is None  # nothing pending
    clock.at = DUE
    assert agent.due(current.not_after)
    agent.request(current)
    assert agent.wake_in_s() == agent.policy.answer_timeout_s
    clock.at = DUE + timedelta(seconds=agent.policy.answer_timeout_s + 1)
    assert not agent.due(current.not_after)  # the timeout: a failure, then a back-off
    wait = agent.wake_in_s()
    assert wait is not None and 0 < wait <= agent.policy.retry_min_s * 2
    clock.at += timedelta(seconds=wait)
    assert agent.due(current.not_after) and agent.wake_in_s() is None
