"""Two relay processes partition the stations; one is killed, a standby takes over.

The relays run as ``clinicam relay run`` children, so the kill is a real SIGKILL of
a worker in the middle of a stream (DESIGN §5 "Scaling the relay").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clinicam.relay.partition import device_bucket
from test_delivery_support import (
    RelayProcess,
    archived,
    audit_decisions,
    jpeg_like,
    make_station,
    relay_toml,
)


def test_partitioned_relays_one_killed_standby_takes_over(
        site: Any, broker: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    shares = {device_bucket(d, 2): d for d in ("station-a", "station-b")}
    assert sorted(shares) == [0, 1]  # one station in each share
    victim = shares[0]  # served by worker 0 (relay-1), which will be killed
    survivor = shares[1]
    w0 = RelayProcess(relay_toml(site, broker.port, tmp_path / "w0", archive, n=1, worker=0,
                                 workers=2))
    w1 = RelayProcess(relay_toml(site, broker.port, tmp_path / "w1", archive, n=2, worker=1,
                                 workers=2))
    standby = None
    stations = {d: make_station(site, d, broker.port, ack_timeout_s=3.0) for d in shares.values()}
    try:
        ids = {d: [st.capture(jpeg_like(150_000, seed=i + 100 * k)) for i in range(10)]
               for k, (d, st) in enumerate(stations.items())}
        stations[victim].wait_for(lambda _: len(stations[victim].stored()) >= 3)
        w0.kill()  # mid-stream: the rest of the victim's captures are unacknowledged
        assert len(stations[victim].stored()) < 10
        standby = RelayProcess(relay_toml(site, broker.port, tmp_path / "standby", archive,
                                          n=1, worker=0, workers=2))
        for d, st in stations.items():
            st.wait_stored(ids[d])
    finally:
        for st in stations.values():
            st.uplink.stop()
        for proc in (w1, standby):
            if proc is not None:
                assert proc.stop() == 0
    every = ids[victim] + ids[survivor]
    files = archived(archive)
    assert sorted(files) == sorted(every)  # nothing lost
    assert all(exts == [".jpg", ".json"] for exts in files.values())  # nothing doubled
    for d, st in stations.items():
        assert sorted(st.stored()) == sorted(ids[d])
        assert st.vault.pending_count == 0
    served = {name: {x["device"] for x in audit_decisions(tmp_path / name / "audit.jsonl")}
              for name in ("w0", "w1", "standby")}
    # w0 may have filed all the victim's captures before the kill (only some acks were
    # lost): then the standby has nothing to file, only re-sends its ledger never saw.
    w0_filed = {json.loads(line)["capture_id"] for line in (tmp_path / "w0" / "ledger.jsonl").read_text().splitlines()}
    left_for_standby = set(ids[victim]) - w0_filed
    assert served == {"w0": {victim}, "w1": {survivor}, "standby": {victim} if left_for_standby else set()}
    for name, proc in (("w1", w1), ("standby", standby)):
        assert proc is not None and b"Traceback" not in proc.log, name
