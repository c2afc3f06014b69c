"""CRL bulletins (issue 17): signed by the issuing CA, CRL numbers that never go back,
merges that never lose an entry; the registrar host's ``revoke``; the broker agent's
installation (CRL file, ACL without the revoked ids, one reload). Fixed clock, real
files, no network."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.common.errors import ConfigError
from clinicam.protocol import chain as trust
from clinicam.protocol import revocation as rv
from clinicam.provisioning import identity, pki
from clinicam.provisioning.site import Site
from clinicam.relay.brokeragent import AgentConfig, AgentCore, IdentitySection, MosquittoSection, strip_users
from clinicam.relay.build import WatchedCrls
from clinicam.relay.registrar.core import Journal
from clinicam.relay.registrar.revocation import RevocationLog, current_bulletin, revoke

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site.create(tmp_path / "site", "Unit Clinic", ["broker.example"], relays=1, kem="x25519", now=NOW, tiers=2)
    for name in ("cart-1", "cart-2"):
        csr = identity.create_device_key(tmp_path / "st" / name, name)
        s.sign(csr.read_bytes(), now=NOW)
    return s


def _serial(site: Site, device: str) -> str:
    return next(r.serial for r in site.records() if r.id == device)


def _revoke(site: Site, tmp_path: Path, device: str, when: datetime = NOW) -> tuple[int, list[str]]:
    assert site.issuing is not None
    return revoke(device, serials=[_serial(site, device)], crl_path=site.crl_pem, issuing_cert=site.issuing,
                  issuing_key=site.issuing_key(), journal=Journal(None), log=RevocationLog(tmp_path / "rev.jsonl"),
                  now=when)


def _bulletin(site: Site, tmp_path: Path) -> bytes:
    assert site.issuing is not None
    return current_bulletin(crl_path=site.crl_pem, issuing_cert=site.issuing, issuing_key=site.issuing_key(),
                            log=RevocationLog(tmp_path / "rev.jsonl"), now=NOW)[1]


def _store(site: Site) -> trust.TrustStore:
    assert site.issuing is not None
    return trust.TrustStore([site.ca], [site.issuing])


def _issuing_number(site: Site) -> int:
    assert site.issuing is not None
    own = [c for c in trust.load_crls(site.crl_pem.read_bytes(), "crl") if c.issuer == site.issuing.subject]
    return rv.crl_number(own[0])


def test_site_crls_carry_increasing_numbers(site: Site):
    crls = trust.load_crls(site.crl_pem.read_bytes(), "crl")
    assert all(rv.crl_number(c) >= 1 for c in crls)
    before = _issuing_number(site)
    site.revoke("cart-1", now=NOW)
    assert _issuing_number(site) == before + 1


def test_registrar_revoke_adds_serials_keeps_entries_and_names_the_ids(site: Site, tmp_path: Path):
    n = _issuing_number(site)
    assert _revoke(site, tmp_path, "cart-1")[0] == n + 1
    assert _revoke(site, tmp_path, "cart-2", NOW + timedelta(minutes=1))[0] == n + 2
    bulletin = rv.parse_bulletin(_bulletin(site, tmp_path), _store(site))
    assert bulletin.number == n + 2 and bulletin.revoked == ["cart-2"]
    own = next(c for c in bulletin.crls if c.issuer == site.issuing.subject)  # type: ignore[union-attr]
    listed = {pki.serial_hex(r.serial_number) for r in own}
    assert listed == {_serial(site, "cart-1"), _serial(site, "cart-2")}  # the first entry kept
    lines = [json.loads(x) for x in (tmp_path / "rev.jsonl").read_text().splitlines()]
    assert [(e["number"], e["device"]) for e in lines] == [(n + 1, "cart-1"), (n + 2, "cart-2")]


def test_registrar_revoke_without_a_known_serial_says_what_to_give(site: Site, tmp_path: Path):
    assert site.issuing is not None
    with pytest.raises(ConfigError, match="--serial"):
        revoke("cart-1", serials=[], crl_path=site.crl_pem, issuing_cert=site.issuing,
               issuing_key=site.issuing_key(), journal=Journal(None), log=RevocationLog(tmp_path / "r"), now=NOW)


def test_bulletin_refuses_tampering_and_foreign_signers(site: Site, tmp_path: Path):
    _revoke(site, tmp_path, "cart-1")
    good = _bulletin(site, tmp_path)
    assert rv.parse_bulletin(good, _store(site)).revoked == ["cart-1"]  # control
    obj = json.loads(good)
    obj["revoked"] = ["cart-1", "cart-2"]  # an extra id the issuing CA never named
    with pytest.raises(rv.RevocationError, match="not signed"):
        rv.parse_bulletin(json.dumps(obj).encode(), _store(site))
    other = Site.create(tmp_path / "other", "Other", ["b.example"], relays=1, kem="x25519", now=NOW, tiers=2)
    with pytest.raises(rv.RevocationError, match="not signed by this site"):
        rv.parse_bulletin(good, _store(other))
    for bad in (b"", b"[]", b'{"v": 1}', b"\xff"):
        with pytest.raises(rv.RevocationError):
            rv.parse_bulletin(bad, _store(site))


def test_successor_refuses_rollback_and_lost_entries(site: Site, tmp_path: Path):
    v1 = trust.load_crls(site.crl_pem.read_bytes(), "v1")
    _revoke(site, tmp_path, "cart-1")
    v2 = trust.load_crls(site.crl_pem.read_bytes(), "v2")
    assert rv.crls_pem(rv.successor(v1, v2)) == rv.crls_pem(v2)
    with pytest.raises(rv.RevocationError, match="older"):
        rv.successor(v2, v1)
    assert site.issuing is not None
    dropped = pki.make_crl(site.issuing_key(), site.issuing, [], now=NOW, days=30, number=99)
    with pytest.raises(rv.RevocationError, match="never loses"):
        rv.successor(v2, [dropped])


def test_relay_watched_crls_adopt_a_bulletin_and_ignore_an_older_file(site: Site, tmp_path: Path):
    relay_crl = tmp_path / "relay-crl.pem"
    relay_crl.write_bytes(site.crl_pem.read_bytes())  # number 1
    watched = WatchedCrls(relay_crl)
    n = _revoke(site, tmp_path, "cart-1")[0]
    watched.adopt(rv.parse_bulletin(_bulletin(site, tmp_path), _store(site)).crls)
    assert n in {rv.crl_number(c) for c in watched}
    relay_crl.write_bytes(relay_crl.read_bytes() + b"\n")  # the old file "changes": an older number
    assert n in {rv.crl_number(c) for c in watched}


def test_strip_users_drops_only_the_revoked_blocks():
    acl = "# head\n\nuser cart-1\ntopic write a\n\nuser cart-10\ntopic write b\n\nuser relay-1\ntopic read c\n"
    out = strip_users(acl, ["cart-1"])
    assert "user cart-1\n" not in out and "topic write a" not in out
    assert "user cart-10\ntopic write b" in out and "user relay-1\ntopic read c" in out


def test_agent_installs_once_rewrites_crl_and_acl_and_refuses_a_replay(site: Site, tmp_path: Path):
    b = site.broker_dir
    config = AgentConfig(identity=IdentitySection(cert=str(b / "agent.pem"), key=str(b / "agent.key"),
                                                  ca=str(b / "ca.pem")),
                         mosquitto=MosquittoSection(crlfile=str(b / "crl.pem"), acl_file=str(b / "acl"),
                                                    pid_file=str(tmp_path / "pid")))
    reloads: list[int] = []
    core = AgentCore(config, lambda: reloads.append(1))
    n = _issuing_number(site)
    first = _bulletin(site, tmp_path)  # what the broker already has
    assert core.install(first) == n and not reloads
    _revoke(site, tmp_path, "cart-1")
    assert core.install(_bulletin(site, tmp_path)) == n + 1 and reloads == [1]
    assert "user cart-1\n" not in (b / "acl").read_text() and "user cart-2\n" in (b / "acl").read_text()
    assert core.install(_bulletin(site, tmp_path)) == n + 1 and reloads == [1]  # repeated: no reload
    with pytest.raises(rv.RevocationError, match="older"):
        core.install(first)
    assert reloads == [1] and core.installed_number() == n + 1


def test_the_acl_gives_the_site_topic_to_the_registrar_agent_and_relays_only(site: Site):
    acl = (site.broker_dir / "acl").read_text()
    blocks = {line: blk for blk in acl.split("\n\n") for line in blk.splitlines() if line.startswith("user ")}
    # the ACL's lines spelled by hand on purpose: this checks the text the broker reads
    assert "topic write clinicam/v1/_site/crl" in blocks["user registrar"]
    assert "topic read clinicam/v1/_site/crl" in blocks["user broker-agent"]
    assert "topic write clinicam/v1/_site/crl-installed" in blocks["user broker-agent"]
    assert "topic read clinicam/v1/_site/crl" in blocks["user relay-1"]
    station = blocks["user cart-1"]
    assert "_site/crl" not in station  # stations only read the recipient key and the trust update
    assert [ln for ln in station.splitlines() if "_site" in ln] == ["topic read clinicam/v1/_site/recipient",
                                                                   "topic read clinicam/v1/_site/trust"]
    assert "topic write clinicam/v1/_site/recipient" in blocks["user registrar"]
    assert "topic write clinicam/v1/_site/trust" in blocks["user registrar"]
    assert "topic read clinicam/v1/_site/trust" in blocks["user broker-agent"]
    assert "_site/trust" not in blocks["user relay-1"]


def test_the_broker_agent_identity_is_a_root_service_and_can_be_reissued(site: Site):
    first = pki.load_cert(site.broker_dir / "agent.pem")
    assert first.issuer == site.ca.subject
    assert pki.common_name(first.subject, "agent") == "broker-agent"
    site.reissue("broker-agent", now=NOW)
    again = pki.load_cert(site.broker_dir / "agent.pem")
    assert again.serial_number != first.serial_number and again.issuer == site.ca.subject


# -- the root's bulletin (admin machine) and the register in step with the relay host --------

def _agent(site: Site, tmp_path: Path) -> tuple[AgentCore, list[int]]:
    b = site.broker_dir
    host = tmp_path / "broker-host"  # the broker host's own copies
    host.mkdir(exist_ok=True)
    for name in ("crl.pem", "acl", "ca.pem"):
        (host / name).write_bytes((b / name).read_bytes())
    config = AgentConfig(identity=IdentitySection(cert=str(b / "agent.pem"), key=str(b / "agent.key"),
                                                  ca=str(host / "ca.pem")),
                         mosquitto=MosquittoSection(crlfile=str(host / "crl.pem"), acl_file=str(host / "acl"),
                                                    pid_file=str(tmp_path / "pid")))
    reloads: list[int] = []
    return AgentCore(config, lambda: reloads.append(1)), reloads


def test_a_root_revocation_is_a_root_signed_bulletin_the_agent_installs(site: Site, tmp_path: Path):
    core, reloads = _agent(site, tmp_path)
    site.reissue("relay-1", now=NOW)  # a second relay-1 certificate, then revoke both
    site.revoke("relay-1", now=NOW, issuing=False)
    bulletin = rv.parse_bulletin(site.root_bulletin_path.read_bytes(), _store(site))
    assert bulletin.signer == site.ca.subject and bulletin.revoked == ["relay-1"]
    assert [c.issuer for c in bulletin.crls] == [site.ca.subject]  # the root's CRL only: its author's
    before = core.installed_number()
    core.install(site.root_bulletin_path.read_bytes())
    assert reloads == [1] and core.installed_root() == bulletin.number
    assert core.installed_number() == before  # the issuing CA's CRL is kept as it was
    assert "user relay-1\n" not in (tmp_path / "broker-host" / "acl").read_text()
    receipt = rv.parse_receipt(rv.build_installed(core.installed_number(), NOW, root=core.installed_root()))
    assert receipt == rv.Receipt(before, bulletin.number)
    assert rv.parse_receipt(b'{"at":"2026-11-26T12:00:00.000Z","number":3,"v":1}') == rv.Receipt(3, 0)  # older agent


def test_a_bulletin_with_another_authors_older_crl_is_installed_without_going_back(site: Site, tmp_path: Path):
    """The registrar's bulletin carries its own (older) copy of the root's CRL: the newer
    root CRL the admin published stays; the registrar's own CRL must still never go back."""
    core, _ = _agent(site, tmp_path)
    stale_root_copy = site.crl_pem.read_bytes()
    site.revoke("relay-1", now=NOW, issuing=False)
    core.install(site.root_bulletin_path.read_bytes())
    root_n = core.installed_root()
    site_crl = site.crl_pem.read_bytes()
    site.crl_pem.write_bytes(stale_root_copy)  # the registrar host's file, root CRL from before
    n = _revoke(site, tmp_path, "cart-1")[0]
    core.install(_bulletin(site, tmp_path))
    assert core.installed_number() == n and core.installed_root() == root_n
    with pytest.raises(rv.RevocationError, match="older"):  # the author's own replay
        core.install(_stale_issuing(site, stale_root_copy))
    site.crl_pem.write_bytes(site_crl)


