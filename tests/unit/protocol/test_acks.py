"""The ack of DESIGN §5: what the relay builds, the station parses, and nothing else."""

from __future__ import annotations

import json

import pytest
from clinicam.protocol.acks import Ack, AckStatus
from clinicam.protocol.reasons import REASON_CODES, Reason

CID = "ab" * 16


@pytest.mark.parametrize("ack", [
    Ack("station-a", CID, AckStatus.STORED, None, {"pacs": "1.2.3", "emr": "Media/9"}),
    Ack("station-a", CID, AckStatus.REJECTED, Reason.SIGNATURE),
    Ack("station-a", CID, AckStatus.RETRY, Reason.SINK_UNAVAILABLE),
    Ack("station-a", CID, "retry", None),
])
def test_what_the_relay_builds_the_station_parses_back(ack: Ack) -> None:
    assert Ack.parse(ack.payload(), "station-a") == ack
    assert set(json.loads(ack.payload())) == {"capture_id", "status", "reason", "ref"}


@pytest.mark.parametrize("payload", [
    Ack("s", CID, "gone").payload(),  # unknown status
    Ack("s", "AB" * 16, "stored").payload(),  # capture id not lowercase hex
    Ack("s", CID, "stored", "free text with PHI").payload(),  # reason outside the closed set
    Ack("s", CID, "stored", None, {"d": 1}).payload(),  # type: ignore[dict-item]
    b'{"capture_id": "x"}',
    b'{"capture_id": "' + CID.encode() + b'", "status": "stored", "reason": null}',  # a key missing
    b"not json",
    b"\xff",
    b"[]",
])
def test_anything_else_is_not_an_ack(payload: bytes) -> None:
    assert Ack.parse(payload, "s") is None


def test_the_reason_codes_are_the_closed_set_of_design_5() -> None:
    assert {
        "malformed", "identity", "certificate", "signature", "recipient", "parts", "decrypt", "image",
        "duplicate-conflict", "sink-unavailable", "sink-auth", "sink-refused", "quarantined",
        "too-large", "incomplete-timeout"} == REASON_CODES
    assert all(isinstance(r, str) and r == r.value for r in Reason)
