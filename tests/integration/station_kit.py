"""Shared parts of the station's end-to-end tests (issue 6, "Must show").

Everything is real except the camera and the pins: ``DemoSetup`` provisions a site,
starts Mosquitto from its generated mutual-TLS config and ACL and a ``clinicam relay
run`` process with a directory sink; each test starts ``clinicam station run`` on
simulated hardware with a script of rendered codes and button presses, and reads the
station's ``--events-json`` stream, the relay's directory and the event topic.

- :class:`Setup` is ``DemoSetup`` with a second relay identity, ``relay-2``: the site's
  own ACL lets relay identities read ``P/+/event`` and ``P/+/status``, so :class:`Watcher`
  listens as ``relay-2`` without any test-only ACL line and without taking over the
  running relay's session (``relay-1``).
- :class:`Station` follows one station process: its events arrive on a reader thread,
  and ``wait`` blocks (bounded) until one matches. Waits are conditions or bounded polls
  (the relay's directory), never a fixed delay the test depends on.
- :func:`traced_ward_round` plays the demo's round once per session under ``strace``
  and keeps what it left (shared by the ward-round and the strace/PHI tests).
- :func:`opening` is a script prefix (badge, wristband, consent) and :func:`ids`
  synthetic GSRNs: never real patients.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as mqtt
from clinicam.firmware.capture.memory import STATION_ENV
from clinicam.firmware.codes.gs1 import gs1_check_digit
from clinicam.protocol.topics import DEFAULT_PREFIX, Topics
from clinicam.provisioning.site import Site
from clinicam.provisioning.tlsctx import client_context
from clinicam.tools.demo_setup import DemoSetup
from clinicam.tools.scenario import DemoIds, card, gs1_128, show, ward_round
from paho.mqtt.enums import CallbackAPIVersion


def _security_module(name: str) -> ModuleType:
    """A helper module of ``tests/security`` (one strace parser for every test, with its
    own positive controls there), whatever order pytest collected the folders in."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "security" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


strace_parse = _security_module("strace_parse")
TRACE: str = strace_parse.TRACE

PREFIX = DEFAULT_PREFIX
WAIT_S = 60.0  # upper bound for anything the station or relay must do; never a delay
Event = dict[str, Any]
Step = dict[str, Any]

# Quick retries, so a capture the relay missed while it was down is re-sent soon after
# it comes back (the delivery path is the real one; only its timers are shorter).
FAST_UPLINK = {"ack_timeout_s": 2.0, "retry_min_s": 0.5, "retry_max_s": 2.0, "reconnect_min_s": 0.2,
               "reconnect_max_s": 1.0}


def ids(seed: int) -> DemoIds:
    """Synthetic GSRNs (valid check digits), distinct per test so searches are exact."""

    def gsrn(body: str) -> str:
        return body + gs1_check_digit(body)

    return DemoIds(
        patient_a=gsrn(f"79999990{seed:04d}00001"),
        patient_b=gsrn(f"79999990{seed:04d}00002"),
        operator=gsrn(f"79999990{seed:04d}00003"),
    )


def opening(who: DemoIds, consent: bool = True) -> list[Step]:
    """Badge, patient A's wristband and (optionally) the consent card."""
    steps = [show(gs1_128("8017", who.operator)), show(gs1_128("8018", who.patient_a))]
    return [*steps, show(card("CONSENT", "VERBAL"))] if consent else steps


def press(n: int = 1) -> list[Step]:
    """``n`` short presses, each followed by a pause the capture fits in."""
    out: list[Step] = []
    for _ in range(n):
        out += [{"press": "short"}, {"wait_s": 0.3}]
    return out