def _stale_issuing(site: Site, pem: bytes) -> bytes:
    assert site.issuing is not None
    return rv.build_bulletin(crls=trust.load_crls(pem, "old"), revoked=[], at=NOW, signer_key=site.issuing_key(),
                             signer_cert=site.issuing)


def test_the_cli_refuses_a_station_of_the_issuing_ca_and_names_relay_revoke(site: Site):
    from clinicam.common.errors import ProvisioningError

    with pytest.raises(ProvisioningError, match="relay revoke"):
        site.revoke("cart-1", now=NOW, issuing=False)
    assert all(r.revoked_at is None for r in site.records() if r.id == "cart-1")


def test_a_revocation_on_the_relay_host_reaches_the_register_and_the_acl_stays_without_it(
        site: Site, tmp_path: Path):
    relay_host_crl = tmp_path / "relay-host-crl.pem"
    relay_host_crl.write_bytes(site.crl_pem.read_bytes())
    assert site.issuing is not None
    revoke("cart-1", serials=[_serial(site, "cart-1")], crl_path=relay_host_crl, issuing_cert=site.issuing,
           issuing_key=site.issuing_key(), journal=Journal(None), log=RevocationLog(tmp_path / "rev.jsonl"), now=NOW)
    assert "user cart-1\n" in (site.broker_dir / "acl").read_text()  # the admin machine does not know yet
    marked = site.import_revocations(trust.load_crls(relay_host_crl.read_bytes(), "relay host"), now=NOW)
    assert [r.id for r in marked] == ["cart-1"]
    acl = (site.broker_dir / "acl").read_text()
    assert "user cart-1\n" not in acl and "user cart-2\n" in acl
    site.write_acl(now=NOW)  # the next regeneration does not re-admit it
    assert "user cart-1\n" not in (site.broker_dir / "acl").read_text()
    assert site.import_revocations(trust.load_crls(relay_host_crl.read_bytes(), "again"), now=NOW) == []
    # An older CRL (a stale copy) is refused, never merged over the newer one.
    with pytest.raises(Exception, match="older"):
        site.import_revocations(trust.load_crls(_stale(site), "stale"), now=NOW)


