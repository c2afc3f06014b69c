"""``clinicam relay run|status|cmd``: the relay daemon, a look at what it knows, remote commands.

``run`` connects with the relay's own certificate, files captures and runs until
SIGTERM or SIGINT. ``status`` reads the status file the running relay keeps (no PHI:
station states, pending counts, firmware, certificate expiry, and relay counters),
says how old it is and whether the relay that wrote it still runs, lists provisioned
stations never seen and every certificate's end date (the stations', and on this host
the relay's, its CAs' and the registrar's), and exits 0 all well, 1 warnings (stations
offline for less than --down-after, a certificate ending within the renewal margin,
stations unseen or seeing no relay), 2 critical (relay not running, hung or
disconnected, a station down longer than --down-after, an expired certificate).
``cmd`` sends one station ``identify``, ``wipe`` or ``ping`` (DESIGN §5) with an operator
identity (``--cert``/``--key``; the relay's own as a fallback) and waits for the answer;
exit 0 answered, 2 usage, 3 no answer in time, 4 the broker refused or closed the
connection, 1 configuration or identity problem. ``cmd … update`` orders a firmware
update (``--url``, ``--sha256``, ``--version``) from one station, a ``--group`` or a
stable ``--percent`` (``clinicam.relay.rollout``), and prints a table of the answers:
exit 0 all took it, 3 some were silent, 4 some refused (or the broker refused).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinicam.common.errors import ConfigError
from clinicam.relay.config import DEFAULT_PATH, RelayConfig, check_files, load_relay_config

if TYPE_CHECKING:
    from clinicam.relay.certificates import HeldCertificate, Unreadable
    from clinicam.relay.fleet import Limits


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``relay`` command group to the ``clinicam`` parser."""
    parser = subparsers.add_parser("relay", help="run the relay that opens captures and files them",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="relay_command", metavar="ACTION")
    run = sub.add_parser("run", help="connect to the broker and file captures until stopped")
    run.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="every station's latest status, the relay's health; exit 0/1/2",
                            description="Exit 0 all well, 1 warnings, 2 critical (usable as a monitoring check).")
    status.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    status.add_argument("--json", action="store_true", help="print the status file and the assessment as JSON")
    status.add_argument("--register", type=Path, metavar="JSON",
                        help="the site's ca/register.json, to list stations never seen (default [metrics] register)")
    status.add_argument("--down-after", type=float, default=600.0, metavar="SECONDS",
                        help="a station offline longer than this is critical (default 600)")
    status.add_argument("--stale-after", type=float, default=30.0, metavar="SECONDS",
                        help="status data older than this means the relay is hung (default 30)")
    status.add_argument("--renewal-margin-days", type=float, default=60.0, metavar="DAYS",
                        help="a certificate ending within this is a warning, expired critical (default 60, "
                             "the stations' [renewal] margin_days)")
    from clinicam.relay.registrar.config import DEFAULT_PATH as REGISTRAR_PATH

    status.add_argument("--registrar", type=Path, default=REGISTRAR_PATH, metavar="TOML",
                        help=f"the registrar's configuration, when it runs on this host: its certificate and "
                             f"issuing CA are shown too (default {REGISTRAR_PATH}, skipped when absent)")
    status.set_defaults(func=cmd_status)
    _register_cmd(sub)

    reg = sub.add_parser("registrar", help="renew station certificates over MQTT (two-tier sites)")
    reg.add_argument("--config", type=Path, default=REGISTRAR_PATH, help=f"default {REGISTRAR_PATH}")
    reg.set_defaults(func=cmd_registrar)
    kick = sub.add_parser("kick", help="cut a revoked station's open connection (after the broker reloaded its CRL)")
    kick.add_argument("--config", type=Path, default=REGISTRAR_PATH, help=f"registrar config; default {REGISTRAR_PATH}")
    kick.add_argument("station", help="the revoked station's device id")
    kick.set_defaults(func=cmd_kick)
    rev = sub.add_parser("revoke", help="revoke a station on the registrar host; the registrar publishes the CRL")
    rev.add_argument("--config", type=Path, default=REGISTRAR_PATH, help=f"registrar config; default {REGISTRAR_PATH}")
    rev.add_argument("--serial", action="append", default=[], metavar="HEX",
                     help="also revoke this serial (the station's first certificate, from 'provision show')")
    rev.add_argument("station", help="the station's device id")
    rev.set_defaults(func=cmd_revoke)
    rcp = sub.add_parser("recipient-new", help="make a new recipient key here (rotation); the private half never moves")
    rcp.add_argument("--out", type=Path, default=Path("/etc/clinicam/relay"), help="default /etc/clinicam/relay")
    rcp.add_argument("--like", type=Path, required=True, metavar="RECIPIENT_PUB",
                     help="the current recipient.pub: the new key keeps its KEM (stations refuse a KEM change)")
    rcp.set_defaults(func=cmd_recipient_new)


