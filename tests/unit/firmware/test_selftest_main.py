"""``selftest.main`` and ``run_checks``: order, exit codes, formatting, isolation, packet limit.

No network: ``network=False`` or a config whose broker check is not reached.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from clinicam.firmware.capture.memory import HardeningReport
from clinicam.firmware.config import EXAMPLE, station_config_from
from clinicam.firmware.selftest.broker import check_packet_limit, part_packet_size
from clinicam.firmware.selftest.main import CheckResult, format_line, main, run_checks
from clinicam.protocol.recipient import generate_recipient_key
from clinicam.provisioning import identity, pki

ORDER = ["config", "identity", "certificate", "ca", "recipient", "crl", "clock", "aead", "memory",
         "camera", "panel", "renewal", "broker", "packet-limit"]
HARDENED = HardeningReport(True, True, True)


def _identity(root: Path) -> Path:
    d = root / "identity"
    d.mkdir(mode=0o700)
    now = pki.utcnow()
    ca_key, key = pki.new_key(), pki.new_key()
    ca = pki.make_ca(ca_key, "Unit Clinic", now=now)
    pki.write_private(d / identity.KEY, pki.key_pem(key))
    pki.write_public(d / identity.CERT, pki.cert_pem(pki.issue(ca_key, ca, key.public_key(), "ward3-cart1", now=now,
                                                                station=True)))
    pki.write_public(d / identity.CA, pki.cert_pem(ca))
    pki.write_public(d / identity.RECIPIENT, generate_recipient_key("X25519").public_pem())
    pki.write_public(d / identity.BROKER, json.dumps({"host": "127.0.0.1", "port": 8883}).encode())
    return d


def _toml(tmp_path: Path, ident: Path, extra: str = "") -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f'[hardware]\nbackend = "sim"\n[memory]\nlock = "warn"\n[identity]\ndir = "{ident}"\n{extra}')
    return path


def test_format_line():
    assert format_line(CheckResult("certificate", "FAIL", "expired 2026-01-02 (3 days ago)", "renew: x")) == (
        "FAIL certificate   expired 2026-01-02 (3 days ago) -> renew: x")
    assert format_line(CheckResult("ca", "PASS", "fine")) == "PASS ca            fine"


def test_offline_run_of_a_good_station_passes_in_order(tmp_path):
    out = io.StringIO()
    rc = main(str(_toml(tmp_path, _identity(tmp_path))), network=False, out=out)
    lines = out.getvalue().splitlines()
    assert rc == 0, lines
    assert [line.split()[1] for line in lines[:-1]] == ORDER
    assert lines[0] == f"PASS config        loaded from {tmp_path / 'station.toml'}"
    assert lines[-1] == "selftest: 14 checks, 0 FAIL, 2 WARN"  # broker and packet-limit skipped
    assert not any(line.startswith("FAIL") for line in lines)


def test_any_fail_exits_1(tmp_path):
    ident = _identity(tmp_path)
    (ident / identity.CERT).unlink()
    out = io.StringIO()
    assert main(str(_toml(tmp_path, ident)), network=False, out=out) == 1
    assert "FAIL certificate   device.pem is missing -> install" in out.getvalue()


@pytest.mark.parametrize("text", ["[hardware]\nbackend = \"mars\"\n", "not toml ["])
def test_a_bad_config_exits_2_with_a_fail_line_first(tmp_path, text):
    path = tmp_path / "station.toml"
    path.write_text(text)
    out = io.StringIO()
    assert main(str(path), out=out) == 2
    first = out.getvalue().splitlines()[0]
    assert first.startswith("FAIL config        station.toml: ")
    assert first.endswith(f"-> fix the file; every key is explained in {EXAMPLE}")


def test_a_missing_config_exits_2(tmp_path):
    out = io.StringIO()
    assert main(str(tmp_path / "absent.toml"), out=out) == 2
    assert out.getvalue().startswith(f"FAIL config        {tmp_path / 'absent.toml'}: no station configuration here.")
    assert " -> " not in out.getvalue()  # the message carries its own remedy


def test_a_check_that_raises_is_a_fail_line_and_the_rest_still_run(tmp_path):
    config = station_config_from({"hardware": {"backend": "sim"}, "identity": {"dir": str(_identity(tmp_path))}})

    def broken() -> HardeningReport:
        raise RuntimeError("probe exploded")

    results = run_checks(config, network=False, memory_probe=broken)
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ORDER
    assert by_name["memory"].status == "FAIL"
    assert by_name["memory"].detail == "check failed: RuntimeError: probe exploded"
    assert by_name["camera"].status == "PASS"
    assert by_name["config"].detail == "given by the caller (no file)"


def test_part_packet_size_counts_the_longest_part_topic():
    config = station_config_from({})
    # clinicam/v1/ward3-cart1/capture/<32 hex>/part/4294967295 is 80 bytes; a QoS 1 PUBLISH adds
    # 2 (topic length) + 2 (packet id) + 1 (empty properties) to the payload of 122880 + 16, and
    # 1 + 3 bytes of fixed header for that remaining length.
    assert part_packet_size(config, "ward3-cart1") == 1 + 3 + 2 + 80 + 2 + 1 + 122896


@pytest.mark.parametrize(("slack", "status"), [(0, "PASS"), (-1, "FAIL"), (1000, "PASS")])
def test_packet_limit_boundary(slack, status):
    config = station_config_from({})
    size = part_packet_size(config, "ward3-cart1")
    r = check_packet_limit(config, "ward3-cart1", size + slack, receive_max=4)
    assert r.status == status
    if status == "FAIL":
        assert r.remedy.startswith("set [sealing] chunk_size to at most 122879,")
    else:
        assert r.detail.endswith("; 4 in flight")


def test_no_packet_limit_advertised():
    r = check_packet_limit(station_config_from({}), "ward3-cart1", None)
    assert r.status == "PASS"
    assert "broker sets no limit; 8 in flight" in r.detail


def test_a_damaged_key_fails_certificate_and_broker_before_any_connection(tmp_path):
    ident = _identity(tmp_path)
    (ident / identity.KEY).write_text("not a key")
    (ident / identity.KEY).chmod(0o600)
    config = station_config_from({"hardware": {"backend": "sim"}, "identity": {"dir": str(ident)}})
    by_name = {r.name: r for r in run_checks(config, memory_probe=lambda: HARDENED)}
    assert by_name["certificate"].status == "FAIL"
    assert "is not an unencrypted PEM key" in by_name["certificate"].detail
    assert by_name["broker"].status == "FAIL"
    assert by_name["broker"].detail.startswith("cannot load the TLS identity (device.pem, device.key, ca.pem)")
    assert (by_name["packet-limit"].status, by_name["packet-limit"].detail) == ("WARN", "skipped (no connection)")