def _stale(site: Site) -> bytes:
    assert site.issuing is not None
    old = pki.make_crl(site.issuing_key(), site.issuing, [], now=NOW, days=30, number=1)
    return pki.crl_pem(old)


def test_a_renewal_imported_after_its_revocation_stays_revoked(site: Site, tmp_path: Path):
    """The relay host renewed cart-1, then revoked it; the admin imports the CRL first and
    the journal after: the renewed certificate is recorded revoked, never re-admitted."""
    assert site.issuing is not None
    key = pki.new_key()
    renewed = pki.issue(site.issuing_key(), site.issuing, key.public_key(), "cart-1", now=NOW, station=True)
    journal = tmp_path / "journal.jsonl"
    journal.write_text(json.dumps({"at": NOW.isoformat(), "device": "cart-1", "req_id": "0" * 32,
                                   "key_sha256": pki.spki_sha256(key.public_key()), "outcome": "issued",
                                   "serial": pki.serial_hex(renewed.serial_number),
                                   "cert": pki.cert_pem(renewed).decode()}) + "\n")
    relay_host_crl = tmp_path / "relay-host-crl.pem"
    relay_host_crl.write_bytes(site.crl_pem.read_bytes())
    _, serials = revoke("cart-1", serials=[_serial(site, "cart-1")], crl_path=relay_host_crl,
                             issuing_cert=site.issuing, issuing_key=site.issuing_key(), journal=Journal(journal),
                             log=RevocationLog(tmp_path / "rev.jsonl"), now=NOW)
    assert pki.serial_hex(renewed.serial_number) in serials  # the registrar's journal names the renewal
    site.import_revocations(trust.load_crls(relay_host_crl.read_bytes(), "relay host"), now=NOW)
    added = site.import_renewals(journal, now=NOW)
    assert [r.serial for r in added] == [pki.serial_hex(renewed.serial_number)]
    assert all(r.revoked_at for r in site.records() if r.id == "cart-1")
    assert "user cart-1\n" not in (site.broker_dir / "acl").read_text()


