"""A station the broker refuses says why in its log, the way selftest does (issue 16 §4).

Before: ``disconnected (Unspecified error)`` forever. Now one line names the broker's
TLS alert (expired, revoked) and what to do, once, however often paho retries.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from clinicam.firmware.capture.vault import Vault
from clinicam.firmware.uplink.client import Uplink
from clinicam.provisioning import pki


def uplink_for(ident: Any, port: int) -> Uplink:
    cert = pki.load_cert(ident.cert)
    identity = SimpleNamespace(device_id=ident.name, broker_host="127.0.0.1", broker_port=port,
                               ca_path=ident.ca, cert_path=ident.cert, key_path=ident.key,
                               not_after=cert.not_valid_after_utc, key=None)
    return Uplink(identity=identity, vault=Vault(), post=lambda _e: None, port=port,
                  reconnect_min_s=1, reconnect_max_s=1)


def refusals(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and word in r.getMessage()]


def wait_for(check: Any, timeout: float = 30.0) -> None:
    done, tick = threading.Event(), threading.Event()
    for _ in range(int(timeout / 0.1)):
        if check():
            done.set()
            break
        tick.wait(0.1)  # a poll interval
    assert done.is_set(), "condition not met in time"


@pytest.mark.parametrize("kind", ["expired", "revoked"])
def test_a_refused_station_logs_why_once(kind: str, site: Any, broker_factory: Any,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clinicam.firmware.uplink")
    ident = site.make_expired() if kind == "expired" else site.make_revoked()
    broker = broker_factory("broker", port=site.port)  # started after the revocation: it has the CRL
    good = uplink_for(site.device("station-a"), broker.port)  # positive control: a valid station connects
    bad = uplink_for(ident, broker.port)
    try:
        good.start()
        bad.start()
        wait_for(lambda: good.engine.connected and refusals(caplog, kind))
        wait_for(lambda: sum("disconnected" in r.getMessage() for r in caplog.records
                             if ".uplink" in r.name) >= 3)  # paho kept retrying ...
    finally:
        bad.stop()
        good.stop()
    said = refusals(caplog, kind)
    assert len(said) == 1, said  # ... and the reason was said once
    assert said[0].startswith(f"uplink: the broker refused this station's certificate: {kind}: ")
    assert ("clinicam provision renew" if kind == "expired" else "provision a new identity") in said[0]
