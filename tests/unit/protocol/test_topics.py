"""Topic names of DESIGN §5: exact strings, strict parsing, no PHI-shaped levels.

The topics here are spelled by hand on purpose: they are the expected answers for
``Topics`` and the malformed names it must refuse.
"""

from __future__ import annotations

import pytest
from clinicam.common.errors import TopicError
from clinicam.protocol.topics import DEFAULT_PREFIX, ParsedTopic, Topics

CID = "0123456789abcdef0123456789abcdef"
T = Topics()


def test_exact_topic_strings() -> None:
    assert T.part("cam-01", CID, 0) == f"clinicam/v1/cam-01/capture/{CID}/part/0"
    assert T.part("cam-01", CID, 12) == f"clinicam/v1/cam-01/capture/{CID}/part/12"
    assert T.manifest("cam-01", CID) == f"clinicam/v1/cam-01/capture/{CID}/manifest"
    assert [T.ack("cam-01"), T.status("cam-01"), T.event("cam-01"), T.cmd("cam-01")] == [
        "clinicam/v1/cam-01/ack", "clinicam/v1/cam-01/status",
        "clinicam/v1/cam-01/event", "clinicam/v1/cam-01/cmd"]
    assert Topics("site/a").ack("cam-01") == "site/a/cam-01/ack"


def test_subscriptions_and_acl() -> None:
    assert T.relay_subscriptions() == ["clinicam/v1/+/capture/#", "clinicam/v1/+/status",
                                       "clinicam/v1/+/event"]
    assert T.station_subscriptions("cam-01") == ["clinicam/v1/cam-01/ack",
                                                 "clinicam/v1/cam-01/cmd"]
    write, read = T.station_acl("cam-01")
    assert write == ["clinicam/v1/cam-01/capture/#", "clinicam/v1/cam-01/status",
                     "clinicam/v1/cam-01/event"]
    assert read == ["clinicam/v1/cam-01/ack", "clinicam/v1/cam-01/cmd"]


def test_parse_round_trips() -> None:
    assert T.parse(T.part("cam-01", CID, 7)) == ParsedTopic("cam-01", "part", CID, 7)
    assert T.parse(T.manifest("cam-01", CID)) == ParsedTopic("cam-01", "manifest", CID)
    for kind in ("ack", "status", "event", "cmd"):
        assert T.parse(f"clinicam/v1/cam-01/{kind}") == ParsedTopic("cam-01", kind)


@pytest.mark.parametrize("topic", [
    f"other/v1/cam-01/capture/{CID}/part/0",
    f"clinicam/v1/CAM-01/capture/{CID}/part/0",
    f"clinicam/v1/cam-01/capture/{CID.upper()}/part/0",
    f"clinicam/v1/cam-01/capture/{CID}/part/01",
    f"clinicam/v1/cam-01/capture/{CID}/part/-1",
    f"clinicam/v1/cam-01/capture/{CID}/part/",
    f"clinicam/v1/cam-01/capture/{CID}/part/4294967296",
    f"clinicam/v1/cam-01/capture/{CID}/part/0/extra",
    f"clinicam/v1/cam-01/capture/{CID}",
    f"clinicam/v1/cam-01/capture/{CID[:-1]}/manifest",
    "clinicam/v1/cam-01/wipe",
    "clinicam/v1/cam-01",
    "clinicam/v1/ab/ack",
    "clinicam/v1x/cam-01/ack",
])
def test_parse_refuses(topic: str) -> None:
    with pytest.raises(TopicError):
        T.parse(topic)


@pytest.mark.parametrize(("fn", "args"), [
    (T.part, ("cam/01", CID, 0)), (T.part, ("cam-01", CID, -1)), (T.part, ("cam-01", CID, True)),
    (T.part, ("cam-01", CID, 2**32)), (T.manifest, ("cam-01", "+")), (T.ack, ("#",)),
    (T.event, ("CANARY-PATIENT",)),
])
def test_builders_refuse_bad_levels(fn: object, args: tuple[object, ...]) -> None:
    with pytest.raises(TopicError):
        fn(*args)  # type: ignore[operator]


@pytest.mark.parametrize("prefix", ["", "/a", "a/", "a//b", "a/+/b", "a/#", "$SYS/x"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(TopicError):
        Topics(prefix)


def test_topic_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        T.parse("nope")


def test_the_default_prefix_is_the_v1_contracts() -> None:
    assert DEFAULT_PREFIX == "clinicam/v1" == Topics().prefix
