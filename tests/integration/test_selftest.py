"""``clinicam station selftest`` against the real Mosquitto of the site (DESIGN §7, issue 6).

Every failure test names the exact line it expects; the positive control — a properly
provisioned station on simulated hardware against the same broker — passes with exit
0 and no FAIL, so a selftest that fails everything cannot pass these tests.
"""

from __future__ import annotations

import io
import re
import shutil
import socket
from pathlib import Path

import pytest
from clinicam.firmware.config import station_config_from
from clinicam.firmware.selftest.broker import check_broker, part_packet_size
from clinicam.firmware.selftest.identity import IdentityReview
from clinicam.firmware.selftest.main import main
from clinicam.protocol.topics import MAX_PART, Topics
from clinicam.provisioning import identity, pki
from clinicam.tools.brokerproc import LOOPBACK, free_port


def _station_dir(site, tmp_path: Path, *, key: Path | None = None, cert: Path | None = None) -> Path:
    """A copy of station-a's installed identity, optionally with another key and certificate."""
    d = tmp_path / "identity"
    shutil.copytree(site.device("station-a").dir, d)
    if key is not None and cert is not None:
        shutil.copy2(key, d / identity.KEY)
        shutil.copy2(cert, d / identity.CERT)
    return d


def _config(tmp_path: Path, ident: Path, extra: str = "") -> Path:
    path = tmp_path / "station.toml"
    path.write_text(
        f'[hardware]\nbackend = "sim"\n\n[memory]\nlock = "warn"\n\n[identity]\ndir = "{ident}"\n\n{extra}'
    )
    return path


def _run(config: Path, **kw) -> tuple[int, dict[str, str]]:
    out = io.StringIO()
    rc = main(str(config), out=out, **kw)
    print(out.getvalue())  # shown by pytest when a test fails
    lines = {}
    for line in out.getvalue().splitlines():
        m = re.match(r"(PASS|WARN|FAIL) (\S+) +(.*)", line)
        if m:
            lines[m.group(2)] = f"{m.group(1)} {m.group(3)}"
    return rc, lines


def test_provisioned_station_passes_against_the_real_broker(site, broker, tmp_path):
    rc, lines = _run(_config(tmp_path, _station_dir(site, tmp_path)))
    assert rc == 0, lines
    assert not [name for name, line in lines.items() if line.startswith("FAIL")]
    assert lines["broker"].startswith(f"PASS {LOOPBACK}:{site.port} as station-a: TLSv1.")
    assert "MQTT 5 CONNACK success" in lines["broker"]
    assert lines["packet-limit"].startswith("PASS chunk_size 122880:")
    assert "fit the broker's 131072" in lines["packet-limit"]
    assert lines["certificate"].startswith("PASS station-a, issued by 'clinicam CA Test Clinic'")
    assert list(lines)[:6] == ["config", "identity", "certificate", "ca", "recipient", "crl"]


def test_missing_certificate(site, broker, tmp_path):
    d = _station_dir(site, tmp_path)
    (d / identity.CERT).unlink()
    rc, lines = _run(_config(tmp_path, d))
    assert rc == 1
    assert lines["identity"].startswith(f"FAIL missing in {d}: device.pem -> install the station's bundle")
    assert lines["certificate"].startswith("FAIL device.pem is missing -> install the station's bundle")
    assert lines["broker"].startswith("FAIL cannot connect without device.pem")


def test_expired_certificate(site, broker, tmp_path):
    expired = site.make_expired()
    rc, lines = _run(_config(tmp_path, _station_dir(site, tmp_path, key=expired.key, cert=expired.cert)))
    assert rc == 1
    assert re.fullmatch(r"FAIL expired \d{4}-\d\d-\d\d \(39\d days ago\) -> renew: clinicam provision renew .*",
                        lines["certificate"]), lines["certificate"]
    assert lines["broker"].startswith("FAIL the broker refused this station's certificate: expired -> renew:")


def test_certificate_from_another_ca(site, broker, tmp_path):
    foreign = site.make_foreign("station-a")
    rc, lines = _run(_config(tmp_path, _station_dir(site, tmp_path, key=foreign.key, cert=foreign.cert)))
    assert rc == 1
    assert lines["certificate"].startswith(
        "FAIL not issued by the site CA in ca.pem (issuer: 'clinicam CA Other Site', "
        "site CA: 'clinicam CA Test Clinic')")
    assert lines["broker"].startswith(
        "FAIL the broker does not know the CA that issued this station's certificate -> install the certificate")


def test_revoked_certificate(site, broker_factory, tmp_path):
    revoked = site.make_revoked()
    broker_factory("broker", port=site.port)  # started after the revocation: loads the new CRL
    d = _station_dir(site, tmp_path, key=revoked.key, cert=revoked.cert)
    shutil.copy2(site.dir / "crl.pem", d / identity.CRL)
    rc, lines = _run(_config(tmp_path, d))
    assert rc == 1
    assert re.match(r"FAIL this station's certificate \(serial [0-9a-f]+\) was revoked on ", lines["crl"])
    assert lines["broker"].startswith("FAIL the broker refused this station's certificate: revoked")


