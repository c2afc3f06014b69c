"""The demo's (and the end-to-end tests') real parts: site, broker, relay, station process.

``DemoSetup`` provisions a throwaway site exactly as an administrator would (CA,
broker, relay identity, recipient key; the station's key made "on the station",
signed, bundled and installed), starts Mosquitto from the generated config and a
relay process, and starts station processes on simulated hardware. Leaving the
``with`` block stops every process it started, also on Ctrl-C, and removes the
station's identity: the work directory keeps what a site and a relay keep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from clinicam.common.errors import ConfigError
from clinicam.provisioning import identity
from clinicam.provisioning.site import Site
from clinicam.tools.brokerproc import Mosquitto, free_port

CLI = [sys.executable, "-m", "clinicam.tools.cli"]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def to_toml(sections: dict[str, dict[str, Any]], arrays: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """Enough TOML for the configs we write (tables of scalars, arrays of tables)."""
    out: list[str] = []
    for name, table in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        out.append("")
    for name, tables in (arrays or {}).items():
        for table in tables:
            out.append(f"[[{name}]]")
            out += [f"{k} = {toml_value(v)}" for k, v in table.items()]
            out.append("")
    return "\n".join(out)


class DemoSetup:
    """Site, broker and relay for the demo; stations started on request."""

    def __init__(
        self, workdir: Path, device: str = "demo-ward-3-cart", *, devices: Sequence[str] = (), pacs: bool = False
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.device = device
        self.devices = [device, *devices]
        self.site_dir = self.workdir / "site"
        self.relay_dir = self.workdir / "relay"
        self.captures = self.relay_dir / "captures"
        self.stations_dir = self.workdir / "stations"
        self.port = free_port()
        self.broker: Mosquitto | None = None
        self.relay: subprocess.Popen[bytes] | None = None
        self.stations: list[subprocess.Popen[str]] = []
        self.stderr: dict[int, list[str]] = {}
        self.want_pacs = pacs
        self.pacs: Any = None  # clinicam.tools.orthanc.Orthanc when started

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> DemoSetup:
        try:
            self.provision()
            self.start_broker()
            if self.want_pacs:
                self.start_pacs()
            self.start_relay()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.stations:
            _terminate(proc, signal.SIGINT)  # SIGINT: the station wipes at once
        if self.relay is not None:
            _terminate(self.relay, signal.SIGTERM)
        if self.broker is not None:
            self.broker.stop()
        if self.pacs is not None:
            self.pacs.stop()
        shutil.rmtree(self.stations_dir, ignore_errors=True)  # nothing of a station remains

    # --- the parts ------------------------------------------------------------------------

    def provision(self) -> None:
        # Two tiers, as 'site-init' makes by default: stations from the issuing CA.
        self.site = Site.create(self.site_dir, "Demo Hospital", ["127.0.0.1", "localhost"], port=self.port, relays=1)
        for device in self.devices:
            self.identity_dir(device)

    def identity_dir(self, device: str) -> Path:
        """Provision ``device`` (once): key on the station, CSR signed, bundle installed."""
        d = self.stations_dir / device / "identity"
        if not (d / identity.CERT).exists():
            csr = identity.create_device_key(d, device)
            self.site.sign(csr.read_bytes())
            bundle = self.site.bundle(device, self.workdir / "bundles" / device)
            identity.install(identity.InstallFiles.from_bundle(bundle), d)
            shutil.rmtree(bundle, ignore_errors=True)
            if self.broker is not None and self.broker.running:
                self.broker.reload()  # the regenerated ACL names the new station
        return d

    def start_broker(self) -> None:
        self.broker = Mosquitto(self.site.broker_dir, self.workdir / "broker", port=self.port).start()

    def start_pacs(self) -> None:
        """A real Orthanc PACS (Debian's package) the relay files into by STOW-RS."""
        from clinicam.tools.orthanc import Orthanc, orthanc_available

        if not orthanc_available():
            raise ConfigError("--pacs needs Orthanc: apt-get install orthanc orthanc-dicomweb")
        self.pacs = Orthanc(self.workdir / "pacs")
        self.pacs.start()

    def _pacs_sink(self) -> dict[str, Any]:
        secret = self.relay_dir / "pacs.password"
        self.relay_dir.mkdir(parents=True, exist_ok=True)
        secret.write_text(self.pacs.password)
        secret.chmod(0o600)
        return {
            "type": "dicomweb",
            "name": "pacs",
            "url": self.pacs.dicomweb_url,
            "auth": "basic",
            "username": self.pacs.username,
            "password_file": str(secret),
        }

    def relay_config(self) -> Path:
        relay = self.site.relay_dir
        text = to_toml(
            {
                "relay": {
                    "state_dir": str(self.relay_dir / "state"),
                    "status_file": str(self.relay_dir / "status.json"),
                    "audit_log": str(self.relay_dir / "audit.jsonl"),
                },
                "broker": {"host": "127.0.0.1", "port": self.port},
                "identity": {
                    "cert": str(relay / "relay-1.pem"),
                    "key": str(relay / "relay-1.key"),
                    "ca": str(self.site_dir / "ca.pem"),
                    "crl": str(self.site_dir / "crl.pem"),
                    # two tiers: the issuing CA that signs the stations
                    **({"chain": str(self.site.chain_pem)} if self.site.issuing is not None else {}),
                    "recipient_keys": [str(relay / "recipient.key")],
                },
            },
            {
                "sinks": [
                    {"type": "directory", "name": "archive", "path": str(self.captures)},
                    *([self._pacs_sink()] if self.pacs is not None else []),
                ]
            },
        )
        path = self.relay_dir / "relay.toml"
        self.relay_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def start_relay(self) -> None:
        config = self.relay_config()
        log = (self.relay_dir / "relay.log").open("ab")
        self.relay = subprocess.Popen([*CLI, "relay", "run", "--config", str(config)], stdout=log, stderr=log)
        log.close()

    def stop_relay(self) -> None:
        if self.relay is not None:
            _terminate(self.relay, signal.SIGTERM)
            self.relay = None

    def station_config(self, device: str | None = None, **overrides: dict[str, Any]) -> Path:
        device = device or self.device
        sections: dict[str, dict[str, Any]] = {
            "device": {"site": "Demo Hospital", "location": "Ward 3, cart 1"},
            "hardware": {"backend": "sim"},
            "identity": {"dir": str(self.identity_dir(device))},
            "uplink": {"host": "127.0.0.1", "port": self.port, "ack_timeout_s": 10.0, "reconnect_max_s": 2.0},
            "events": {"dir": str(self.events_dir(device))},
            "workflow": {"require_consent": True, "stop_drain_s": 10.0},
            "power": {"mains_pin": 5, "battery_pin": 6, "tamper_pin": 13},
            "memory": {"lock": "warn"},
        }
        for name, values in overrides.items():
            sections.setdefault(name, {}).update(values)
        path = self.stations_dir / device / "station.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_toml(sections))
        return path

    def events_dir(self, device: str) -> Path:
        """The station's persistent event store (on the appliance /var/lib/clinicam/events)."""
        path = self.stations_dir / device / "events"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def write_script(self, steps: list[dict[str, Any]], name: str = "script.json") -> Path:
        path = self.stations_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(steps))
        return path

    def start_station(
        self, script: Path | None = None, *, config: Path | None = None, prefix: Sequence[str] = ()
    ) -> subprocess.Popen[str]:
        """A station process with ``--events-json``; stderr is kept in memory, not on disk."""
        cmd = [*prefix, *CLI, "station", "run", "--config", str(config or self.station_config()), "--events-json"]
        if script is not None:
            cmd += ["--sim-script", str(script)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stations.append(proc)
        lines = self.stderr.setdefault(proc.pid, [])
        threading.Thread(target=_collect, args=(proc.stderr, lines), daemon=True).start()
        return proc

    def stop_station(self, proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
        """SIGTERM (drain, then wipe) and the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _collect(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def _terminate(proc: subprocess.Popen[Any], sig: int, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
