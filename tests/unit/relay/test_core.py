"""RelayCore against captures sealed by the real Sealer: no broker, no threads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clinicam.common.errors import SinkUnknownPatient
from clinicam.protocol.acks import Ack
from clinicam.protocol.manifest import sign_event
from clinicam.protocol.reasons import SinkError
from clinicam.protocol.sealing import SealedCapture
from clinicam.protocol.topics import Topics
from clinicam.relay.audit import AuditLog
from clinicam.relay.core import RelayCore
from clinicam.relay.partition import Partition, device_bucket
from clinicam.relay.reassembly import Reassembler
from clinicam.relay.sinks.directory import DirectorySink

T = Topics()  # the builders the station publishes with
P = T.prefix


def messages(device: str, cap: SealedCapture) -> list[tuple[str, bytes]]:
    out = [(T.part(device, cap.capture_id, i), bytes(p)) for i, p in enumerate(cap.parts)]
    return [*out, (T.manifest(device, cap.capture_id), cap.manifest)]


def feed(core: RelayCore, msgs: list[tuple[str, bytes]]) -> list[Ack]:
    acks: list[Ack] = []
    for topic, payload in msgs:
        acks += core.handle(topic, payload)
    return acks


class Flaky:
    """A sink that fails ``failures`` times, then files into a DirectorySink."""

    def __init__(self, root: Path, failures: int, exc: Exception) -> None:
        self.name, self.inner, self.failures, self.exc, self.calls = "flaky", DirectorySink(root), \
            failures, exc, 0

    def store(self, capture: Any) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return self.inner.store(capture)

    def void(self, device: str, capture_id: str) -> None:
        self.inner.void(device, capture_id)


@pytest.fixture
def core(unit_site: Any, tmp_path: Path) -> RelayCore:
    return RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient],
                     sinks=[DirectorySink(tmp_path / "out")], audit=AuditLog(tmp_path / "a.jsonl"))


def test_capture_stored_with_refs_and_files(core: RelayCore, unit_site: Any, tmp_path: Path) -> None:
    cap = unit_site.seal("station-a", b"\xff\xd8" + b"J" * 2500)
    acks = feed(core, messages("station-a", cap))
    ref = f"station-a/{cap.capture_id}"
    assert acks == [Ack("station-a", cap.capture_id, "stored", None, {"directory": ref})]
    assert json.loads(acks[0].payload()) == {"capture_id": cap.capture_id, "status": "stored",
                                             "reason": None, "ref": {"directory": ref}}
    assert Ack.parse(acks[0].payload(), "station-a") == acks[0]  # what the station reads back
    assert (tmp_path / "out" / f"{ref}.jpg").read_bytes() == b"\xff\xd8" + b"J" * 2500


def test_parts_after_manifest_also_complete(core: RelayCore, unit_site: Any) -> None:
    cap = unit_site.seal("station-a", b"x" * 3000)
    msgs = messages("station-a", cap)
    acks = feed(core, [msgs[-1], *reversed(msgs[:-1])])
    assert [a.status for a in acks] == ["stored"]


def test_identical_resend_reacked_with_same_refs_changed_is_conflict(
        core: RelayCore, unit_site: Any) -> None:
    cap = unit_site.seal("station-a", b"x" * 1500)
    first = feed(core, messages("station-a", cap))
    again = feed(core, messages("station-a", cap))
    assert again == first
    # a re-sealed manifest under the same id: same device, different bytes
    m = json.loads(cap.manifest)
    m["m"]["seq"] += 1
    changed = json.dumps(m).encode()
    acks = core.handle(T.manifest("station-a", cap.capture_id), changed)
    assert [(a.status, a.reason) for a in acks] == [("rejected", "duplicate-conflict")]


def test_manifest_of_a_under_b_topic_is_identity(core: RelayCore, unit_site: Any) -> None:
    cap = unit_site.seal("station-a", b"x" * 1500)
    acks = feed(core, messages("station-b", cap))
    assert [(a.device, a.status, a.reason) for a in acks] == [("station-b", "rejected", "identity")]


def test_reused_capture_id_of_other_device_does_not_mark_it_stored(
        core: RelayCore, unit_site: Any) -> None:
    cap_b = unit_site.seal("station-b", b"b" * 1500)
    cap_a = unit_site.seal("station-a", b"a" * 1500)
    # A publishes its own capture under B's capture id, in its own tree
    msgs = [(t.replace(cap_a.capture_id, cap_b.capture_id), p)
            for t, p in messages("station-a", cap_a)]
    acks = feed(core, msgs)
    assert [(a.device, a.status, a.reason) for a in acks] == [("station-a", "rejected", "identity")]
    assert core.ledger.get("station-b", cap_b.capture_id) is None
    assert [a.status for a in feed(core, messages("station-b", cap_b))] == ["stored"]


@pytest.mark.parametrize("mutate,reason", [
    (lambda msgs: [(t, b"garbage" if t.endswith("manifest") else p) for t, p in msgs],
     "malformed"),
    (lambda msgs: [(t, p[:-1] + bytes([p[-1] ^ 1]) if t.endswith("/part/1") else p)
                   for t, p in msgs], "parts"),
    (lambda msgs: [*msgs[:-1], (msgs[-1][0].replace("manifest", "part/99"), b"x"), msgs[-1]],
     "parts"),
])
def test_bad_captures_rejected_then_valid_still_flows(
        core: RelayCore, unit_site: Any, mutate: Any, reason: str) -> None:
    bad = unit_site.seal("station-a", b"x" * 2500)
    acks = feed(core, mutate(messages("station-a", bad)))
    assert (acks[0].status, acks[0].reason) == ("rejected", reason)
    good = unit_site.seal("station-a", b"y" * 2500)
    assert [a.status for a in feed(core, messages("station-a", good))] == ["stored"]


def test_unknown_topics_and_oversize_parts(unit_site: Any, tmp_path: Path) -> None:
    core = RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient],
                     sinks=[DirectorySink(tmp_path)], reassembler=Reassembler(max_part_bytes=100))
    # malformed on purpose (Topics would refuse to build them): spelled by hand
    assert core.handle(f"{P}/station-a/capture/xyz/part/0", b"x") == []
    assert core.handle(f"{P}/station-a/capture/{'0' * 32}/part/01", b"x") == []
    assert core.handle("other/thing", b"x") == []
    acks = core.handle(T.part("station-a", "0" * 32, 0), b"x" * 101)
    assert [(a.status, a.reason) for a in acks] == [("rejected", "too-large")]
    assert core.board.counters["ignored-topic"] == 3


def test_sink_failing_twice_means_retry_then_stored_once(unit_site: Any, tmp_path: Path) -> None:
    flaky = Flaky(tmp_path, 2, SinkError("sink-unavailable"))
    core = RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient], sinks=[flaky])
    cap = unit_site.seal("station-a", b"x" * 1500)
    statuses = [(a.status, a.reason) for _ in range(3) for a in feed(core, messages("station-a", cap))]
    assert statuses == [("retry", "sink-unavailable")] * 2 + [("stored", None)]
    assert len(list((tmp_path / "station-a").glob("*.jpg"))) == 1


def test_unknown_patient_goes_to_quarantine_never_rejected(unit_site: Any, tmp_path: Path) -> None:
    flaky = Flaky(tmp_path / "emr", 99, SinkUnknownPatient("unknown"))
    core = RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient], sinks=[flaky])
    cap = unit_site.seal("station-a", b"x" * 1500)
    assert [(a.status, a.reason) for a in feed(core, messages("station-a", cap))] == [
        ("retry", "sink-refused")]
    q = DirectorySink(tmp_path / "q", name="quarantine")
    core = RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient], sinks=[flaky],
                     quarantine=q)
    acks = feed(core, messages("station-a", cap))
    assert acks[0].status == "stored"
    assert acks[0].ref == {"flaky": "quarantined", "quarantine": f"station-a/{cap.capture_id}"}


def test_signed_void_from_own_device_only(core: RelayCore, unit_site: Any, tmp_path: Path) -> None:
    cap = unit_site.seal("station-a", b"x" * 1500)
    feed(core, messages("station-a", cap))
    event = {"event": "void", "at": "2026-11-26T12:00:00.000Z", "capture_id": cap.capture_id}
    by_b = sign_event(event, unit_site.keys["station-b"])
    core.handle(T.event("station-b"), json.dumps(by_b).encode())  # not B's capture
    forged = sign_event(event, unit_site.keys["station-b"])
    core.handle(T.event("station-a"), json.dumps(forged).encode())  # wrong key
    void = tmp_path / "out" / "station-a" / f"{cap.capture_id}.void"
    assert not void.exists()
    good = sign_event(event, unit_site.keys["station-a"])
    core.handle(T.event("station-a"), json.dumps(good).encode())
    assert void.exists()
    assert (tmp_path / "out" / "station-a" / f"{cap.capture_id}.jpg").exists()


def test_partition_ignores_other_workers_devices(unit_site: Any, tmp_path: Path) -> None:
    share_a = device_bucket("station-a", 2)
    other = Partition(worker=1 - share_a, workers=2)
    core = RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient],
                     sinks=[DirectorySink(tmp_path)], partition=other)
    cap = unit_site.seal("station-a", b"x" * 1500)
    assert feed(core, messages("station-a", cap)) == []
    standby = RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient],
                        sinks=[DirectorySink(tmp_path)],
                        partition=Partition(worker=1 - share_a, workers=2, standby_for=(share_a,)))
    assert [a.status for a in feed(standby, messages("station-a", cap))] == ["stored"]


class KnowsNobody(Flaky):
    """An EMR-like sink that can check the patient before anything is stored."""

    def check_patient(self, capture: Any) -> None:
        raise SinkUnknownPatient("unknown")


def test_patient_checked_before_any_sink_stores(unit_site: Any, tmp_path: Path) -> None:
    pacs = DirectorySink(tmp_path / "pacs", name="pacs")
    emr = KnowsNobody(tmp_path / "emr", 0, SinkError("sink-unavailable"))
    core = RelayCore(ca_cert=unit_site.ca_cert, recipients=[unit_site.recipient],
                     sinks=[pacs, emr], quarantine=DirectorySink(tmp_path / "q", name="hold"))
    cap = unit_site.seal("station-a", b"x" * 1500)
    [ack] = feed(core, messages("station-a", cap))
    assert (ack.status, ack.ref) == ("stored", {"pacs": "quarantined", "flaky": "quarantined",
                                                "hold": f"station-a/{cap.capture_id}"})
    assert not (tmp_path / "pacs").exists() and emr.calls == 0
