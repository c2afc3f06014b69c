"""``clinicam provision`` exit codes and the generated broker files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clinicam.protocol.topics import DEFAULT_PREFIX
from clinicam.provisioning import brokerconf
from clinicam.tools.brokerproc import rewrite_conf
from clinicam.tools.cli import main


def _site(tmp_path: Path, *more: str) -> Path:
    site = tmp_path / "site"
    assert (
        main(
            [
                "provision",
                "site-init",
                str(site),
                "--site",
                "CLI Clinic",
                "--broker-host",
                "mqtt.example",
                "--relays",
                "2",
                "--kem",
                "x25519",
                *more,
            ]
        )
        == 0
    )
    return site


@pytest.mark.parametrize("tiers", ["2", "1"])
def test_cli_round_trip_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiers: str):
    site = _site(tmp_path, "--tiers", tiers)
    station = tmp_path / "station"
    assert main(["provision", "device-key", str(station), "--device", "cart-7"]) == 0
    sign = ["provision", "sign", str(site), str(station / "device.csr"), "--out", str(tmp_path / "cart-7.pem")]
    assert main(sign) == 0
    assert main(sign) == 1  # duplicate id: a ProvisioningError, exit 1
    assert "already has a valid certificate" in capsys.readouterr().err
    bundle = tmp_path / "bundle"
    assert main(["provision", "bundle", str(site), "--device", "cart-7", "--out", str(bundle)]) == 0
    install = ["provision", "install", "--bundle", str(bundle), "--identity-dir", str(station)]
    # The bundle's broker is a name nothing here resolves: refused, nothing installed.
    assert main(install) == 1
    assert "cannot resolve the broker host 'mqtt.example'" in capsys.readouterr().err
    assert not (station / "device.pem").exists()
    allow = [*install, "--allow-address", "192.0.2.10", "--allow-address", "2001:db8::/64"]
    # An update server that update-fetch could not use: refused before anything is installed.
    assert main([*allow, "--update-server", "http://192.0.2.20:8080"]) == 1
    assert "give https://HOST[:PORT]" in capsys.readouterr().err
    assert not (station / "device.pem").exists()
    assert main([*allow, "--update-server", "https://192.0.2.20:8443"]) == 0
    out = capsys.readouterr().out
    assert "may reach 192.0.2.10 2001:db8::/64 port 8883" in out
    assert "update-fetch may reach the update server https://192.0.2.20:8443 (192.0.2.20)" in out
    assert json.loads((station / "allow.json").read_text()) == {
        "ip_allow": ["192.0.2.10", "2001:db8::/64"],
        "broker_port": 8883,
        "update_server": {"url": "https://192.0.2.20:8443", "addresses": ["192.0.2.20"], "port": 8443},
    }
    assert main(["provision", "show", "--identity-dir", str(station)]) == 0
    out = capsys.readouterr().out
    assert "cart-7" in out and "PRIVATE KEY" not in out
    assert main(["provision", "show", "--site", str(site)]) == 0
    capsys.readouterr()
    if tiers == "2":
        # The issuing CA's CRL has one author, the registrar host: the admin is sent there.
        assert main(["provision", "revoke", str(site), "cart-7"]) == 1
        assert "clinicam relay revoke" in capsys.readouterr().err
        return
    assert main(["provision", "revoke", str(site), "cart-7"]) == 0
    out = capsys.readouterr().out
    assert "crl-root-bulletin.json" in out and "publish-crl" in out


def test_two_tiers_are_the_default(tmp_path: Path):
    site = json.loads((_site(tmp_path) / "site.json").read_text())
    assert site["tiers"] == 2
    assert json.loads((_site(tmp_path / "one", "--tiers", "1") / "site.json").read_text()).get("tiers", 1) == 1


def test_cli_usage_errors_exit_2(tmp_path: Path):
    with pytest.raises(SystemExit) as exc:
        main(["provision", "sign", str(tmp_path)])
    assert exc.value.code == 2
    assert main(["provision", "install", "--ca", "x", "--identity-dir", str(tmp_path)]) == 2


def test_cli_reserved_id_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["provision", "device-key", str(tmp_path / "k"), "--device", "admin"]) == 1
    assert "reserved" in capsys.readouterr().err


def test_generated_conf_has_the_security_settings(tmp_path: Path):
    conf = (_site(tmp_path) / "broker" / "mosquitto.conf").read_text().splitlines()
    for line in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        "persistence false",
        "max_packet_size 131072",
        "listener 8883",
        "crlfile /etc/mosquitto/clinicam/crl.pem",
        "acl_file /etc/mosquitto/clinicam/acl",
        "pid_file /run/mosquitto/mosquitto.pid",  # the broker agent's reload (SIGHUP)
    ):
        assert line in conf


def test_generated_acl_is_design_section_5():
    acl = [ln for ln in brokerconf.render_acl(relays=2, stations=["cart-2", "cart-1"]).splitlines()
           if ln and ln[0] != "#"]
    p = DEFAULT_PREFIX

    def station(name: str) -> list[str]:
        return [
            f"user {name}",
            f"topic write {p}/{name}/capture/#",
            f"topic write {p}/{name}/status",
            f"topic write {p}/{name}/event",
            f"topic read {p}/{name}/ack",
            f"topic read {p}/{name}/cmd",
            f"topic read {p}/relay/+/status",  # relay presence
        ]
    relay = [
        f"topic read {p}/+/capture/#",
        f"topic read {p}/+/status",
        f"topic read {p}/+/event",
        f"topic write {p}/+/ack",
        f"topic write {p}/+/cmd",
        f"topic read {p}/relay/+/status",
    ]
    own = [f"topic write {p}/relay/relay-{n}/status" for n in (1, 2)]  # each relay writes only its own
    crl = [f"topic read {p}/_site/crl", f"topic read {p}/_site/crl-root"]  # both CRL bulletins (issue 17)
    # The broker agent installs the bulletins; the admin machine publishes the root's.
    agent = ["user broker-agent", *crl, f"topic read {p}/_site/trust", f"topic write {p}/_site/crl-installed"]
    admin = ["user admin", f"topic read {p}/_site/crl-installed", f"topic read {p}/_site/crl",
             f"topic write {p}/_site/crl-root"]
    assert acl == [*station("cart-1"), *station("cart-2"), *agent, *admin, "user relay-1", *relay, own[0], *crl,
                   "user relay-2", *relay, own[1], *crl]
    assert not any(ln.startswith("pattern") for ln in acl)  # patterns apply to operators and relays too


@pytest.mark.parametrize("name", ["operator-jane", "relay-1", "broker", "admin-x"])
def test_acl_refuses_a_service_identity_as_a_station(name: str):
    with pytest.raises(ValueError, match="never a station"):
        brokerconf.render_acl(stations=[name])


def test_rewrite_conf_changes_only_paths_listener_and_local_lines(tmp_path: Path):
    text = brokerconf.render_conf("S", port=8883)
    paths = {k: tmp_path / v for k, v in brokerconf.CONF_FILES.items()}
    out = rewrite_conf(
        text, paths, host="127.0.0.1", port=40000, log_path=tmp_path / "log", replace={"tls_version": "tlsv1.1"}
    )
    lines = out.splitlines()
    assert "listener 40000 127.0.0.1" in lines
    assert f"keyfile {tmp_path / 'broker.key'}" in lines
    assert "tls_version tlsv1.1" in lines and "tls_version tlsv1.2" not in lines
    assert "require_certificate true" in lines and "allow_anonymous false" in lines
    assert any(ln.startswith("user ") for ln in lines)


def test_crl_on_a_two_tier_site_re_signs_the_roots_only(tmp_path: Path):
    site = _site(tmp_path)
    issuing = site / "registrar" / "crl-issuing.pem"
    root = site / "ca" / "crl-root.pem"
    before_issuing, before_root = issuing.read_bytes(), root.read_bytes()
    assert main(["provision", "crl", str(site)]) == 0
    assert issuing.read_bytes() == before_issuing  # the relay host's to sign
    assert root.read_bytes() != before_root
