"""The demo's ward round as data (issue 6, "Must show" 1).

A real station process on simulated hardware plays ``clinicam.tools.scenario.
ward_round`` (badge, wristband, cards, three photos, a second wristband, two photos,
END, a photo with nobody bound) through a real broker into a real relay; the tests
read what the relay filed. The same run is traced for the strace/PHI tests
(``test_station_e2e_phi.py``). Identifiers are synthetic.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from clinicam.tools.scenario import card, show, site_code
from station_kit import RoundRecord, Setup, ids, opening, press, traced_ward_round

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")]
SNOMED = "http://snomed.info/sct"


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> RoundRecord:
    return traced_ward_round(tmp_path_factory.mktemp("e2e-round"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with Setup(tmp_path_factory.mktemp("e2e-consent"), "e2e-consent") as s:
        yield s


def sealed(record: RoundRecord) -> list[str]:
    return [e["capture_id"] for e in record.events if e.get("kind") == "capture" and e["status"] == "sealed"]


def filed(record: RoundRecord) -> list[dict[str, Any]]:
    """The relay's metadata of each capture, in the order the station sealed them."""
    return [json.loads((record.relay_dir / f"{cid}.json").read_text()) for cid in sealed(record)]


def test_five_photos_stored_each_once_and_the_station_exits_cleanly(record: RoundRecord) -> None:
    stored = [e["capture_id"] for e in record.events if e.get("kind") == "capture" and e["status"] == "stored"]
    assert len(sealed(record)) == 5
    assert sorted(stored) == sorted(sealed(record))
    assert record.exit_code == 0
    names = {p.name for p in record.relay_files}
    assert names == {f"{cid}{ext}" for cid in sealed(record) for ext in (".json", ".jpg")}


def test_each_photo_carries_its_patient_operator_and_tags(record: RoundRecord) -> None:
    who, leg = record.who, site_code("Lower leg")
    first, second = filed(record)[:3], filed(record)[3:]
    for i, m in enumerate(first, start=1):
        assert m["patient"] == {"id": who.patient_a, "issuer": "GS1", "encounter": None}
        assert m["operator"] == {"id": who.operator, "issuer": "GS1"}
        assert (m["purpose"], m["laterality"], m["consent"]) == ("WOUND", "LEFT", "VERBAL")
        assert m["body_site"] == {"code": leg, "system": SNOMED, "display": "Lower leg"}
        assert m["session"]["index"] == i
        assert m["device"]["id"] == record.device and m["clock_synced"] is True
    for i, m in enumerate(second, start=1):  # a new session: the first one's cards are gone
        assert m["patient"]["id"] == who.patient_b and m["operator"]["id"] == who.operator
        assert (m["purpose"], m["consent"], m["body_site"], m["laterality"]) == ("DERM", "WRITTEN", None, None)
        assert m["session"]["index"] == i
    assert len({m["session"]["id"] for m in first}) == 1
    assert len({m["session"]["id"] for m in second}) == 1
    assert first[0]["session"]["id"] != second[0]["session"]["id"]


def test_the_filed_image_is_the_one_the_metadata_describes(record: RoundRecord) -> None:
    for cid, m in zip(sealed(record), filed(record), strict=True):
        jpeg = (record.relay_dir / f"{cid}.jpg").read_bytes()
        assert m["image"]["media_type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
        assert (m["image"]["size"], m["image"]["sha256"]) == (len(jpeg), hashlib.sha256(jpeg).hexdigest())


def test_the_switch_is_signalled_and_the_photo_after_end_is_refused(record: RoundRecord) -> None:
    end = next(i for i, e in enumerate(record.events) if "END card" in str(e.get("mark", "")))
    after = record.events[end:]
    signals = [e["pattern"] for e in record.events if e.get("kind") == "signal"]
    assert "patient_switched" in signals
    assert [e["pattern"] for e in after if e.get("kind") == "signal"][-1] == "no_patient"
    assert not [e for e in after if e.get("kind") == "capture" and e["status"] == "sealed"]


def test_consent_required_refuses_a_photo_before_the_consent_card(setup: Setup) -> None:
    device, who = "e2e-consent", ids(2)
    steps = [
        *opening(who, consent=False),
        *press(),
        {"mark": "consent given"},
        show(card("CONSENT", "WRITTEN")),
        *press(),
        {"wait_for": {"stored": 1}, "timeout_s": 60},
    ]
    station = setup.station(device, steps)
    station.wait_script()
    assert station.terminate() == 0
    marked = next(i for i, e in enumerate(station.events) if e.get("mark") == "consent given")
    before = [e for e in station.events[:marked] if e.get("kind") in ("signal", "capture")]
    assert "consent_needed" in [e.get("pattern") for e in before]
    assert not [e for e in before if e.get("kind") == "capture"]  # nothing was taken for it
    (only,) = station.captures("sealed")
    assert station.captures("stored") == [only]
    assert setup.stored_ids(device) == {only}
    assert setup.metadata(device, only)["consent"] == "WRITTEN"


def test_the_relay_audit_log_names_every_station_event_of_the_round(record: RoundRecord) -> None:
    lines = [json.loads(x) for x in (record.relay_log.parent / "audit.jsonl").read_text().splitlines()]
    station = [x for x in lines if x.get("source") == "station" and x.get("device") == record.device]
    assert len(station) >= 4  # two sessions opened, two closed (switch, END)
    assert all("event" in x for x in station), station
    names = [x["event"] for x in station]
    assert names.count("session-opened") == 2 and names.count("session-closed") == 2
