"""``clinicam relay status`` judged: is the relay alive, how old is what it wrote, which
stations need someone — as an exit code a monitoring check can use.

The relay rewrites its status file at least every few seconds (``relay.heartbeat_s``)
and names itself in it (id, pid). So the reader can say how old the data is and
whether the process that wrote it still runs, instead of showing a dead relay's last
picture as the truth. Exit codes: 0 all well, 1 warnings, 2 critical (see ``OK``,
``WARNING``, ``CRITICAL``). Everything here is pure: the clock and the process check
are passed in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clinicam.relay.certificates import REMEDY, HeldCertificate, Unreadable
from clinicam.relay.metrics import stamp_seconds

OK, WARNING, CRITICAL = 0, 1, 2
LEVELS = {WARNING: "WARNING", CRITICAL: "CRITICAL"}


@dataclass(frozen=True)
class Limits:
    """When something becomes worth a warning or critical."""

    stale_after_s: float = 30.0  # status file older than this (the relay writes every few s): relay hung
    down_after_s: float = 600.0  # a station offline longer than this is critical, before that a warning
    # a certificate ending within this is a warning (expired: critical): the stations'
    # renewal margin ([renewal] margin_days), from which a station should have renewed
    expiry_warn_s: float = 60 * 86400.0


@dataclass(frozen=True)
class Finding:
    level: int
    text: str

    def line(self) -> str:
        return f"{LEVELS[self.level]}: {self.text}"


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (signal 0; EPERM means it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def assess_relay(data: Mapping[str, Any], now: float, limits: Limits,
                 alive: Callable[[int], bool] = pid_alive) -> tuple[str, list[Finding]]:
    """The header line about the relay itself, and what is wrong with it."""
    updated = stamp_seconds(data.get("updated"))
    age = f"written {_age(now - updated)} ago" if updated is not None else "of unknown age"
    writer = data.get("relay")
    if not isinstance(writer, dict) or not isinstance(writer.get("pid"), int):
        return (f"relay: unknown (an older status file), {age}",
                [Finding(WARNING, "the status file does not say which relay wrote it: restart the relay")])
    who = f"{writer.get('id', 'relay')} (pid {writer['pid']})"
    if not writer.get("running", True) or not alive(writer["pid"]):
        how = "stopped" if not writer.get("running", True) else "is not running"
        return (f"relay: {who} {how}; status {age}",
                [Finding(CRITICAL, f"relay {who} {how}: stations' captures are not being filed; "
                                   "'systemctl status clinicam-relay'")])
    findings = []
    if updated is None or now - updated > limits.stale_after_s:
        findings.append(Finding(CRITICAL, f"relay {who} runs but has not updated its status ({age}): hung?"))
    if not writer.get("connected", False):
        findings.append(Finding(CRITICAL, f"relay {who} is not connected to the broker"))
    role = "serving" if writer.get("active") else "standing by"
    link = "connected" if writer.get("connected") else "NOT connected"
    return f"relay: {who} running, {link}, {role}; status {age}", findings


def assess_stations(stations: Mapping[str, Mapping[str, Any]], provisioned: Iterable[str], now: float,
                    limits: Limits) -> list[Finding]:
    """Stations down, offline, without a relay, with certificates running out; and the unseen."""
    findings = []
    for device, st in sorted(stations.items()):
        seen = stamp_seconds(st.get("seen"))
        since = now - seen if seen is not None else float("inf")
        pending = st.get("pending")
        waiting = f", {pending} capture(s) pending" if isinstance(pending, int) and pending else ""
        if st.get("state") != "online":
            level = CRITICAL if since > limits.down_after_s else WARNING
            how_long = f"for {_age(since)}" if seen is not None else "(last heard: unknown)"
            findings.append(Finding(level, f"station {device} {st.get('state', 'unknown')} "
                                           f"{how_long}{waiting}"))
        elif st.get("relay") == "offline":
            findings.append(Finding(WARNING, f"station {device} is connected but sees no relay serving it{waiting}"))
        expires = stamp_seconds(st.get("cert_not_after"))
        if expires is not None and expires - now < limits.expiry_warn_s:
            findings.append(Finding(_expiry_level(expires, now), f"station {device}: certificate "
                                    f"{_ends(expires, now)}{_renewal_note(st.get('renewal'))}; it renews itself "
                                    "on a two-tier site (README 'Certificate lifecycle'), else "
                                    "'clinicam provision renew'"))
    unseen = sorted(set(provisioned) - set(stations))
    if unseen:
        findings.append(Finding(WARNING, f"{len(unseen)} provisioned station(s) never seen: {', '.join(unseen)}"))
    return findings


def assess_certificates(held: Iterable[HeldCertificate | Unreadable], now: float,
                        limits: Limits) -> list[Finding]:
    """This host's own certificates (relay, CAs, registrar) ending within the margin, or unreadable."""
    findings = []
    for cert in held:
        if isinstance(cert, Unreadable):
            findings.append(Finding(WARNING, f"{cert.source}: {cert.problem}"))
        elif cert.not_after - now < limits.expiry_warn_s:
            remedy = REMEDY[cert.role].format(name=cert.name)
            findings.append(Finding(_expiry_level(cert.not_after, now),
                                    f"{cert.role} certificate {cert.name} {_ends(cert.not_after, now)}: {remedy}"))
    return findings


def days_left(not_after: float | None, now: float) -> int | None:
    """Whole days until ``not_after``, negative once expired (``-3``: expired 3 days ago);
    None when unknown."""
    return None if not_after is None else int((not_after - now) / 86400)


def cert_state(not_after: float | None, now: float, limits: Limits) -> str:
    """``ok``, ``renew`` (within the margin), ``expired``, or ``unknown``."""
    if not_after is None:
        return "unknown"
    if not_after <= now:
        return "expired"
    return "renew" if not_after - now < limits.expiry_warn_s else "ok"


def _expiry_level(not_after: float, now: float) -> int:
    return CRITICAL if not_after <= now else WARNING


def _ends(not_after: float, now: float) -> str:
    """``expires in 19 d`` (whole days, as the table's days left), or ``expired 2 h ago``."""
    span = abs(not_after - now)
    when = f"{math.floor(span / 86400)} d" if span >= 86400 else _age(span)
    return f"expired {when} ago" if not_after <= now else f"expires in {when}"


def _renewal_note(renewal: object) -> str:
    """``, last renewal failed (rate-limited)``: what the station said about renewing."""
    if not isinstance(renewal, dict) or not isinstance(renewal.get("state"), str):
        return ""
    reason = f" ({renewal['reason']})" if isinstance(renewal.get("reason"), str) else ""
    return f", last renewal {renewal['state']}{reason}"


def exit_code(findings: Iterable[Finding]) -> int:
    return max((f.level for f in findings), default=OK)