def test_unreachable_broker(site, tmp_path):
    port = free_port()
    rc, lines = _run(_config(tmp_path, _station_dir(site, tmp_path), f'[uplink]\nhost = "{LOOPBACK}"\nport = {port}\n'))
    assert rc == 1
    assert lines["broker"] == (
        f"FAIL cannot reach {LOOPBACK}:{port} (Connection refused) -> check the network and firewall, "
        "that the broker is running, and [uplink] host/port (default: broker.json)")
    assert lines["packet-limit"] == "WARN skipped (no connection)"


def test_chunk_size_above_the_broker_packet_limit(site, broker, tmp_path):
    rc, lines = _run(_config(tmp_path, _station_dir(site, tmp_path), "[sealing]\nchunk_size = 131072\n"))
    assert rc == 1
    assert lines["broker"].startswith("PASS")
    m = re.fullmatch(r"FAIL chunk_size 131072 makes (\d+)-byte parts, above the broker's maximum packet size "
                     r"131072 -> set \[sealing\] chunk_size to at most (\d+), or raise the broker's max_packet_size",
                     lines["packet-limit"])
    assert m, lines["packet-limit"]
    assert int(m.group(1)) - 131072 == 131072 - int(m.group(2))


@pytest.mark.parametrize("limit", [65536])
def test_broker_with_a_smaller_packet_limit(site, broker_factory, tmp_path, limit):
    broker_factory("broker", port=site.port, replace={"max_packet_size": str(limit)})
    rc, lines = _run(_config(tmp_path, _station_dir(site, tmp_path)))
    assert rc == 1
    assert f"maximum packet {limit}" in lines["broker"]
    assert lines["packet-limit"].startswith("FAIL chunk_size 122880 makes ")
    assert f"above the broker's maximum packet size {limit}" in lines["packet-limit"]


def test_no_network_skips_the_broker(site, tmp_path):
    rc, lines = _run(_config(tmp_path, _station_dir(site, tmp_path)), network=False)
    assert rc == 0
    assert lines["broker"] == "WARN skipped (--no-network)"
    assert lines["packet-limit"] == "WARN skipped (--no-network)"


@pytest.mark.parametrize("slack", [0, -4])
def test_packet_limit_verdict_agrees_with_the_broker(site, broker_factory, mqtt_client, tmp_path, slack):
    """At exactly the largest part's size the broker takes it and selftest passes; below, neither.

    selftest counts the whole packet as MQTT 5 defines Maximum Packet Size (the same count
    the station's uplink refuses a part by). Mosquitto 2.0 counts 3 bytes fewer here (the
    remaining-length field), so limits 1-3 bytes under the part are refused by selftest
    and the station yet would pass this broker: a safe margin, never the other way round.
    """
    size = part_packet_size(station_config_from({}), "station-a")
    # Its own port: the ``broker`` fixture that ``mqtt_client`` starts holds the site's port.
    b = broker_factory("limited", replace={"max_packet_size": str(size + slack)})
    config = _config(tmp_path, _station_dir(site, tmp_path), f'[uplink]\nhost = "{LOOPBACK}"\nport = {b.port}\n')
    rc, lines = _run(config)
    assert f"maximum packet {size + slack}" in lines["broker"]
    assert (rc, lines["packet-limit"][:4]) == ((0, "PASS") if slack == 0 else (1, "FAIL"))
    client = mqtt_client(site.device("station-a"), broker=b)
    topic = Topics().part("station-a", "0" * 32, MAX_PART)
    payload = bytes(station_config_from({}).sealing.chunk_size + 16)
    if slack == 0:
        assert client.probe.publish(topic, payload).value < 0x80
    else:
        client.publish(topic, payload, qos=1)
        assert client.probe.disconnected.wait(10)  # the broker drops a packet above its limit


def test_selftest_on_a_live_station_takes_its_session_over(site, broker, mqtt_client, tmp_path):
    """The broker forces client id = CN: a selftest's CONNECT disconnects the running daemon once."""
    live = mqtt_client(site.device("station-a"))  # stands in for the running station daemon
    # an ACL probe, spelled by hand on purpose
    assert live.probe.publish("clinicam/v1/station-a/event", b"{}").value < 0x80  # positive control
    assert not live.probe.disconnected.is_set()
    rc, lines = _run(_config(tmp_path, _station_dir(site, tmp_path)))
    assert rc == 0, lines
    assert live.probe.disconnected.wait(10)
    assert "station-a already connected, closing old connection" in broker.log_text()


def test_ca_of_another_site_cannot_verify_the_broker(site, broker, tmp_path):
    d = _station_dir(site, tmp_path)
    other = site.make_foreign("station-a")
    shutil.copy2(other.cert, d / identity.CA)  # any certificate that is not this site's CA
    rc, lines = _run(_config(tmp_path, d))
    assert rc == 1
    assert lines["broker"].startswith("FAIL the broker's certificate did not verify: ")
    assert f"naming '{LOOPBACK}'" in lines["broker"]


def test_a_listener_that_never_answers_times_out(site, tmp_path):
    """A port that accepts TCP but never speaks TLS (a wrong service, a stuck broker)."""
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        config = station_config_from({"uplink": {"host": LOOPBACK, "port": port},
                                      "identity": {"dir": str(_station_dir(site, tmp_path))}})
        review = IdentityReview(Path(config.identity.dir), pki.utcnow())
        broker_line, limit_line = check_broker(config, review, timeout_s=0.5)
    assert (broker_line.status, broker_line.detail) == ("FAIL", f"cannot reach {LOOPBACK}:{port} (timed out)")
    assert limit_line.status == "WARN"
