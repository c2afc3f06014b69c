"""Installing and loading a station identity: every mismatch refused with its remedy."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clinicam.common.errors import ProvisioningError
from clinicam.provisioning import identity, pki
from clinicam.provisioning.site import Site

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def fresh(tmp_path: Path) -> Site:
    return Site.create(tmp_path / "site", "Unit Clinic", ["broker.example"], now=NOW, tiers=1)


def _signed(tmp_path: Path, site: Site, name: str) -> tuple[Path, Path]:
    """(identity dir with device.key, bundle dir) for a signed but not installed station."""
    d = tmp_path / "stations" / name
    site.sign(identity.create_device_key(d, name).read_bytes(), now=NOW)
    return d, site.bundle(name, tmp_path / "bundles" / name, now=NOW)


def test_install_from_bundle_then_load(tmp_path: Path, fresh: Site):
    d, bundle = _signed(tmp_path, fresh, "station-i")
    ident = identity.install(identity.InstallFiles.from_bundle(bundle), d, now=NOW)
    assert ident.device_id == "station-i"
    assert json.loads((d / "broker.json").read_text()) == {"host": "broker.example", "port": 8883}
    assert identity.load_identity(d).cert_pem == (bundle / "device.pem").read_bytes()


def test_install_explicit_files(tmp_path: Path, fresh: Site):
    d, bundle = _signed(tmp_path, fresh, "station-e")
    files = identity.InstallFiles(bundle / "ca.pem", bundle / "device.pem", bundle / "recipient.pub", "10.1.2.3", 18883)
    ident = identity.install(files, d, now=NOW)
    assert (ident.broker_host, ident.broker_port, ident.crl) == ("10.1.2.3", 18883, None)


def test_certificate_for_another_key_is_refused(tmp_path: Path, fresh: Site):
    d_a, bundle_a = _signed(tmp_path, fresh, "station-a")
    _, bundle_b = _signed(tmp_path, fresh, "station-b")
    identity.install(identity.InstallFiles.from_bundle(bundle_a), d_a, now=NOW)  # control
    with pytest.raises(ProvisioningError, match=r"does not match this station's device\.key"):
        identity.install(identity.InstallFiles.from_bundle(bundle_b), d_a, now=NOW)
    assert identity.load_identity(d_a).device_id == "station-a"  # nothing was overwritten


def test_certificate_from_another_ca_is_refused(tmp_path: Path, fresh: Site):
    d, bundle = _signed(tmp_path, fresh, "station-c")
    other = Site.create(tmp_path / "other", "Other", ["b"], now=NOW, tiers=1)
    pki.write_public(bundle / "ca.pem", other.ca_pem.read_bytes())
    with pytest.raises(ProvisioningError, match="not issued by this site's CA"):
        identity.install(
            identity.InstallFiles(bundle / "ca.pem", bundle / "device.pem", bundle / "recipient.pub", "b", 8883),
            d,
            now=NOW,
        )


def test_expired_or_future_certificate_is_refused(tmp_path: Path, fresh: Site):
    d, bundle = _signed(tmp_path, fresh, "station-x")
    files = identity.InstallFiles.from_bundle(bundle)
    with pytest.raises(ProvisioningError, match="expired"):
        identity.install(files, d, now=NOW + timedelta(days=400))
    with pytest.raises(ProvisioningError, match="not valid before"):
        identity.install(files, d, now=NOW - timedelta(days=1))


def test_install_without_device_key_says_what_to_do(tmp_path: Path, fresh: Site):
    _, bundle = _signed(tmp_path, fresh, "station-k")
    with pytest.raises(ProvisioningError, match="device-key"):
        identity.install(identity.InstallFiles.from_bundle(bundle), tmp_path / "empty", now=NOW)


def test_load_identity_names_missing_file_and_remedy(tmp_path: Path, fresh: Site):
    d, bundle = _signed(tmp_path, fresh, "station-m")
    identity.install(identity.InstallFiles.from_bundle(bundle), d, now=NOW)
    (d / "recipient.pub").unlink()
    with pytest.raises(ProvisioningError, match=r"recipient.pub is missing: install"):
        identity.load_identity(d)


def test_load_identity_refuses_a_readable_key(tmp_path: Path, fresh: Site):
    d, bundle = _signed(tmp_path, fresh, "station-p")
    identity.install(identity.InstallFiles.from_bundle(bundle), d, now=NOW)
    os.chmod(d / "device.key", 0o644)
    with pytest.raises(ProvisioningError, match="chmod 600"):
        identity.load_identity(d)


def test_bad_broker_json_is_refused(tmp_path: Path, fresh: Site):
    _, bundle = _signed(tmp_path, fresh, "station-j")
    (bundle / "broker.json").write_text('{"host": "b", "port": true}')
    with pytest.raises(ProvisioningError, match="port 1-65535"):
        identity.InstallFiles.from_bundle(bundle)


def test_bundle_needs_a_valid_certificate(tmp_path: Path, fresh: Site):
    with pytest.raises(ProvisioningError, match="sign its CSR first"):
        fresh.bundle("station-none", tmp_path / "out", now=NOW)
