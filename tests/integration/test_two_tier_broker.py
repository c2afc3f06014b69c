"""Two-tier site PKI on the real broker (issue 17): Mosquitto, configured from the
site's generated ``broker/`` folder, verifies station chains through the issuing CA,
service identities straight to the root, and both CRLs of ``crl.pem``.

Each refusal has a positive control on the same broker: another station of the same
issuing CA connecting, which also shows the broker loaded the issuing CA's CRL (without
it OpenSSL refuses every station it issued).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clinicam.provisioning import identity, pki
from clinicam.provisioning.site import Site
from clinicam.tools.brokerproc import LOOPBACK, Mosquitto, free_port

from tests.conftest import TlsIdentity


def _site(tmp_path: Path, tiers: int) -> Site:
    return Site.create(tmp_path / "site", "Two Tier Clinic", [LOOPBACK, "localhost"], port=free_port(),
                       relays=1, kem="x25519", tiers=tiers)


def _station(tmp_path: Path, site: Site, name: str) -> TlsIdentity:
    d = tmp_path / "stations" / name
    csr = identity.create_device_key(d, name)
    site.sign(csr.read_bytes())
    identity.install(identity.InstallFiles.from_bundle(site.bundle(name, tmp_path / "b" / name)), d)
    return TlsIdentity(name, d / identity.CA, d / identity.CERT, d / identity.KEY, d)


def _relay(site: Site) -> TlsIdentity:
    cert, key = site.relay_files(1)
    return TlsIdentity("relay-1", site.ca_pem, cert, key)


def _broker(tmp_path: Path, site: Site, name: str = "broker") -> Mosquitto:
    cert, key = site.relay_files(1)
    return Mosquitto(site.broker_dir, tmp_path / name, port=site.port, probe_cert=(cert, key)).start()


def _publishes(mqtt_client, broker: Mosquitto, ident: TlsIdentity) -> None:
    c = mqtt_client(ident, broker=broker)
    # ACL probes in this file spell their topics by hand on purpose (the broker is the subject)
    assert c.probe.publish(f"clinicam/v1/{ident.name}/event", b"{}").value < 0x80


@pytest.fixture
def brokers():
    started: list[Mosquitto] = []
    yield started
    for b in started:
        b.stop()


def test_broker_accepts_two_tier_stations_and_root_services(tmp_path, mqtt_client, brokers):
    site = _site(tmp_path, 2)
    a = _station(tmp_path, site, "ward3-cart1")
    b = _station(tmp_path, site, "ward3-cart2")
    site.write_acl()
    brokers.append(broker := _broker(tmp_path, site))
    _publishes(mqtt_client, broker, a)
    _publishes(mqtt_client, broker, b)
    relay = mqtt_client(_relay(site), broker=broker)  # issued by the root directly
    assert relay.probe.subscribe("clinicam/v1/+/event").value < 0x80


def test_broker_refuses_a_station_revoked_by_the_issuing_ca(tmp_path, mqtt_client, brokers):
    site = _site(tmp_path, 2)
    a = _station(tmp_path, site, "ward3-cart1")
    gone = _station(tmp_path, site, "ward3-cart9")
    brokers.append(broker := _broker(tmp_path, site))
    _publishes(mqtt_client, broker, gone)  # control: the same certificate, before revocation
    site.revoke("ward3-cart9")  # the issuing CA's CRL; the root's is untouched
    broker.stop()
    broker.start()  # mosquitto reads crlfile at start
    _publishes(mqtt_client, broker, a)  # the issuing CA's CRL is loaded and a good station passes
    with pytest.raises(ConnectionError):
        mqtt_client(gone, broker=broker)
    mqtt_client(_relay(site), broker=broker)  # the root's CRL still lets its services in


def test_broker_refuses_a_station_chain_from_another_sites_issuing_ca(tmp_path, mqtt_client, brokers):
    site = _site(tmp_path, 2)
    a = _station(tmp_path, site, "ward3-cart1")
    other = Site.create(tmp_path / "other", "Other Clinic", [LOOPBACK], relays=1, kem="x25519", tiers=2)
    impostor = _station(tmp_path / "o", other, "ward3-cart1")  # same name, other site's issuing CA
    brokers.append(broker := _broker(tmp_path, site))
    _publishes(mqtt_client, broker, a)
    stranger = TlsIdentity("ward3-cart1", a.ca, impostor.cert, impostor.key)
    with pytest.raises(ConnectionError):
        mqtt_client(stranger, broker=broker)


def test_migrated_site_admits_old_and_new_stations(tmp_path, mqtt_client, brokers):
    site = _site(tmp_path, 1)
    old = _station(tmp_path, site, "ward3-cart1")
    site.two_tier()
    site = Site(site.path)
    new = _station(tmp_path, site, "ward3-cart2")
    assert pki.load_cert(new.cert).issuer != pki.load_cert(old.cert).issuer  # type: ignore[arg-type]
    site.write_acl()
    brokers.append(broker := _broker(tmp_path, site))
    _publishes(mqtt_client, broker, old)  # signed by the root before the migration
    _publishes(mqtt_client, broker, new)  # through the issuing CA
    mqtt_client(_relay(site), broker=broker)


def test_a_revoked_stations_open_connection_is_cut_by_a_session_takeover(tmp_path, mqtt_client, brokers):
    """Mosquitto 2.0.11 keeps a revoked client's connection across SIGHUP; a connection
    with the same CN (the registrar's minutes-long, non-station certificate) closes it,
    and the revoked station cannot come back."""
    from clinicam.relay.registrar.kick import kick

    site = _site(tmp_path, 2)
    a = _station(tmp_path, site, "ward3-cart1")
    gone = _station(tmp_path, site, "ward3-cart9")
    brokers.append(broker := _broker(tmp_path, site))
    live = mqtt_client(gone, broker=broker).probe
    bystander = mqtt_client(a, broker=broker).probe
    site.revoke("ward3-cart9")
    broker.reload()  # SIGHUP: the CRL for new connections, the ACL (now without it) for all
    assert not live.disconnected.is_set()  # a reload alone does not cut it (the problem)
    assert live.publish("clinicam/v1/ward3-cart9/event", b"{}").value >= 0x80  # only its rights went
    assert site.issuing is not None
    assert kick("ward3-cart9", host=LOOPBACK, port=broker.port, ca=site.ca_pem, issuing_cert=site.issuing,
                issuing_key=site.issuing_key())
    assert live.disconnected.wait(10)  # cut
    assert not bystander.disconnected.is_set()  # nobody else
    assert bystander.publish("clinicam/v1/ward3-cart1/event", b"{}").value < 0x80
    with pytest.raises(ConnectionError):
        mqtt_client(gone, broker=broker)  # and it cannot come back
    assert "already connected, closing old connection" in broker.log_text()