class Setup(DemoSetup):
    """``DemoSetup`` whose site also has ``relay-2``, the tests' watcher identity.
    ``tiers`` as ``site-init --tiers`` (two by default)."""

    tiers = 2

    def provision(self) -> None:
        self.site = Site.create(self.site_dir, "Demo Hospital", ["127.0.0.1", "localhost"], port=self.port, relays=2,
                                tiers=self.tiers)
        for device in self.devices:
            self.identity_dir(device)

    def ensure_running(self) -> None:
        """Broker and relay up (a previous test may have stopped either)."""
        assert self.broker is not None
        if not self.broker.running:
            self.broker.start()
        relay: subprocess.Popen[bytes] | None = self.relay
        if relay is None or relay.poll() is not None:
            self.stop_relay()  # forget a relay that died
            self.start_relay()

    def relay_dir_of(self, device: str) -> Path:
        return self.captures / device

    def stored_ids(self, device: str) -> set[str]:
        """Capture ids the relay's directory sink holds for ``device``."""
        return {p.stem for p in self.relay_dir_of(device).glob("*.json")}

    def metadata(self, device: str, capture_id: str) -> dict[str, Any]:
        """The part-0 metadata the relay opened and filed (PHI: tests only read it)."""
        meta: dict[str, Any] = json.loads((self.relay_dir_of(device) / f"{capture_id}.json").read_text())
        return meta

    def station(self, device: str, steps: list[Step], prefix: list[str] | None = None,
                **overrides: dict[str, Any]) -> Station:
        """Start ``device`` on simulated hardware playing ``steps``; see :class:`Station`."""
        config = self.station_config(device, **overrides)
        script = self.write_script(steps, f"{device}.json")
        return Station(self, self.start_station(script, config=config, prefix=prefix or ()), device)


