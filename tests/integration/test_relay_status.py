"""``clinicam relay status`` tells the truth (issue: a dead relay's stale file, exit 0).

A real relay process, real stations, the real broker: the status says how old its data
is and whether its writer runs, keeps every station across a relay *and* broker
restart (retained messages gone), lists provisioned stations never seen and every
certificate's days left (warning within the renewal margin), and its exit code is
0/1/2 as documented.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from clinicam.firmware.workflow.events import RelayPresenceChanged
from clinicam.tools.cli import main
from test_delivery_support import RelayProcess, eventually, jpeg_like, make_station, relay_toml


def status(config: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["relay", "status", "--config", str(config), *extra])
    return code, out.getvalue()


def test_status_reports_relay_liveness_unseen_stations_and_exit_codes(
        site: Any, broker: Any, tmp_path: Path) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    config = relay_toml(site, broker.port, state, archive, n=1, worker=0, workers=1)
    register = ["--register", str(site.site.register_path)]
    relay = RelayProcess(config)
    a = make_station(site, "station-a", broker.port, presence_settle_s=0.5)
    b = None
    try:
        a.wait_stored([a.capture(jpeg_like(20_000, seed=1))])
        eventually(lambda: '"station-a"' in (state / "status.json").read_text())
        code, text = status(config)
        assert code == 0, text  # all well
        assert "relay-1 (pid" in text and "running, connected, serving" in text and "written" in text
        row = next(line for line in text.splitlines() if line.startswith("station-a"))
        assert " 396 " in row and "RENEW" not in row, text  # 397 days (cert_days, from its status)
        relay_cert = next(line for line in text.splitlines() if line.startswith("relay        relay-1"))
        assert relay_cert.split()[-1] == "396", text  # the relay's own, from its file
        code, text = status(config, "--renewal-margin-days", "500")  # all within the margin now
        assert code == 1 and "WARNING: station station-a: certificate expires in 396 d" in text, text
        assert "WARNING: relay certificate relay-1 expires in 396 d" in text
        row = next(line for line in text.splitlines() if line.startswith("station-a"))
        assert " 396  RENEW " in row, row
        code, text = status(config, *register)
        assert code == 1 and "never seen" in text and "station-b" in text  # provisioned, unseen: a warning

        relay.kill()  # SIGKILL: nobody rewrites the file now
        code, text = status(config)
        assert code == 2 and "is not running" in text and "station-a" in text, text

        # a station with pending captures while the relay is dead is listed with them
        b = make_station(site, "station-b", broker.port, presence_settle_s=0.5)
        held = [b.capture(jpeg_like(10_000, seed=10 + i)) for i in range(3)]
        b.wait_for(lambda seen: any(isinstance(e, RelayPresenceChanged) for e in seen))  # held: no relay
        b.uplink.stop()  # its retained status: offline, 3 pending
        a.uplink.stop()
        relay = RelayProcess(config)
        eventually(lambda: "station-b" in status(config)[1])
        code, text = status(config, "--down-after", "3600")
        assert code == 1, text  # stations offline for less than --down-after: warnings
        row = next(line for line in text.splitlines() if line.startswith("station-b"))
        assert row.split()[1:2] == ["offline"] and " 3 " in row, row
        code, text = status(config, "--down-after", "0")
        assert code == 2 and "CRITICAL: station station-b offline" in text and "3 capture(s) pending" in text

        # the broker restarts without its retained messages, the relay restarts: both
        # stations are still listed (the relay's own record), none claimed online
        relay.stop()
        broker.stop()
        broker.start()
        relay = RelayProcess(config)
        code, text = status(config, "--down-after", "3600")
        rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if line.startswith("station-")}
        assert rows == {"station-a": "offline", "station-b": "offline"}, text

        b = make_station(site, "station-b", broker.port, vault=b.vault, presence_settle_s=0.5)
        b.wait_stored(held)
    finally:
        a.uplink.stop()
        if b is not None:
            b.uplink.stop()
        relay.stop()
    assert b"Traceback" not in relay.log
