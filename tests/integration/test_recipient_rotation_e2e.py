"""Recipient-key rotation over MQTT (issue 17), end to end, losing no capture: the real
Mosquitto, registrar, relay and a station process on simulated hardware.

The station seals two captures to the old key while the relay is down (they stay
pending in its RAM vault), the site announces the new key (``relay recipient-new``,
then the registrar's ``[issuing] recipient`` file), the same station process seals two
more to the new key, and the relay — holding both keys during the overlap — files all
four. Then the old key is retired: the relay holds the new key alone and a fresh
station process (which kept the announced key) still files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from clinicam.protocol.recipient import load_recipient_public
from clinicam.protocol.topics import Topics
from clinicam.tools.demo_setup import CLI

from tests.integration.station_kit import FAST_UPLINK, PREFIX, Watcher, ids, opening, press
from tests.integration.test_revocation_e2e import RevocationSetup

DEVICE = "rotate-cart1"


class RotationSetup(RevocationSetup):
    recipient_keys: list[str] | None = None  # None: the site's one key

    @property
    def announced(self) -> Path:
        return self.workdir / "registrar" / "recipient.pub"

    def relay_config(self) -> Path:
        path = super().relay_config()
        if self.recipient_keys is not None:
            text = re.sub(r"recipient_keys = \[.*?\]", "recipient_keys = " + json.dumps(self.recipient_keys),
                          path.read_text(), flags=re.S)
            path.write_text(text)
        return path

    def start_registrar(self) -> None:
        if not self.announced.exists():
            self.announced.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.site.relay_dir / "recipient.pub", self.announced)  # installation
        self.registrar_issuing = {"recipient": str(self.announced)}
        super().start_registrar()


class ManifestWatcher(Watcher):
    """The watcher, also reading every capture's manifest (which names the recipient key)."""

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        client.subscribe([(f"{PREFIX}/+/event", 1), (f"{PREFIX}/+/status", 1),
                          (f"{PREFIX}/+/capture/+/manifest", 1)])

    def recipients(self, device: str) -> dict[str, str]:
        """capture id -> the recipient fingerprint its manifest names."""
        with self._cond:
            parsed = [(Topics(PREFIX).parse(t), m) for t, m in self.messages]
            return {str(p.capture_id): m["m"]["recipient"] for p, m in parsed
                    if (p.device, p.kind) == (device, "manifest")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RotationSetup]:
    with RotationSetup(tmp_path_factory.mktemp("rotation"), DEVICE) as s:
        yield s


def test_a_recipient_key_rotation_loses_no_capture(setup: RotationSetup):
    old_key = setup.site.relay_dir / "recipient.key"
    old_fp = load_recipient_public((setup.site.relay_dir / "recipient.pub").read_bytes()).fingerprint
    # 1. A new key, made where the relay runs; the private half never moves.
    out_dir = setup.workdir / "relay-host"
    out = subprocess.run([*CLI, "relay", "recipient-new", "--out", str(out_dir), "--like",
                          str(setup.announced)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    new_pub = next(out_dir.glob("recipient-*.pub"))
    new_key = new_pub.with_suffix(".key")
    new_fp = load_recipient_public(new_pub.read_bytes()).fingerprint
    assert new_fp != old_fp and oct(new_key.stat().st_mode & 0o777) == "0o600"

    watcher = ManifestWatcher(setup)
    try:
        # 2. The relay is down: captures stay pending in the station's RAM vault.
        setup.stop_relay()
        script = [*opening(ids(71)), *press(2), {"wait_s": 15.0}, *press(2)]
        station = setup.station(DEVICE, script, uplink=FAST_UPLINK, renewal={"enabled": False})
        station.wait_captures("sealed", 2)
        assert not station.captures("stored")
        # 3. The site announces the new key: the station adopts it while two captures pend.
        tmp = setup.announced.with_suffix(".tmp")
        shutil.copy(new_pub, tmp)
        os.replace(tmp, setup.announced)
        try:
            watcher.wait(lambda: watcher.events(DEVICE, "recipient-changed"))
        except TimeoutError as exc:
            raise AssertionError("\n".join(station.stderr()[-40:])) from exc
        assert len(station.captures("sealed")) == 2 and not station.captures("stored")
        # 4. Two more captures, then the relay comes back holding both keys (overlap).
        sealed = station.wait_captures("sealed", 4, timeout=60)
        setup.recipient_keys = [str(old_key), str(new_key)]
        setup.start_relay()
        stored = station.wait_captures("stored", 4, timeout=60)
        assert set(stored) == set(sealed) and set(sealed) <= setup.stored_ids(DEVICE)
        assert not station.captures("rejected")
        fps = watcher.recipients(DEVICE)
        assert [fps[c] for c in sealed] == [old_fp, old_fp, new_fp, new_fp]
        setup.stop_station(station.proc)
        # The station kept the announced key for its next boot.
        ident = setup.identity_dir(DEVICE)
        assert (ident / "recipient.pub").read_bytes() == new_pub.read_bytes()

        # 5. Retire the old key: the relay holds the new one alone; a fresh boot files.
        setup.stop_relay()
        setup.recipient_keys = [str(new_key)]
        setup.start_relay()
        again = setup.station(DEVICE, [*opening(ids(72)), *press()], uplink=FAST_UPLINK, renewal={"enabled": False})
        filed = again.wait_captures("stored", 1, timeout=60)
        assert watcher.recipients(DEVICE)[filed[0]] == new_fp
        assert filed[0] in setup.stored_ids(DEVICE)
        setup.stop_station(again.proc)
    finally:
        watcher.close()
