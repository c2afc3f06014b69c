"""``clinicam demo``: a scripted ward round, end to end, on any Linux machine.

Everything but the camera and the pins is real: a throwaway site PKI made by
``provisioning``, Mosquitto started from the generated mutual-TLS config and ACL, the
relay (``clinicam relay run``) filing into a directory, and the station daemon
(``clinicam station run``) on simulated hardware, driven by a script of rendered
wristbands, cards and button presses. The station's own JSON event stream (no PHI) is
narrated live; the summary is read back from what the relay wrote.

Identifiers are synthetic. The work directory keeps only what a site and a relay keep
(the site's PKI, the relay's files); the station's identity is removed at the end, as
a decommissioned station would be.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from clinicam.drivers.patterns import PATTERNS
from clinicam.firmware.codes.gs1 import gs1_check_digit
from clinicam.tools.scenario import DemoIds, ward_round

DEVICE = "demo-ward-3-cart"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a scripted ward round on simulated hardware",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--workdir", type=Path, help="keep the site and relay files here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no live narration")
    parser.add_argument(
        "--pacs",
        action="store_true",
        help="also file into a real Orthanc PACS by STOW-RS (Debian's orthanc, orthanc-dicomweb) "
        "and keep it running to view the images: until Enter or Ctrl-C on a terminal, else until "
        "Ctrl-C or SIGTERM (or --linger)",
    )
    parser.add_argument("--linger", type=float, metavar="SECONDS",
                        help="with --pacs: stop the PACS after this long at the latest")
    parser.set_defaults(func=cmd_demo)


def demo_ids() -> DemoIds:
    """Synthetic GS1 GSRNs (AI 8018 patients, AI 8017 the nurse), valid check digits."""

    def gsrn(body: str) -> str:
        return body + gs1_check_digit(body)

    return DemoIds(
        patient_a=gsrn("79999990000012345"),
        patient_b=gsrn("79999990000067890"),
        operator=gsrn("79999990000055501"),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="clinicam-demo-")
    workdir = Path(args.workdir or temp.name).resolve()  # type: ignore[union-attr]
    narrate = Narrator(enabled=not args.quiet and not args.json)
    try:
        linger = Linger(tty=sys.stdin.isatty(), seconds=args.linger) if args.pacs and not args.json else None
        summary = run_demo(workdir, narrate, pacs=args.pacs, linger=linger)
    except KeyboardInterrupt:
        print("\ndemo interrupted: every process it started was stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, indent=1, sort_keys=True))
    elif not summary.pop("shown", False):
        print(format_summary(summary, keep=temp is None))
    if temp is not None:
        temp.cleanup()
    return 0 if summary["ok"] else 1


class Linger:
    """How ``demo --pacs`` keeps the PACS up after the round, and what ends it.

    On a terminal, Enter or Ctrl-C; without one (``make demo`` from a script, CI, a
    service), Ctrl-C or SIGTERM; ``seconds`` bounds it either way. Ctrl-C here is the
    normal way out, not an interruption of the demo.
    """

    def __init__(self, *, tty: bool, seconds: float | None = None) -> None:
        self.tty, self.seconds = tty, seconds

    def how_to_stop(self) -> str:
        how = "press Enter or Ctrl-C to stop it" if self.tty else (
            f"stop it with Ctrl-C or 'kill {os.getpid()}'")
        return how + (f" (it stops by itself after {self.seconds:g} s)" if self.seconds else "")

    def wait(self) -> None:
        done = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
        if self.tty:
            def enter() -> None:
                sys.stdin.readline()
                done.set()

            threading.Thread(target=enter, daemon=True).start()
        try:
            done.wait(self.seconds)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)


def run_demo(workdir: Path, narrate: Narrator, *, pacs: bool = False, linger: Linger | None = None) -> dict[str, Any]:
    """Provision, start broker, relay and station, play the round, stop, summarise."""
    from clinicam.tools.demo_setup import DemoSetup

    ids = demo_ids()
    setup = DemoSetup(workdir, DEVICE, pacs=pacs)
    with setup:
        narrate.line(f"site PKI, broker on 127.0.0.1:{setup.port}, relay filing into {setup.captures}")
        if setup.pacs is not None:
            narrate.line(f"Orthanc PACS at {setup.pacs.viewer_url} (user {setup.pacs.username})")
        script = setup.write_script(ward_round(ids))
        station = setup.start_station(script)
        events = follow(station, narrate, setup)
        code = setup.stop_station(station)
        time.sleep(0.5)
        summary = summarise(events, setup.captures, code, ids)
        if setup.pacs is not None:
            summary["pacs"] = {
                "viewer": setup.pacs.viewer_url,
                "username": setup.pacs.username,
                "password": setup.pacs.password,
                "instances": len(setup.pacs.get("/instances")),
            }
            summary["ok"] = summary["ok"] and summary["pacs"]["instances"] == summary["delivered"]
        if linger is not None and setup.pacs is not None:
            print(format_summary(summary, keep=True))
            print(f"\nthe PACS keeps running at {setup.pacs.viewer_url}: {linger.how_to_stop()}", flush=True)
            linger.wait()
            print("stopping the PACS", flush=True)
            summary["shown"] = True
    return summary


def follow(station: subprocess.Popen[str], narrate: Narrator, setup: Any) -> list[dict[str, Any]]:
    """Read the station's events until its script is done, narrating; then SIGTERM it."""
    events: list[dict[str, Any]] = []
    assert station.stdout is not None
    deadline = time.monotonic() + 240
    for line in station.stdout:
        event = json.loads(line)
        events.append(event)
        narrate.event(event)
        if event.get("kind") == "script" and event.get("done"):
            station.send_signal(signal.SIGTERM)  # a normal stop: drain, then wipe
        if time.monotonic() > deadline:
            station.kill()
    return events


