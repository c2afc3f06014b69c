"""Operator identities: issued with command rights only, in the register and the broker ACL.

A fixed clock, no network: the broker's enforcement of these ACL lines is checked
end to end in tests/integration/test_relay_cmd.py.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.common.errors import ProvisioningError
from clinicam.protocol.topics import DEFAULT_PREFIX
from clinicam.provisioning import brokerconf, identity, pki
from clinicam.provisioning.operators import issue_operator, operator_cn
from clinicam.provisioning.site import Site
from clinicam.tools.cli import main
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
P = DEFAULT_PREFIX
OPERATOR_RIGHTS = [f"topic write {P}/+/cmd", f"topic read {P}/+/event", f"topic read {P}/+/status"]


@pytest.fixture
def fresh(tmp_path: Path) -> Site:
    return Site.create(tmp_path / "site", "Unit Clinic", ["broker.example"], relays=1, kem="x25519", now=NOW)


def rules(acl: str) -> list[str]:
    return [ln for ln in acl.splitlines() if ln and not ln.startswith("#")]


def rights_of(acl: str, user: str) -> list[str]:
    """The lines under ``user NAME`` up to the next ``user`` (Mosquitto's own grouping)."""
    lines = rules(acl)
    if f"user {user}" not in lines:
        return []
    after = lines[lines.index(f"user {user}") + 1:]
    return after[: next((i for i, ln in enumerate(after) if ln.startswith("user ")), len(after))]


# -- render_acl ---------------------------------------------------------------------------


def test_without_operators_the_acl_is_unchanged() -> None:
    assert brokerconf.render_acl(relays=2, operators=()) == brokerconf.render_acl(relays=2)
    assert "operator" not in brokerconf.render_acl(relays=2).lower().replace("(clinicam provision operator)", "")


def test_each_operator_may_send_commands_and_read_answers_only() -> None:
    acl = brokerconf.render_acl(relays=1, operators=["operator-b", "operator-a", "operator-b"])
    for user in ("operator-a", "operator-b"):
        assert rights_of(acl, user) == OPERATOR_RIGHTS
        assert not any("ack" in r or "capture" in r for r in rights_of(acl, user))
    assert rules(acl).count("user operator-b") == 1  # a name with two certificates: one block
    assert rules(acl).index("user operator-a") < rules(acl).index("user operator-b")
    # the relay's and the devices' rights did not move
    assert rules(acl)[: len(rules(brokerconf.render_acl(relays=1)))] == rules(brokerconf.render_acl(relays=1))


def test_render_acl_refuses_a_name_that_is_not_an_operator() -> None:
    with pytest.raises(ValueError, match="not an operator identity"):
        brokerconf.render_acl(operators=["relay-1"])


# -- the site -------------------------------------------------------------------------------


def test_issue_writes_key_cert_ca_registers_and_regenerates_the_acl(fresh: Site, tmp_path: Path) -> None:
    out = tmp_path / "ops"
    op = issue_operator(fresh, "it-jane", out, days=30, now=NOW)
    assert (op.cn, op.key, op.cert, op.ca) == ("operator-it-jane", out / "operator-it-jane.key",
                                                out / "operator-it-jane.pem", out / "ca.pem")
    assert stat.S_IMODE(op.key.stat().st_mode) == 0o600
    assert op.ca.read_bytes() == fresh.ca_pem.read_bytes()
    cert = pki.load_cert(op.cert)
    assert pki.common_name(cert.subject, "x") == "operator-it-jane"
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pki.same_key(cert, pki.load_key(op.key))
    (rec,) = [r for r in fresh.records() if r.id == "operator-it-jane"]
    assert rec.kind == "operator" and rec.serial == op.serial
    assert not list(fresh.path.rglob("operator-it-jane.key"))  # the key is not kept in the site
    acl = (fresh.broker_dir / "acl").read_text()
    assert op.acl == fresh.broker_dir / "acl"
    assert rights_of(acl, "operator-it-jane") == OPERATOR_RIGHTS


def test_second_valid_certificate_refused_until_revoked_and_revoke_drops_it_from_the_acl(
        fresh: Site, tmp_path: Path) -> None:
    issue_operator(fresh, "it-jane", tmp_path / "a", now=NOW)
    issue_operator(fresh, "it-raj", tmp_path / "b", now=NOW)
    with pytest.raises(ProvisioningError, match="already has a valid certificate: revoke it first"):
        issue_operator(fresh, "it-jane", tmp_path / "c", now=NOW)
    assert not (tmp_path / "c").exists()
    (hit,) = fresh.revoke("operator-it-jane", now=NOW)
    acl = (fresh.broker_dir / "acl").read_text()
    assert "operator-it-jane" not in acl and rights_of(acl, "operator-it-raj") == OPERATOR_RIGHTS
    crl = x509.load_pem_x509_crl((fresh.broker_dir / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(hit.serial, 16)) is not None  # refused at TLS too
    issue_operator(fresh, "it-jane", tmp_path / "c", now=NOW)  # a new key after the revocation
    assert rights_of((fresh.broker_dir / "acl").read_text(), "operator-it-jane") == OPERATOR_RIGHTS


def test_signing_adds_a_station_and_revoking_drops_it_operators_untouched(fresh: Site, tmp_path: Path) -> None:
    issue_operator(fresh, "it-jane", tmp_path / "a", now=NOW)
    d = tmp_path / "st"
    fresh.sign(identity.create_device_key(d, "cart-1").read_bytes(), now=NOW)
    acl = (fresh.broker_dir / "acl").read_text()
    assert "topic write clinicam/v1/cart-1/capture/#" in rights_of(acl, "cart-1")  # the ACL's text, by hand
    fresh.revoke("cart-1", now=NOW)
    acl = (fresh.broker_dir / "acl").read_text()
    assert rights_of(acl, "cart-1") == [] and "cart-1" not in acl
    assert rights_of(acl, "operator-it-jane") == OPERATOR_RIGHTS


def test_an_expired_operator_is_left_out_when_the_acl_is_regenerated(fresh: Site, tmp_path: Path) -> None:
    issue_operator(fresh, "it-old", tmp_path / "a", days=1, now=NOW)
    fresh.write_acl(now=NOW + timedelta(days=2))
    assert "operator-it-old" not in (fresh.broker_dir / "acl").read_text()


@pytest.mark.parametrize("name", ["", "Jane", "it_jane", "a/b", "x" * 56])
def test_malformed_operator_names_are_refused(name: str) -> None:
    with pytest.raises(ProvisioningError, match="--name"):
        operator_cn(name)


def test_a_station_may_not_be_named_like_an_operator(fresh: Site, tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="reserved"):
        identity.create_device_key(tmp_path / "k", "operator-it-jane")
    with pytest.raises(ProvisioningError, match="reserved"):
        fresh.issue(pki.new_key().public_key(), "operator-x", now=NOW)  # kind "device"
    assert operator_cn("x" * 55) == "operator-" + "x" * 55  # the longest allowed: a 64-character CN


# -- the CLI --------------------------------------------------------------------------------


def test_cli_operator_then_revoke(fresh: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ops"
    assert main(["provision", "operator", str(fresh.path), "--name", "it-jane", "--out", str(out),
                 "--days", "90"]) == 0
    said = capsys.readouterr().out
    assert "issued operator-it-jane" in said and "reload" in said and str(fresh.broker_dir / "acl") in said
    assert "PRIVATE KEY" not in said
    assert (out / "operator-it-jane.key").exists() and (out / "operator-it-jane.pem").exists()
    assert rights_of((fresh.broker_dir / "acl").read_text(), "operator-it-jane") == OPERATOR_RIGHTS
    assert main(["provision", "operator", str(fresh.path), "--name", "it-jane", "--out", str(out)]) == 1
    assert "revoke it first" in capsys.readouterr().err
    assert main(["provision", "operator", str(fresh.path), "--name", "Bad", "--out", str(out)]) == 1
    assert main(["provision", "show", "--site", str(fresh.path)]) == 0
    assert "operator-it-jane" in capsys.readouterr().out
    assert main(["provision", "revoke", str(fresh.path), "operator-it-jane"]) == 0
    said = capsys.readouterr().out
    assert "CRL and ACL rewritten" in said and "publish-crl" in said
    assert "operator-it-jane" not in (fresh.broker_dir / "acl").read_text()


def test_cli_operator_needs_name_and_out(fresh: Site) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["provision", "operator", str(fresh.path), "--name", "x"])
    assert exc.value.code == 2


def test_cli_sign_says_to_reload_the_acl_and_acl_regenerates_it(
        fresh: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csr = identity.create_device_key(tmp_path / "st", "cart-9")
    assert main(["provision", "sign", str(fresh.path), str(csr), "--out", str(tmp_path / "c.pem")]) == 0
    said = capsys.readouterr().out
    assert "signed cart-9" in said and str(fresh.broker_dir / "acl") in said and "reload" in said
    acl = fresh.broker_dir / "acl"
    assert "topic write clinicam/v1/cart-9/capture/#" in rights_of(acl.read_text(), "cart-9")  # ACL text, by hand
    # an existing site's old ACL (pattern rules) is replaced by 'provision acl'
    acl.write_text("pattern write clinicam/v1/%u/capture/#\n")
    assert main(["provision", "acl", str(fresh.path)]) == 0
    assert "reload" in capsys.readouterr().out
    text = acl.read_text()
    assert not any(ln.startswith("pattern") for ln in rules(text))
    assert "user cart-9" in rules(text) and "user relay-1" in rules(text)