class Station:
    """One station process: its ``--events-json`` stream, read on a thread."""

    def __init__(self, setup: Setup, proc: subprocess.Popen[str], device: str) -> None:
        self.setup, self.proc, self.device = setup, proc, device
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait(self, match: Callable[[Event], bool], timeout: float = WAIT_S) -> Event:
        """The first event that matches; raises ``TimeoutError`` (with the stream) if none comes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = next((e for e in self.events if match(e)), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise TimeoutError(f"{self.device}: no such event; stream so far:\n{self.transcript()}")
                self._cond.wait(left)

    def wait_script(self, timeout: float = WAIT_S) -> Event:
        """The end of the script, which must have played without error."""
        done = self.wait(lambda e: e.get("kind") == "script" and bool(e.get("done")), timeout)
        assert done.get("error") is None, self.transcript()
        return done

    def wait_captures(self, status: str, n: int, timeout: float = WAIT_S) -> list[str]:
        """Block until ``n`` captures reached ``status``; their ids in order."""
        self.wait(lambda _e: len(self.captures(status)) >= n, timeout)
        return self.captures(status)

    def captures(self, status: str) -> list[str]:
        with self._cond:
            return [e.get("capture_id", "") for e in self.events if e.get("kind") == "capture"
                    and e.get("status") == status]

    def of(self, kind: str, **fields: Any) -> list[Event]:
        """Events of ``kind`` whose fields equal ``fields``."""
        with self._cond:
            return [e for e in self.events if e.get("kind") == kind
                    and all(e.get(k) == v for k, v in fields.items())]

    def signals(self) -> list[str]:
        return [e["pattern"] for e in self.of("signal")]

    def transcript(self) -> str:
        """The event stream (no PHI by design) and stderr, for a failing assertion."""
        lines = [json.dumps(e, sort_keys=True) for e in list(self.events)]
        return "\n".join(lines[-80:]) + "\nstderr:\n" + "".join(self.stderr()[-40:])

    def stderr(self) -> list[str]:
        return list(self.setup.stderr.get(self.proc.pid, []))

    def terminate(self, timeout: float = WAIT_S) -> int:
        """SIGTERM (drain, then wipe) to the station itself, and its exit code."""
        return self.signal_and_wait(signal.SIGTERM, timeout)

    def send(self, sig: int) -> None:
        """Signal the station process itself (not a prefix such as strace)."""
        if self.proc.poll() is None:
            os.kill(station_pid(self.proc), sig)

    def signal_and_wait(self, sig: int, timeout: float = WAIT_S) -> int:
        self.send(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(5.0)
        return code

    def exit_event(self) -> Event:
        return self.wait(lambda e: e.get("kind") == "exit", timeout=5.0)


def station_pid(proc: subprocess.Popen[str]) -> int:
    """The station's own pid: ``proc`` itself, or the child of a prefix such as strace/env.

    strace started with ``-o FILE PROG`` blocks fatal signals, so a SIGTERM must go to
    the traced station, not to strace.
    """
    pid = proc.pid
    for _ in range(4):
        exe = _exe(pid)
        if exe is None or "python" in Path(exe).name:
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            return pid
        pid = int(children[0])
    return pid


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


class Watcher:
    """An MQTT 5 client as ``relay-2`` on ``P/+/event`` and ``P/+/status``; reconnects itself."""

    def __init__(self, setup: Setup) -> None:
        cert, key = setup.site.relay_files(2)
        self.messages: list[tuple[str, Event]] = []
        self._cond = threading.Condition()
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="relay-2", protocol=mqtt.MQTTv5)
        c.tls_set_context(client_context(setup.site_dir / "ca.pem", cert, key))
        c.reconnect_delay_set(1, 1)
        c.on_connect, c.on_message, c.on_subscribe = self._on_connect, self._on_message, self._on_subscribe
        c.connect("127.0.0.1", setup.port, keepalive=30)
        c.loop_start()
        self.client = c
        if not self.subscribed.wait(WAIT_S):
            self.close()
            raise TimeoutError("the watcher could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        client.subscribe([(f"{PREFIX}/+/event", 1), (f"{PREFIX}/+/status", 1)])  # filters: Topics builds topics

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        if all(not code.is_failure for code in codes):
            self.subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, json.loads(msg.payload)))
            self._cond.notify_all()

    def events(self, device: str, name: str | None = None) -> list[Event]:
        """Audit events ``device`` published (of one ``event`` name, if given).

        Names compare with ``_`` and ``-`` alike: the workflow spells some with ``_``
        (``session_closed``), the relay's audit allow-list takes only ``-`` (reported).
        """
        topic = Topics(PREFIX).event(device)

        def same(event: object) -> bool:
            return name is None or str(event).replace("_", "-") == name.replace("_", "-")

        with self._cond:
            return [m for t, m in self.messages if t == topic and same(m.get("event"))]

    def statuses(self, device: str) -> list[Event]:
        with self._cond:
            return [m for t, m in self.messages if t == Topics(PREFIX).status(device)]

    def wait(self, match: Callable[[], list[Any]], timeout: float = WAIT_S) -> list[Any]:
        """Block until ``match()`` is non-empty; return it."""
        with self._cond:
            if not self._cond.wait_for(match, timeout):
                raise TimeoutError(f"watcher: not seen; got {[t for t, _ in self.messages][-20:]}")
            return match()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class RoundRecord:
    """What one traced ward round left behind: events, streams, trace, relay files."""

    who: DemoIds
    device: str
    events: list[Event]
    exit_code: int
    stdout: str
    stderr: str
    trace: str
    relay_dir: Path
    relay_log: Path
    relay_files: tuple[Path, ...]
    events_dir: str  # the station's persistent event store ([events] dir), gone with the setup
    event_store: str  # what it held when the station had stopped ("" if nothing)


_ROUNDS: dict[str, RoundRecord] = {}


def traced_ward_round(workdir: Path) -> RoundRecord:
    """The demo's ward round, once per test session, under ``strace -f -y``.

    Cached at module level so the ward-round data tests and the strace/PHI tests read
    the same run (a round takes ~30 s on this machine class). The station runs with
    the unit file's environment (``STATION_ENV``: no bytecode files, perturbed malloc).
    """
    if "round" not in _ROUNDS:
        _ROUNDS["round"] = _play_traced_round(workdir)
    return _ROUNDS["round"]


def _play_traced_round(workdir: Path) -> RoundRecord:
    who, device = ids(1), "e2e-round"
    trace = workdir / "station.trace"  # written by strace, outside the station
    env = [f"{k}={v}" for k, v in STATION_ENV.items()]
    prefix = ["env", *env, "strace", "-f", "-y", "-qq", "-o", str(trace), "-e", f"trace={TRACE}"]
    with Setup(workdir / "site", device) as setup:
        station = setup.station(device, ward_round(who), prefix=prefix)
        station.wait_script(timeout=180.0)
        code = station.terminate()
        out = [json.dumps(e, sort_keys=True) for e in station.events]
        err = "".join(station.stderr())
        events_dir = setup.events_dir(device)
        store = events_dir / "events.json"
        event_store = store.read_text() if store.exists() else ""
    relay_dir = setup.relay_dir_of(device)
    return RoundRecord(
        who, device, list(station.events), code, "\n".join(out), err, trace.read_text(errors="replace"),
        relay_dir, setup.relay_dir / "relay.log", tuple(sorted(relay_dir.glob("*"))), str(events_dir), event_store,
    )


def wait_until(check: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    """Poll a file-system fact (the relay's directory has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout} s")
        time.sleep(0.1)


__all__ = ["FAST_UPLINK", "PREFIX", "TRACE", "RoundRecord", "Setup", "Station", "Watcher", "ids", "opening",
           "press", "strace_parse", "traced_ward_round", "wait_until"]
