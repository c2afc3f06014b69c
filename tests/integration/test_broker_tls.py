"""Mutual TLS on the generated listener (DESIGN §3.5): who gets in and who does not.

Each refusal is preceded by a positive control: the same client code connecting
where it should, so a test cannot pass because the client is simply broken.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

OPENSSL = shutil.which("openssl")


def _assert_connects(mqtt_client, ident) -> None:
    c = mqtt_client(ident)
    # ACL and TLS probes below spell their topics by hand on purpose (the broker is the subject)
    assert c.probe.publish(f"clinicam/v1/{ident.name}/event", b"{}").value < 0x80


def test_valid_device_connects(site, mqtt_client):
    _assert_connects(mqtt_client, site.device("station-a"))


def test_no_client_certificate_is_refused(site, mqtt_client):
    _assert_connects(mqtt_client, site.device("station-a"))
    with pytest.raises(ConnectionError):
        mqtt_client(site.anonymous())


def test_certificate_from_another_ca_is_refused(site, mqtt_client):
    _assert_connects(mqtt_client, site.device("station-a"))
    with pytest.raises(ConnectionError):
        mqtt_client(site.make_foreign("station-a"))


def test_expired_certificate_is_refused(site, broker, mqtt_client):
    fresh = site.make_device()  # same path, a fresh certificate
    broker.reload()  # its ACL block, as the admin copies it after 'sign'
    _assert_connects(mqtt_client, fresh)
    with pytest.raises(ConnectionError):
        mqtt_client(site.make_expired())


def test_revoked_certificate_is_refused_after_broker_reloads_crl(site, broker, mqtt_client):
    ident = site.make_device()
    broker.reload()
    _assert_connects(mqtt_client, ident)  # the very same certificate, before revocation
    site.site.revoke(ident.name)
    broker.stop()
    broker.start()  # mosquitto reads crlfile at start
    _assert_connects(mqtt_client, site.device("station-b"))
    with pytest.raises(ConnectionError):
        mqtt_client(ident)


def test_revocation_reload_refuses_new_connections_restart_cuts_live_ones(site, broker, mqtt_client):
    """Why ``revoke`` tells the admin to restart the broker, not just reload it."""
    ident = site.make_device()
    broker.reload()
    live = mqtt_client(ident).probe
    assert live.publish(f"clinicam/v1/{ident.name}/event", b"{}").value < 0x80  # positive control
    site.site.revoke(ident.name)
    broker.reload()  # SIGHUP: mosquitto re-reads the CRL and the ACL (now without it)
    _assert_connects(mqtt_client, site.device("station-a"))  # reload has been processed
    with pytest.raises(ConnectionError):
        mqtt_client(ident)
    # The connection made before the revocation survives a reload, without its rights…
    assert not live.disconnected.is_set()
    assert live.publish(f"clinicam/v1/{ident.name}/event", b"{}").value >= 0x80
    broker.stop()
    broker.start()
    # …and is cut by a restart, after which it cannot come back.
    assert live.disconnected.wait(10)
    with pytest.raises(ConnectionError):
        mqtt_client(ident)


def test_broker_restart_keeps_port_and_accepts_again(site, broker, mqtt_client):
    port = broker.port
    broker.stop()
    with pytest.raises(ConnectionError):
        mqtt_client(site.device("station-a"))
    broker.start()
    assert broker.port == port
    _assert_connects(mqtt_client, site.device("station-a"))


def _s_client(port: int, version: str, site) -> subprocess.CompletedProcess[str]:
    relay = site.relay(1)
    assert OPENSSL is not None
    cmd = [
        OPENSSL,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        version,
        "-cipher",
        "DEFAULT@SECLEVEL=0",
        "-CAfile",
        str(site.ca_pem),
        "-cert",
        str(relay.cert),
        "-key",
        str(relay.key),
        "-brief",
    ]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20, check=False)


@pytest.mark.skipif(OPENSSL is None, reason="openssl command missing (apt install openssl)")
def test_tls_1_1_is_refused(site, broker, broker_factory):
    # Positive control: a listener that allows TLS 1.1 (same certificates, control
    # settings) completes a TLS 1.1 handshake with this very client command.
    control = broker_factory(
        "control-tls11",
        replace={"tls_version": "tlsv1.1"},
        extra=["ciphers DEFAULT:@SECLEVEL=0"],
    )
    ok = _s_client(control.port, "-tls1_1", site)
    assert ok.returncode == 0, ok.stderr
    assert "Protocol version: TLSv1.1" in ok.stdout + ok.stderr

    # The generated listener speaks TLS 1.2 with the same command and files…
    ok12 = _s_client(broker.port, "-tls1_2", site)
    assert "Protocol version: TLSv1.2" in ok12.stdout + ok12.stderr
    # …and refuses TLS 1.1.
    refused = _s_client(broker.port, "-tls1_1", site)
    assert refused.returncode != 0
    assert "Protocol version: TLSv1.1" not in refused.stdout + refused.stderr
    assert "protocol version" in refused.stderr