EXIT_USAGE, EXIT_SILENT, EXIT_BROKER = 2, 3, 4


def _register_cmd(sub: argparse._SubParsersAction) -> None:
    from clinicam.protocol.commands import COMMANDS

    cmd = sub.add_parser("cmd", help="send a station identify, wipe or ping and wait for its answer",
                         description="Send one remote command (DESIGN §5) with an operator identity (--cert, --key; "
                         "from 'clinicam provision operator'), then wait for the "
                         "station's answer on its event topic. Exit 0 answered, 2 usage, 3 no answer in "
                         "time, 4 broker refused, 1 configuration.")
    cmd.add_argument("--config", type=Path, default=DEFAULT_PATH,
                     help=f"broker, CA and topic prefix (and the fallback identity); default {DEFAULT_PATH}")
    cmd.add_argument("--cert", type=Path, metavar="PEM", help="operator certificate (operator-NAME.pem); with --key")
    cmd.add_argument("--key", type=Path, metavar="KEY", help="its private key; without both, the relay's identity "
                     "from --config is used (it may also write acks, and takes over a running relay's session)")
    cmd.add_argument("station", nargs="?",
                     help="the station's device id (its certificate's name); for update, or --group/--percent")
    cmd.add_argument("command", choices=sorted(COMMANDS),
                     help="identify: play the ready signal; ping: answer only; wipe: erase undelivered captures; "
                     "update: fetch and install a signed bundle when idle")
    cmd.add_argument("--ttl", type=float, default=300.0, metavar="SECONDS",
                     help="the station ignores the command after this long (default 300, at most 3600)")
    cmd.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                     help="how long to wait for the answer (default 30)")
    cmd.add_argument("--no-wait", action="store_true", help="publish and return without waiting for the answer")
    cmd.add_argument("--yes", action="store_true", help="confirm a wipe (it destroys undelivered captures)")
    _register_update_options(cmd)
    cmd.set_defaults(func=cmd_cmd)


def _register_update_options(cmd: argparse.ArgumentParser) -> None:
    from clinicam.relay.rollout import DEFAULT_GROUPS

    up = cmd.add_argument_group("update", "what to install and where (README, 'Rolling out an update')")
    up.add_argument("--url", help="the bundle on the site's update server (https://…)")
    up.add_argument("--sha256", metavar="HEX", help="the bundle's SHA-256 (sha256sum), 64 lowercase hex digits")
    up.add_argument("--version", help="the bundle's version (rauc info: Version); stations check it")
    up.add_argument("--allow-downgrade", action="store_true", help="let stations install an older version")
    up.add_argument("--group", dest="rollout_group", metavar="NAME", help="every station of this group (--groups file)")
    up.add_argument("--percent", type=float, metavar="N",
                    help="a stable N %% of the known stations (or of --group): raising N keeps those already chosen")
    up.add_argument("--groups", type=Path, default=DEFAULT_GROUPS, metavar="TOML",
                    help=f"the [groups] file (default {DEFAULT_GROUPS})")
    up.add_argument("--register", type=Path, metavar="JSON",
                    help="the site's ca/register.json: known stations (default [metrics] register)")
    up.add_argument("--rollout-id", metavar="ID", help="what --percent hashes with the device id (default --version)")
    up.add_argument("--concurrency", type=int, default=10, metavar="N",
                    help="commands awaiting their answer at once (default 10)")
    up.add_argument("--dry-run", action="store_true", help="list the chosen stations and send nothing")