def test_the_registrar_takes_the_roots_bulletin_into_its_crl_file(site: Site, tmp_path: Path):
    """A root revocation published by the admin machine reaches the registrar's own
    ``[identity] crl`` (its renewals then refuse it); a replayed older one changes nothing."""
    from clinicam.relay.registrar.config import registrar_config_from
    from clinicam.relay.registrar.service import Registrar, build_core

    reg = site.registrar_dir
    crl = tmp_path / "registrar-crl.pem"
    crl.write_bytes(site.crl_pem.read_bytes())  # as installed on the relay host
    config = registrar_config_from({
        "identity": {"cert": str(reg / "registrar.pem"), "key": str(reg / "registrar.key"),
                     "ca": str(site.ca_pem), "crl": str(crl)},
        "issuing": {"cert": str(reg / "issuing.pem"), "key": str(reg / "issuing.key"),
                    "journal": str(tmp_path / "journal.jsonl"), "revocations": str(tmp_path / "rev.jsonl")},
    })
    registrar = Registrar(config, build_core(config))
    site.revoke("relay-1", now=NOW, issuing=False)
    first = site.root_bulletin_path.read_bytes()
    serial = int(_serial(site, "relay-1"), 16)
    root_crl = lambda: next(c for c in trust.load_crls(crl.read_bytes(), "r") if c.issuer == site.ca.subject)  # noqa: E731
    assert root_crl().get_revoked_certificate_by_serial_number(serial) is None  # control
    registrar._adopt_root(first)
    assert root_crl().get_revoked_certificate_by_serial_number(serial) is not None
    assert any(c.issuer == site.issuing.subject for c in trust.load_crls(crl.read_bytes(), "r"))  # type: ignore[union-attr]
    site.reissue("relay-1", now=NOW)
    site.revoke("relay-1", now=NOW, issuing=False)
    registrar._adopt_root(site.root_bulletin_path.read_bytes())
    newer = crl.read_bytes()
    registrar._adopt_root(first)  # a replay: refused, the file stays
    assert crl.read_bytes() == newer
