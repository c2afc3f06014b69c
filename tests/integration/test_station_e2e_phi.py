"""The whole ward round writes no file but its event store and leaks no identifier (issue 6,
"Must show" 5; the event store, ``[events] dir``, holds audit events no relay has logged yet).

The station process ran the demo's ward round under ``strace -f -y`` over file,
descriptor and write calls (``station_kit.traced_ward_round``, shared with the
ward-round tests). Each absence has a positive control (DESIGN §9): the parser flags
the same trace once its pipe writes are pointed at a file, and the same canary search
finds every identifier in the files the relay opened.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from station_kit import RoundRecord, strace_parse, traced_ward_round

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")]


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> RoundRecord:
    return traced_ward_round(tmp_path_factory.mktemp("e2e-round"))


def canaries(record: RoundRecord) -> dict[str, str]:
    who = record.who
    return {"patient A": who.patient_a, "patient B": who.patient_b, "operator": who.operator}


def found(record: RoundRecord, blob: str | bytes) -> set[str]:
    """Which identifiers ``blob`` holds: the one search used for absence and presence."""
    data = blob.encode() if isinstance(blob, str) else blob
    return {name for name, value in canaries(record).items() if value.encode() in data}


def _outside_event_store(record: RoundRecord, writes: list[str]) -> list[str]:
    """Writes except to the station's event store ([events] dir: ids and codes only)."""
    return [w for w in writes if f"{record.events_dir}/" not in w]


def test_the_station_writes_to_no_file_but_its_event_store(record: RoundRecord) -> None:
    assert record.exit_code == 0
    writes = strace_parse.disk_writes(record.trace)
    assert _outside_event_store(record, writes) == []
    assert any("events.json" in w for w in writes)  # control: the store's writes are seen


def test_the_event_store_holds_no_identifier(record: RoundRecord) -> None:
    """What the station writes to its persistent partition: audit events it had not yet
    had acknowledged (each written through), never an identifier of the round."""
    assert found(record, record.event_store) == set()
    assert json.loads(record.event_store)["v"] == 1  # control: the store was read


def test_positive_control_the_trace_saw_the_station_and_would_catch_a_file(record: RoundRecord) -> None:
    assert re.search(r"openat\(.*device\.key", record.trace)  # the station itself was traced …
    assert "write(1<pipe:" in record.trace  # … with its event stream …
    assert "socket:[" in record.trace  # … and its broker connection
    as_file = record.trace.replace("<pipe:[", "</var/lib/clinicam/events[")
    assert len(strace_parse.disk_writes(as_file)) >= 5  # the same writes to a file are caught


def test_no_identifier_in_the_station_streams_or_the_relay_log(record: RoundRecord) -> None:
    assert found(record, record.stdout) == set()
    assert found(record, record.stderr) == set()
    relay_dir = record.relay_log.parent
    for name in ("relay.log", "audit.jsonl", "status.json"):
        assert found(record, (relay_dir / name).read_bytes()) == set(), name


def test_positive_control_the_search_finds_every_identifier_in_the_relay_output(record: RoundRecord) -> None:
    opened = b"".join(p.read_bytes() for p in record.relay_files if p.suffix == ".json")
    assert found(record, opened) == {"patient A", "patient B", "operator"}
    sealed = [e["capture_id"] for e in record.events if e.get("status") == "sealed"]
    assert sealed and all(cid in record.stdout for cid in sealed)  # the streams were not empty
    assert record.relay_log.read_text().strip()
