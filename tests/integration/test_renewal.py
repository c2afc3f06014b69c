"""Certificate renewal as the README documents it, end to end with the real command:
the README's renew block is run as written (paths substituted), the renewed certificate
is installed alone, the site register shows the old serial as superseded, and the real
broker accepts the station with its renewed certificate."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from clinicam.provisioning import pki
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.brokerproc import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from station_kit import FAST_UPLINK, Setup, Watcher

ROOT = Path(__file__).resolve().parents[2]
CLINICAM = [sys.executable, "-m", "clinicam.tools.cli"]
DEVICE = "ward3-cart1"


def clinicam(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLINICAM, *args], capture_output=True, text=True, timeout=120, check=False)
    if ok:
        assert result.returncode == 0, f"clinicam {' '.join(args)}: {result.stderr}"
    return result


def readme_renew_commands() -> list[list[str]]:
    """The command lines of the README's renew block, in order."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"- \*\*Renew\*\*.*?```sh\n(.*?)```", readme, re.S)
    assert block, "README: the Renew item has no sh block"
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("clinicam ")]


def serial_of(pem: Path) -> str:
    return pki.serial_hex(pki.load_cert(pem).serial_number)


@pytest.fixture
def provisioned(tmp_path: Path) -> dict[str, Path]:
    site, station = tmp_path / "site", tmp_path / "station"
    clinicam("provision", "site-init", str(site), "--site", "Renewal Clinic", "--broker-host", "127.0.0.1",
             "--kem", "x25519")
    clinicam("provision", "device-key", str(station), "--device", DEVICE)
    # a first certificate of 30 days, as one due for renewal: the renewed one's expiry is
    # later even when both are signed within the same second
    clinicam("provision", "sign", str(site), str(station / "device.csr"), "--out", str(tmp_path / "first.pem"),
             "--days", "30")
    clinicam("provision", "bundle", str(site), "--device", DEVICE, "--out", str(tmp_path / "bundle"))
    clinicam("provision", "install", "--bundle", str(tmp_path / "bundle"), "--identity-dir", str(station),
             "--allow-address", "127.0.0.1")
    return {"site": site, "station": station, "first": tmp_path / "first.pem", "tmp": tmp_path}


def run_readme_renewal(p: dict[str, Path]) -> list[subprocess.CompletedProcess[str]]:
    subst = {
        "SITE": str(p["site"]),
        "/etc/clinicam/identity": str(p["station"]),
        "device.csr": str(p["station"] / "device.csr"),  # "copy device.csr to the administrator's machine"
        f"{DEVICE}.pem": str(p["tmp"] / f"{DEVICE}.pem"),
    }
    results = []
    commands = readme_renew_commands()
    assert [c[1:3] for c in commands] == [["provision", "device-key"], ["provision", "renew"],
                                          ["provision", "install"]]
    for argv in commands:
        argv = [subst.get(a, a) for a in argv[1:]]
        if argv[:2] == ["provision", "install"]:
            argv += ["--identity-dir", str(p["station"])]  # the README's default is /etc/clinicam/identity
        results.append(clinicam(*argv))
    return results


def test_the_readme_renewal_installs_the_new_certificate(provisioned: dict[str, Path]) -> None:
    p = provisioned
    old = serial_of(p["station"] / "device.pem")
    key_before = (p["station"] / "device.key").read_bytes()
    allow_before = (p["station"] / "allow.json").read_text()
    _, renew, install = run_readme_renewal(p)
    new = serial_of(p["tmp"] / f"{DEVICE}.pem")
    assert new != old and f"serial {new}" in renew.stdout
    assert serial_of(p["station"] / "device.pem") == new
    assert (p["station"] / "device.key").read_bytes() == key_before  # the key never changed
    assert (p["station"] / "allow.json").read_text() == allow_before  # the recorded broker stays
    assert f"serial {new}" in install.stdout and "no restart needed" in install.stdout

    shown = clinicam("provision", "show", "--site", str(p["site"])).stdout
    rows = {line.split()[-1]: line.split() for line in shown.splitlines() if line.strip().startswith(DEVICE)}
    assert rows[old][2] == "superseded" and rows[new][2] == "valid"
    assert [r[2] for r in rows.values()].count("valid") == 1
    assert f"serial {new}" in clinicam("provision", "show", "--identity-dir", str(p["station"])).stdout