def cmd_run(args: argparse.Namespace) -> int:
    from clinicam.relay.build import build_relay  # imports paho and the sinks only here

    config = load_relay_config(args.config)
    check_files(config, source=Path(args.config).name)
    relay = build_relay(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    relay.start()
    print("clinicam relay: running", file=sys.stderr)
    stop.wait()
    relay.stop()
    return 0


def cmd_registrar(args: argparse.Namespace) -> int:
    from clinicam.relay.registrar.config import load_registrar_config
    from clinicam.relay.registrar.service import Registrar, build_core  # imports paho only here

    config = load_registrar_config(args.config)
    registrar = Registrar(config, build_core(config))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    registrar.start()
    print("clinicam registrar: running", file=sys.stderr)
    stop.wait()
    registrar.stop()
    return 0


def cmd_kick(args: argparse.Namespace) -> int:
    from clinicam.provisioning import pki
    from clinicam.relay.registrar.config import load_registrar_config
    from clinicam.relay.registrar.kick import kick  # imports paho only here

    config = load_registrar_config(args.config)
    iss = config.issuing
    ok = kick(args.station, host=config.broker.host, port=config.broker.port, ca=Path(config.identity.ca),
              issuing_cert=pki.load_cert(Path(iss.cert)), issuing_key=pki.load_key(Path(iss.key)))
    if not ok:
        print(f"clinicam relay kick: the broker did not let the takeover in for {args.station}", file=sys.stderr)
        return EXIT_BROKER
    print(f"{args.station}: open connection taken over and closed; with the broker's CRL reloaded it cannot "
          "reconnect")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from clinicam.provisioning import pki
    from clinicam.relay.registrar.config import load_registrar_config
    from clinicam.relay.registrar.core import Journal
    from clinicam.relay.registrar.revocation import RevocationLog, revoke

    config = load_registrar_config(args.config)
    iss = config.issuing
    for serial in args.serial:
        try:
            int(serial, 16)
        except ValueError:
            print(f"clinicam relay revoke: --serial {serial!r} is not a hexadecimal serial", file=sys.stderr)
            return EXIT_USAGE
    number, serials = revoke(args.station, serials=args.serial, crl_path=Path(config.identity.crl),
                             issuing_cert=pki.load_cert(Path(iss.cert)), issuing_key=pki.load_key(Path(iss.key)),
                             journal=Journal(Path(iss.journal)), log=RevocationLog(Path(iss.revocations)),
                             now=pki.utcnow())
    print(f"{args.station}: serial(s) {', '.join(serials)} revoked in CRL {number} ({config.identity.crl}). "
          "The running registrar publishes it; the broker agent installs it and the open connection is cut.")
    return 0


def cmd_recipient_new(args: argparse.Namespace) -> int:
    from clinicam.protocol.recipient import generate_recipient_key, load_recipient_public
    from clinicam.provisioning import pki

    try:
        kem = load_recipient_public(args.like.read_bytes()).kem
    except OSError as exc:
        raise ConfigError(f"--like {args.like}: cannot be read: give the current recipient.pub") from exc
    key = generate_recipient_key(kem)
    stem = f"recipient-{key.fingerprint[:12]}"
    priv, pub = args.out / f"{stem}.key", args.out / f"{stem}.pub"
    pki.write_private(priv, key.private_pem())
    pki.write_public(pub, key.public_pem())
    print(f"new recipient key {key.fingerprint} ({kem}): {priv} (0600), {pub}\n"
          f"1. add {priv} to the relays' [identity] recipient_keys, keeping the old key, and restart them;\n"
          f"2. copy {pub} over the registrar's [issuing] recipient file: it announces it and stations seal\n"
          "   new captures to it (already sealed ones stay on the old key);\n"
          "3. once no station reports pending captures from before the switch, remove the old key from\n"
          "   recipient_keys (retire) and restart the relays; copy the .pub to SITE/relay/recipient.pub\n"
          "   on the admin machine so new stations get it in their bundle.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from clinicam.relay import fleet
    from clinicam.relay.metrics import provisioned_stations

    config = load_relay_config(args.config)
    path = Path(config.relay.status_file)
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"CRITICAL: {path}: no status file: the relay is not running here (or never ran); "
              "'systemctl status clinicam-relay'")
        return fleet.CRITICAL
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable status file") from exc
    register = args.register or (Path(config.metrics.register) if config.metrics.register else None)
    provisioned = provisioned_stations(register) if register else []
    limits = fleet.Limits(stale_after_s=args.stale_after, down_after_s=args.down_after,
                          expiry_warn_s=args.renewal_margin_days * 86400)
    now = time.time()
    held = _held_certificates(config, args.registrar)
    header, findings = fleet.assess_relay(data, now, limits)
    findings += fleet.assess_stations(data.get("stations", {}), provisioned, now, limits)
    findings += fleet.assess_certificates(held, now, limits)
    code = fleet.exit_code(findings)
    certs = certificate_rows(data, held, now, limits)
    if args.json:
        report = {**data, "assessment": {"exit": code, "relay": header, "certificates": certs,
                                         "findings": [f.line() for f in findings]}}
        print(json.dumps(report, indent=1, sort_keys=True))
        return code
    print(header)
    print(format_status(data, certs))
    print(format_certificates(certs))
    for finding in sorted(findings, key=lambda f: -f.level):
        print(finding.line())
    print(f"status: {('OK', 'WARNING', 'CRITICAL')[code]} (exit {code})")
    return code


def _held_certificates(config: RelayConfig, registrar: Path) -> list[HeldCertificate | Unreadable]:
    from clinicam.relay import certificates

    found = list(certificates.relay_certificates(config.identity))
    if registrar.exists():  # the registrar runs on this host
        found += certificates.registrar_certificates(registrar)
    return certificates.distinct(found)


def certificate_rows(data: dict[str, Any], held: list[HeldCertificate | Unreadable], now: float,
                     limits: Limits) -> list[dict[str, Any]]:
    """Every certificate's end, days left and state (``ok``, ``renew``, ``expired``, ``unknown``):
    the stations' from their status, then this host's own (``--json``'s ``certificates``)."""
    from clinicam.relay import fleet
    from clinicam.relay.certificates import HeldCertificate
    from clinicam.relay.metrics import stamp_seconds

    rows = []
    for device, st in sorted(data.get("stations", {}).items()):
        end = stamp_seconds(st.get("cert_not_after"))
        rows.append({"certificate": "station", "name": device, "not_after": st.get("cert_not_after"),
                     "days_left": fleet.days_left(end, now), "state": fleet.cert_state(end, now, limits)})
    for cert in held:
        if isinstance(cert, HeldCertificate):
            rows.append({"certificate": cert.role, "name": cert.name, "not_after": _stamp(cert.not_after),
                         "days_left": fleet.days_left(cert.not_after, now),
                         "state": fleet.cert_state(cert.not_after, now, limits)})
    return rows


def _stamp(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_certificates(rows: Sequence[Mapping[str, Any]]) -> str:
    """This host's certificates (the stations' are a column of theirs): whose, when it ends,
    days left, and ``RENEW``/``EXPIRED``."""
    lines = ["", f"{'certificate':12} {'name':24} {'not after':>10}  days left"]
    for row in rows:
        if row["certificate"] != "station":
            end = (row["not_after"] or "-")[:10]
            lines.append(f"{row['certificate']:12} {row['name']:24} {end:>10}  {_days_cell(row)}")
    return "\n".join(lines)


def _days_cell(row: Mapping[str, Any] | None) -> str:
    """``396``, ``10 RENEW``, ``-3 EXPIRED``: days left and, when due, the state."""
    if row is None or row["days_left"] is None:
        return "-"
    return f"{row['days_left']}" + ("" if row["state"] == "ok" else f"  {row['state'].upper()}")


def format_status(data: dict[str, Any], certs: Sequence[Mapping[str, Any]] = ()) -> str:
    """A table of stations (``cert_days``: days their certificate has left, from ``certs``),
    then the relay's counters."""
    days = {r["name"]: _days_cell(r) for r in certs if r["certificate"] == "station"}
    cols = ("state", "relay", "pending", "pending_bytes", "fw", "clock_synced", "cert_days", "renewal", "seen")
    lines = [f"{'station':24} " + " ".join(f"{c:>14}" for c in cols)]
    for device, st in sorted(data.get("stations", {}).items()):
        st = {**st, "renewal": _renewal_cell(st.get("renewal")), "cert_days": days.get(device, "-")}
        lines.append(f"{device:24} " + " ".join(f"{st.get(c, '-')!s:>14}" for c in cols))
    counters = data.get("counters", {})
    if counters:
        lines.append("")
        lines += [f"{name:32} {value}" for name, value in sorted(counters.items())]
    lines.append(f"(updated {data.get('updated', '?')})")
    return "\n".join(lines)


def _renewal_cell(renewal: Any) -> str:
    """``installed``, ``failed:revoked``…: the station's last certificate renewal (issue 17)."""
    if not isinstance(renewal, dict):
        return "-"
    state, reason = renewal.get("state", "-"), renewal.get("reason")
    return f"{state}:{reason}" if reason else str(state)


def cmd_cmd(args: argparse.Namespace) -> int:
    from clinicam.common.errors import UplinkError
    from clinicam.protocol.commands import MAX_LIFETIME_S
    from clinicam.protocol.ids import DEVICE_ID
    from clinicam.relay import remote  # imports paho only here

    def refuse(message: str) -> int:
        print(f"clinicam relay cmd: {message}", file=sys.stderr)
        return EXIT_USAGE

    if args.command == "update":
        return cmd_update(args)
    if args.station is None:
        return refuse(f"name the station to send {args.command} to")
    update_only = {"--url": args.url, "--sha256": args.sha256, "--version": args.version,
                   "--group": args.rollout_group, "--percent": args.percent, "--rollout-id": args.rollout_id,
                   "--allow-downgrade": args.allow_downgrade or None, "--dry-run": args.dry_run or None}
    given = [flag for flag, value in update_only.items() if value is not None]
    if given:
        return refuse(f"{given[0]} goes only with the update command")
    if not DEVICE_ID.fullmatch(args.station):
        return refuse("a station id is 3 to 64 lowercase letters, digits and '-' "
                      "(as 'clinicam relay status' lists them)")
    if args.command == "wipe" and not args.yes:
        return refuse(f"wipe erases every capture {args.station} has not delivered yet, and they cannot "
                      "be recovered: add --yes to send it")
    if not 0 < args.ttl <= MAX_LIFETIME_S:
        return refuse(f"--ttl must be above 0 and at most {MAX_LIFETIME_S:g} seconds (stations refuse longer)")
    if args.timeout <= 0:
        return refuse("--timeout must be above 0 seconds")
    if (args.cert is None) != (args.key is None):
        return refuse("give --cert and --key together (an operator identity from 'clinicam provision operator')")
    target = remote.Remote.from_config(load_relay_config(args.config), args.cert, args.key)
    try:
        answer = remote.send_command(target, args.station, args.command, ttl_s=args.ttl,
                                     timeout_s=args.timeout, wait=not args.no_wait)
    except remote.StationSilent as exc:
        print(f"clinicam relay cmd: {exc}", file=sys.stderr)
        return EXIT_SILENT
    except UplinkError as exc:  # unreachable, refused (TLS, ACL), connection taken over
        print(f"clinicam relay cmd: {exc}", file=sys.stderr)
        return EXIT_BROKER
    print(format_answer(answer))
    return 0


def format_answer(answer: Any) -> str:
    """One line for the engineer: what was sent, and what the station said (no PHI exists here)."""
    sent = answer.sent
    if answer.event is None:
        return f"sent {sent.cmd} to {sent.station} (command {sent.id}); it expires at {sent.expires}"
    event = answer.event
    line = f"{sent.station} answered {sent.cmd} (command {sent.id}) at {event.get('at', '?')}"
    if sent.cmd == "wipe":
        ids = event.get("capture_ids") or []
        line += f": wiped {event.get('count', len(ids))} undelivered capture(s)"
        line += f" {', '.join(ids)}" if ids else ""
    return line


def cmd_update(args: argparse.Namespace) -> int:
    """``relay cmd … update``: check the order, choose the stations, send, tabulate the answers."""
    from clinicam.common.errors import UplinkError
    from clinicam.protocol.commands import MAX_LIFETIME_S
    from clinicam.relay import fanout, remote, rollout  # these import paho only here

    def refuse(message: str) -> int:
        print(f"clinicam relay cmd update: {message}", file=sys.stderr)
        return EXIT_USAGE

    order = _update_order(args)
    if isinstance(order, str):
        return refuse(order)
    if (args.station is None) == (args.rollout_group is None and args.percent is None):
        return refuse("name one station, or choose with --group NAME and/or --percent N (not both ways)")
    if not 0 < args.ttl <= MAX_LIFETIME_S or args.timeout <= 0 or args.concurrency < 1:
        return refuse(f"--ttl must be in (0, {MAX_LIFETIME_S:g}], --timeout above 0, --concurrency at least 1")
    if args.percent is not None and not 0 < args.percent <= 100:
        return refuse("--percent must be above 0 and at most 100")
    if args.no_wait or args.yes:
        return refuse(f"{'--no-wait' if args.no_wait else '--yes'} does not go with update: its answers are "
                      "the table (bound the wait with --timeout)")
    if (args.cert is None) != (args.key is None):
        return refuse("give --cert and --key together (an operator identity from 'clinicam provision operator')")
    config = load_relay_config(args.config)
    seen = rollout.seen_stations(Path(config.relay.status_file))
    try:
        targets = _update_targets(args, config, seen)
    except rollout.RolloutError as exc:
        return refuse(str(exc))
    skipped = {s: order.version for s in sorted(rollout.running_version(seen, targets, order.version))}
    targets = [s for s in targets if s not in skipped]
    if args.dry_run:
        print(_dry_run(targets, skipped, seen, order.version))
        return 0
    target = remote.Remote.from_config(config, args.cert, args.key)
    try:
        outcomes = fanout.send_commands(target, targets, "update", update=order, ttl_s=args.ttl,
                                        timeout_s=args.timeout, concurrency=args.concurrency)
    except UplinkError as exc:  # unreachable, refused (TLS, ACL), connection taken over
        print(f"clinicam relay cmd update: {exc}", file=sys.stderr)
        return EXIT_BROKER
    print(rollout.format_table(outcomes, skipped))
    code = rollout.exit_code(outcomes)
    print(f"update {order.version}: {len(outcomes)} sent, {len(skipped)} skipped; follow it with "
          "'clinicam relay status' (fw) and the audit log (updated / update-failed)")
    return code


def _update_order(args: argparse.Namespace) -> Any:
    """The order, or the message saying which option is wrong."""
    from clinicam.protocol.commands import MAX_URL, SHA256_HEX, UPDATE_URL, VERSION, UpdateOrder

    if args.url is None or args.sha256 is None or args.version is None:
        return "update needs --url, --sha256 and --version (the bundle's, from 'rauc info' and 'sha256sum')"
    if len(args.url) > MAX_URL or not UPDATE_URL.fullmatch(args.url):
        return ("--url must be https://HOST[:PORT]/PATH on the site's update server, without spaces, "
                "credentials or a fragment")
    if not SHA256_HEX.fullmatch(args.sha256):
        return "--sha256 must be 64 lowercase hex digits (sha256sum of the bundle)"
    if not VERSION.fullmatch(args.version):
        return "--version must be 1 to 40 letters, digits, '.', '+' or '-', starting with a letter or digit"
    return UpdateOrder(args.url, args.sha256, args.version, args.allow_downgrade)


def _update_targets(args: argparse.Namespace, config: Any, seen: dict[str, Any]) -> list[str]:
    from clinicam.protocol.ids import DEVICE_ID
    from clinicam.relay import rollout
    from clinicam.relay.metrics import provisioned_stations

    if args.station is not None:
        if not DEVICE_ID.fullmatch(args.station):
            raise rollout.RolloutError("a station id is 3 to 64 lowercase letters, digits and '-'")
        return [args.station]
    register = args.register or (Path(config.metrics.register) if config.metrics.register else None)
    known = rollout.known_stations(seen, provisioned_stations(register) if register else [])
    population = known
    if args.rollout_group is not None:
        population = rollout.resolve_group(rollout.load_groups(args.groups), args.rollout_group, known,
                                           source=args.groups)
    if args.percent is not None:
        if not population:
            raise rollout.RolloutError("no known stations to choose from: the relay's status file lists none "
                                       "and no register was given (--register or [metrics] register)")
        population = rollout.pick_percent(population, args.percent, args.rollout_id or args.version)
    return population


def _dry_run(targets: list[str], skipped: dict[str, str], seen: dict[str, Any], version: str) -> str:
    lines = [f"would send update {version} to {len(targets)} station(s); {len(skipped)} already run it"]
    lines.append(f"{'station':24} {'state':>10} {'fw':>14}")
    for station in targets:
        st = seen.get(station, {})
        lines.append(f"{station:24} {st.get('state', '-')!s:>10} {st.get('fw', '-')!s:>14}")
    lines += [f"{station:24} {'skipped':>10} {v:>14}" for station, v in skipped.items()]
    return "\n".join(lines)
