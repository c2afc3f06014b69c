"""The addresses the station's sandbox may reach, recorded at provisioning.

systemd's ``IPAddressAllow=`` takes addresses, not host names, and the appliance's root
is read-only: so ``clinicam provision install`` records the broker's addresses in
``allow.json`` beside the identity (on the persistent partition), and before every
start of the station, ``clinicam provision apply-network`` (the unit's
``ExecStartPre=+``) sets them on the unit with ``systemctl set-property --runtime``.
The image's own list (``CLINICAM_IP_ALLOW``) is replaced, not extended: a station may
reach exactly its broker and localhost (DNS goes through systemd-resolved there).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from clinicam.common.errors import ProvisioningError
from clinicam.provisioning import pki

ALLOW_FILE = "allow.json"
STATION_UNIT = "clinicam-station.service"
Resolver = Callable[[str], Sequence[str]]


def _resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def addresses_for(host: str, resolve: Resolver = _resolve) -> list[str]:
    """The broker's addresses: the literal itself, or what DNS answers now."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        found = resolve(host)
    except OSError as exc:
        raise ProvisioningError(
            f"cannot resolve the broker host {host!r} ({exc}): install where DNS works, "
            "or give the broker's addresses with --allow-address"
        ) from None
    return normalise(found)


def normalise(addresses: Sequence[str]) -> list[str]:
    """Unique, valid address or prefix strings, in order; anything else is refused."""
    out: list[str] = []
    for text in addresses:
        try:
            value = str(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ProvisioningError(
                f"{text!r} is not an IP address or prefix (IPAddressAllow= takes no host names)"
            ) from None
        value = value.removesuffix("/32").removesuffix("/128")
        if value not in out:
            out.append(value)
    if not out:
        raise ProvisioningError("no broker address to allow: give --allow-address")
    return out


def write(identity_dir: Path, addresses: Sequence[str]) -> Path:
    path = Path(identity_dir) / ALLOW_FILE
    pki.write_public(path, json.dumps({"ip_allow": normalise(addresses)}).encode())
    return path


def read(identity_dir: Path) -> list[str] | None:
    """The recorded addresses, or None for a station provisioned without them."""
    path = Path(identity_dir) / ALLOW_FILE
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text())["ip_allow"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProvisioningError(
            f"{path} is unreadable ({exc.__class__.__name__}): run 'clinicam provision install' again"
        ) from None
    if not isinstance(recorded, list) or not all(isinstance(a, str) for a in recorded):
        raise ProvisioningError(f"{path} must hold a list of addresses: run 'clinicam provision install' again")
    return normalise(recorded)


def set_property_argv(addresses: Sequence[str], unit: str = STATION_UNIT) -> list[str]:
    """The empty assignment resets the image's list; localhost stays for DNS."""
    allow = [f"IPAddressAllow={a}" for a in ("localhost", *normalise(addresses))]
    return ["systemctl", "set-property", "--runtime", unit, "IPAddressAllow=", *allow]


def apply(identity_dir: Path, unit: str = STATION_UNIT) -> str:
    """Set the recorded addresses on ``unit``; a one-line account for the journal."""
    addresses = read(identity_dir)
    if addresses is None:
        return f"no {ALLOW_FILE} in {identity_dir}: the image's address list stays"
    result = subprocess.run(set_property_argv(addresses, unit), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProvisioningError(f"systemctl set-property {unit} failed: {result.stderr.strip()}")
    return f"{unit} may reach {' '.join(addresses)} and localhost"