def test_the_old_certificate_is_not_put_back(provisioned: dict[str, Path]) -> None:
    p = provisioned
    run_readme_renewal(p)
    again = clinicam("provision", "install", "--cert", str(p["first"]), "--identity-dir", str(p["station"]), ok=False)
    assert again.returncode == 1 and "is older than the installed device.pem" in again.stderr
    assert serial_of(p["station"] / "device.pem") == serial_of(p["tmp"] / f"{DEVICE}.pem")


def test_cert_alone_needs_an_installed_identity(tmp_path: Path) -> None:
    result = clinicam("provision", "install", "--cert", str(tmp_path / "x.pem"), "--identity-dir",
                      str(tmp_path / "empty"), ok=False)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("install the station's bundle first (--bundle DIR)")


def test_the_broker_accepts_the_renewed_certificate(provisioned: dict[str, Path]) -> None:
    """What the station presents after its restart: a real Mosquitto from the site's
    generated config lets the renewed identity in (positive: it is a working identity)."""
    p = provisioned
    run_readme_renewal(p)
    broker = Mosquitto(p["site"] / "broker", p["tmp"] / "broker").start()
    try:
        station = p["station"]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv5)
        client.tls_set_context(client_context(station / "ca.pem", station / "device.pem", station / "device.key"))
        connected, codes = threading.Event(), []
        client.on_connect = lambda _c, _u, _f, rc, _p: (codes.append(rc), connected.set())
        client.connect(broker.host, broker.port)
        client.loop_start()
        assert connected.wait(15)
        client.disconnect()
        client.loop_stop()
    finally:
        broker.stop()
    assert codes and not codes[0].is_failure


class OneTier(Setup):
    """Renewal by hand and revocation by file: a single-tier site (``site-init --tiers 1``)."""

    tiers = 1


@pytest.mark.slow
def test_a_running_station_picks_up_the_renewed_certificate_at_its_next_reconnect(tmp_path: Path) -> None:
    """No restart: after 'install --cert' the station presents the renewed certificate at
    its next reconnect. Proof: the old serial is revoked and the broker restarted with
    the new CRL, so only the renewed certificate can bring the station back online; its
    status shows the new expiry, first without a reconnect (the periodic check), then
    after it. (Sealing with it: tests/unit/firmware/test_uplink_renewal.py.)"""
    device = "renew-live"
    with OneTier(tmp_path / "kit", device) as kit:
        assert kit.broker is not None
        ident = kit.identity_dir(device)
        old_cert = pki.load_cert(ident / "device.pem")
        old = f"{old_cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%S}"
        watcher = Watcher(kit)
        try:
            def online_since(n: int) -> list[dict[str, object]]:
                return [st for st in watcher.statuses(device)[n:] if st.get("state") == "online"]

            station = kit.station(device, [{"wait_s": 600}], uplink=FAST_UPLINK)
            assert str(watcher.wait(lambda: online_since(0))[-1]["cert_not_after"]).startswith(old)
            clinicam("provision", "device-key", str(ident), "--device", device)
            csr, new_pem = str(ident / "device.csr"), str(tmp_path / "new.pem")
            # one day more than the default: the new expiry differs even when the kit signed
            # the first certificate within the same second (the check is to the second)
            clinicam("provision", "renew", str(kit.site_dir), csr, "--out", new_pem,
                     "--days", str(pki.DEFAULT_DAYS + 1))
            clinicam("provision", "install", "--cert", new_pem, "--identity-dir", str(ident))
            new = f"{pki.load_cert(ident / 'device.pem').not_valid_after_utc:%Y-%m-%dT%H:%M:%S}"
            assert new != old
            # Without a reconnect: within the uplink's 30 s check, the status (and new seals) move on.
            watcher.wait(lambda: [st for st in online_since(0) if str(st["cert_not_after"]).startswith(new)],
                         timeout=45)

            clinicam("provision", "revoke", str(kit.site_dir), pki.serial_hex(old_cert.serial_number))
            seen = len(watcher.statuses(device))
            kit.broker.stop()  # restarted with the CRL that shuts the old certificate out
            kit.broker.start()
            back = watcher.wait(lambda: online_since(seen), timeout=60)
            assert str(back[-1]["cert_not_after"]).startswith(new)
            assert station.terminate() == 0
        finally:
            watcher.close()
