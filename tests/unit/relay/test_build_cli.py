from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from clinicam.common.errors import ConfigError
from clinicam.protocol.recipient import generate_recipient_key
from clinicam.provisioning import pki
from clinicam.relay.build import build_core
from clinicam.relay.cli import format_status
from clinicam.relay.config import relay_config_from
from clinicam.relay.metrics import TimedSink
from clinicam.relay.sinks.directory import DirectorySink
from clinicam.tools.cli import main


def config(tmp_path: Path, **relay: object) -> dict:
    ca_key = pki.new_key()
    ca = pki.make_ca(ca_key, "unit", now=pki.utcnow())
    (tmp_path / "ca.pem").write_bytes(pki.cert_pem(ca))
    (tmp_path / "recipient.key").write_bytes(generate_recipient_key("X25519").private_pem())
    return {
        "relay": {"state_dir": str(tmp_path / "state"), "status_file": str(tmp_path / "s.json"),
                  "audit_log": str(tmp_path / "audit.jsonl"), **relay},
        "identity": {"ca": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "r.pem"),
                     "key": str(tmp_path / "r.key"),
                     "recipient_keys": [str(tmp_path / "recipient.key")]},
        "sinks": [{"type": "directory", "name": "archive", "path": str(tmp_path / "out")},
                  {"type": "directory", "name": "hold", "path": str(tmp_path / "q"),
                   "role": "quarantine"}],
    }


def test_build_core_maps_config(tmp_path: Path) -> None:
    core = build_core(relay_config_from(config(tmp_path, worker=1, workers=3, standby_for=[0])))
    assert [s.name for s in core.sinks] == ["archive"]
    assert isinstance(core.quarantine, TimedSink) and core.quarantine.name == "hold"
    assert isinstance(core.quarantine.inner, DirectorySink)  # timed for the sink latency metric
    assert core.partition.shares == {0, 1} and core.partition.workers == 3
    assert core.reassembler.max_bytes == 512 * 1024 * 1024


def test_shared_group_leaves_partitioning_to_the_broker(tmp_path: Path) -> None:
    core = build_core(relay_config_from(config(tmp_path, workers=2, shared_group="relays")))
    assert core.partition.workers == 1


def test_legacy_station_certs_until_is_off_by_default_and_a_utc_date(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    assert build_core(relay_config_from(config(tmp_path))).legacy_until is None
    core = build_core(relay_config_from(config(tmp_path, legacy_station_certs_until="2027-03-31")))
    assert core.legacy_until == datetime(2027, 3, 31, tzinfo=UTC)
    for bad in ("2027-02-30", "31/03/2027", "2027-03-31T00:00"):
        with pytest.raises(ConfigError, match="legacy_station_certs_until"):
            relay_config_from(config(tmp_path, legacy_station_certs_until=bad))


def test_unreadable_recipient_key_is_config_error(tmp_path: Path) -> None:
    data = config(tmp_path)
    data["identity"]["recipient_keys"] = [str(tmp_path / "missing.key")]
    with pytest.raises(ConfigError):
        build_core(relay_config_from(data))


def test_status_command_prints_table_and_json(tmp_path: Path) -> None:
    data = config(tmp_path)
    toml = tmp_path / "relay.toml"
    lines = []
    for section in ("relay", "identity"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in data[section].items()]
    for sink in data["sinks"]:
        lines.append("[[sinks]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in sink.items()]
    toml.write_text("\n".join(lines) + "\n")
    assert main(["relay", "status", "--config", str(toml)]) == 2  # no status file: no relay here
    status = {"updated": "x", "counters": {"stored": 2},
              "stations": {"station-a": {"state": "online", "pending": 1}}}
    (tmp_path / "s.json").write_text(json.dumps(status))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # a file that does not name its writer: a warning
        assert main(["relay", "status", "--config", str(toml), "--json"]) == 1
    report = json.loads(out.getvalue())
    assert report.pop("assessment")["exit"] == 1
    assert report == status
    text = format_status(status)
    assert "station-a" in text and "online" in text and "stored" in text
    status["stations"]["station-a"]["renewal"] = {"state": "failed", "at": None, "reason": "revoked"}
    assert "failed:revoked" in format_status(status)


def test_relay_status_shows_every_certificate_and_warns_within_the_renewal_margin(tmp_path: Path) -> None:
    """Stations' end dates from their status; the relay's, its CA's and the registrar's from the files."""
    import datetime as dt

    ca_key = pki.new_key()
    ca = pki.make_ca(ca_key, "unit", now=pki.utcnow())
    (tmp_path / "ca.pem").write_bytes(pki.cert_pem(ca))
    relay = pki.issue(ca_key, ca, pki.new_key().public_key(), "relay-1", now=pki.utcnow(), days=20)
    (tmp_path / "r.pem").write_bytes(pki.cert_pem(relay))
    registrar = tmp_path / "registrar.toml"
    registrar.write_text(f'[identity]\ncert = "{tmp_path / "r.pem"}"\n[issuing]\ncert = "{tmp_path / "gone.pem"}"\n')
    toml = tmp_path / "relay.toml"
    toml.write_text(f'[relay]\nstatus_file = "{tmp_path / "s.json"}"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[identity]\nca = "{tmp_path / "ca.pem"}"\ncert = "{tmp_path / "r.pem"}"\n'
                    f'[[sinks]]\ntype = "directory"\nname = "a"\npath = "{tmp_path}"\n')
    soon = (pki.utcnow() + dt.timedelta(days=10, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (pki.utcnow() + dt.timedelta(days=300, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"updated": "x", "stations": {"ward-1": {"state": "online", "cert_not_after": later},
                                           "ward-2": {"state": "online", "cert_not_after": soon}}}
    (tmp_path / "s.json").write_text(json.dumps(status))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["relay", "status", "--config", str(toml), "--registrar", str(registrar)])
    text = out.getvalue()
    stations = {line.split()[0]: line for line in text.splitlines() if line.startswith("ward-")}
    assert " 300 " in stations["ward-1"] and "RENEW" not in stations["ward-1"], text  # cert_days
    assert " 10  RENEW " in stations["ward-2"], text
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in text.splitlines()}
    assert rows[("relay", "relay-1")][1:] == ["19", "RENEW"], text  # 20 days, backdated 5 min
    assert len(rows[("site-ca", "clinicam")][-1]) == 4, text  # ten years: days left, no state
    assert rows[("registrar", "relay-1")][1:] == ["19", "RENEW"], text  # the registrar runs here too
    assert "WARNING: station ward-2: certificate expires in 10 d" in text
    assert "WARNING: relay certificate relay-1 expires in 19 d: 'clinicam provision reissue SITE relay-1'" in text
    assert f"WARNING: registrar.toml [issuing] cert: {tmp_path / 'gone.pem'}: cannot be read" in text
    assert code == 1  # warnings only (the file names no writer: also a warning)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["relay", "status", "--config", str(toml), "--registrar", str(registrar), "--json",
              "--renewal-margin-days", "5"])
    certs = json.loads(out.getvalue())["assessment"]["certificates"]
    assert {c["name"]: c["state"] for c in certs if c["certificate"] == "station"} == {"ward-1": "ok", "ward-2": "ok"}