def summarise(events: list[dict[str, Any]], captures: Path, exit_code: int, ids: DemoIds) -> dict[str, Any]:
    refusals = [
        e["pattern"]
        for e in events
        if e.get("kind") == "signal"
        and e["pattern"] in {"no_patient", "consent_needed", "clock_not_synced", "vault_full"}
    ]
    sealed = [e["capture_id"] for e in events if e.get("kind") == "capture" and e["status"] == "sealed"]
    stored = [e["capture_id"] for e in events if e.get("kind") == "capture" and e["status"] == "stored"]
    files = relay_files(captures)
    script = next((e for e in events if e.get("kind") == "script" and e.get("done")), {})
    ok = (
        exit_code == 0
        and not script.get("error")
        and sorted(stored) == sorted(sealed)
        and sorted(files) == sorted(stored)
    )
    return {
        "ok": ok,
        "station_exit": exit_code,
        "captured": len(sealed),
        "delivered": len(stored),
        "refused": refusals,
        "relay_directory": str(captures),
        "captures": [files[c] for c in stored if c in files],
        "script_error": script.get("error"),
    }


def relay_files(captures: Path) -> dict[str, dict[str, Any]]:
    """What the relay's directory sink holds: capture id → a PHI-masked description."""
    out: dict[str, dict[str, Any]] = {}
    for meta_path in sorted(captures.glob("*/*.json")):
        meta = json.loads(meta_path.read_text())
        md = meta.get("metadata", meta)
        site = md.get("body_site") or {}
        out[meta_path.stem] = {
            "capture_id": meta_path.stem,
            "device": meta_path.parent.name,
            "image": str(meta_path.with_suffix(".jpg")),
            "patient": "…" + str(md["patient"]["id"])[-4:],
            "operator": None if md.get("operator") is None else "…" + str(md["operator"]["id"])[-4:],
            "purpose": md.get("purpose"),
            "body_site": site.get("display"),
            "laterality": md.get("laterality"),
            "consent": md.get("consent"),
            "session_index": md["session"]["index"],
        }
    return out


def format_summary(summary: dict[str, Any], keep: bool) -> str:
    lines = [
        "",
        "summary",
        "-------",
        f"captured {summary['captured']}, delivered {summary['delivered']}, refused {len(summary['refused'])}"
        + (f" ({', '.join(summary['refused'])})" if summary["refused"] else ""),
    ]
    for c in summary["captures"]:
        lines.append(
            f"  {c['capture_id'][:8]}  patient {c['patient']}  {c['purpose'] or '-':8} "
            f"{c['body_site'] or '-'} {c['laterality'] or ''}  consent {c['consent'] or '-'}"
        )
    where = summary["relay_directory"] if keep else f"{summary['relay_directory']} (temporary; use --workdir to keep)"
    lines.append(f"the relay wrote the images to {where}")
    if "pacs" in summary:
        p = summary["pacs"]
        lines.append(
            f"and filed {p['instances']} DICOM instances in Orthanc: {p['viewer']} "
            f"(user {p['username']}, password {p['password']})"
        )
    lines.append(
        "station side: nothing left (identity removed, process exited)"
        if summary["station_exit"] == 0
        else f"station exited with {summary['station_exit']}"
    )
    lines.append("OK" if summary["ok"] else "DEMO FAILED: see above")
    return "\n".join(lines)


class Narrator:
    """Turns the station's event stream into lines a person can follow."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._state: str | None = None

    def line(self, text: str) -> None:
        if self.enabled:
            with self._lock:
                print(text, flush=True)

    def event(self, e: dict[str, Any]) -> None:
        kind = e.get("kind")
        if kind == "script" and "mark" in e:
            self.line(f"\n▶ {e['mark']}")
        elif kind == "signal":
            pattern = PATTERNS.get(e["pattern"])
            self.line(f"    panel: {e['pattern']:<16} {pattern.meaning if pattern else ''}")
        elif kind == "state" and e["state"] != self._state:
            self._state = e["state"]
            self.line(f"    state: {e['state']}")
        elif kind == "capture":
            self.line("    " + _capture_line(e))
        elif kind in ("uplink", "wipe", "drain", "ready", "exit"):
            self.line(f"    {kind}: " + ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("kind", "t")))


def _capture_line(e: dict[str, Any]) -> str:
    cid = str(e.get("capture_id", ""))[:8]
    status = e["status"]
    if status == "sealed":
        return f"capture {cid} sealed in RAM ({e['bytes']} bytes, {e['pending']} pending)"
    if status == "stored":
        return f"capture {cid} delivered: {e.get('ref')} ({e['pending']} pending)"
    if status == "refused":
        return f"capture refused: {e.get('reason')}"
    return f"capture {cid} {status} " + ", ".join(
        f"{k}={v}" for k, v in e.items() if k not in ("kind", "t", "capture_id", "status")
    )
