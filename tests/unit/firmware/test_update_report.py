"""The station's view of A/B updates: the image version it reports as ``fw`` and the
result line update-confirm leaves after a trial boot (firmware/update_report.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from clinicam.firmware.update_report import UpdateResult, image_version, update_result
from clinicam.protocol.events import AuditEvent
from clinicam.protocol.fields import utc_stamp


def test_image_version_read_and_checked(tmp_path: Path) -> None:
    f = tmp_path / "image-version"
    f.write_text("2.0.0\n")
    assert image_version(f) == "2.0.0"
    f.write_text("2.0.0; rm -rf /\n")
    assert image_version(f) is None
    assert image_version(tmp_path / "absent") is None


@pytest.mark.parametrize(("line", "expected"), [
    ("updated 2.0.0\n", UpdateResult("updated", "2.0.0")),
    ("update-failed 3.0.0\n", UpdateResult("update-failed", "3.0.0")),
    ("rebooted 3.0.0\n", None),
    ("updated\n", None),
    ("updated 2.0.0 extra\n", None),
])
def test_update_result_parsed_strictly(tmp_path: Path, line: str, expected: UpdateResult | None) -> None:
    f = tmp_path / "result"
    f.write_text(line)
    assert update_result(f) == expected


def test_update_result_absent_is_none(tmp_path: Path) -> None:
    assert update_result(tmp_path / "none") is None


def test_update_event_carries_the_version_only() -> None:
    body = AuditEvent("update-failed", utc_stamp(0.0), fw="3.0.0").as_dict()
    assert body == {"event": "update-failed", "at": "1970-01-01T00:00:00.000Z", "fw": "3.0.0"}
