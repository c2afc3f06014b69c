from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from clinicam.protocol.reasons import SinkError
from clinicam.relay.sinks.directory import DirectorySink

CID = "0123456789abcdef" * 2


@dataclass
class Opened:
    device: str = "station-a"
    capture_id: str = CID
    manifest: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=lambda: {"patient": {"id": "SYNTH-1"}})
    image: bytes = b"\xff\xd8jpeg\xff\xd9"


def test_store_writes_image_and_metadata(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    ref = sink.store(Opened())
    assert ref == f"station-a/{CID}"
    assert (tmp_path / "station-a" / f"{CID}.jpg").read_bytes() == Opened().image
    meta = json.loads((tmp_path / "station-a" / f"{CID}.json").read_text())
    assert meta["patient"]["id"] == "SYNTH-1"
    assert not [p for p in (tmp_path / "station-a").iterdir() if p.name.startswith(".")]


def test_store_is_idempotent(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    first = sink.store(Opened())
    stat = (tmp_path / "station-a" / f"{CID}.jpg").stat()
    assert sink.store(Opened(image=b"other")) == first
    assert (tmp_path / "station-a" / f"{CID}.jpg").stat().st_mtime_ns == stat.st_mtime_ns


def test_void_adds_marker_and_keeps_files(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    sink.store(Opened())
    sink.void("station-a", CID)
    names = sorted(p.name for p in (tmp_path / "station-a").iterdir())
    assert names == [f"{CID}.jpg", f"{CID}.json", f"{CID}.void"]


@pytest.mark.parametrize("device,cid", [("../etc", CID), ("station-a", "../../x" + "0" * 25)])
def test_path_escape_refused(tmp_path: Path, device: str, cid: str) -> None:
    with pytest.raises(SinkError) as exc:
        DirectorySink(tmp_path).store(Opened(device=device, capture_id=cid))
    assert exc.value.reason == "sink-refused"


def test_unwritable_root_is_sink_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SinkError) as exc:
        DirectorySink(blocker).store(Opened())
    assert exc.value.reason == "sink-unavailable"
