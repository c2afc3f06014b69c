"""The addresses the station's sandbox may reach, recorded at provisioning.

systemd's ``IPAddressAllow=`` takes addresses, not host names, and the appliance's root
is read-only: so ``clinicam provision install`` records the broker's addresses in
``allow.json`` beside the identity (on the persistent partition), and before every
start of the station, ``clinicam provision apply-network`` (the unit's
``ExecStartPre=+``) sets them on the unit with ``systemctl set-property --runtime``.
The image's own list (``CLINICAM_IP_ALLOW``) is replaced, not extended: a station may
reach exactly its broker and localhost (DNS goes through systemd-resolved there).

The firewall (image-build/overlay/etc/nftables.conf, output policy drop) is filled from
the same file by ``apply-network``: the broker's addresses and port for the station's
UID (sets ``broker4``/``broker6``), and the update server's for root (``update4``/
``update6``): ``update-fetch`` runs as root outside the station's sandbox, so nftables
is what lets it reach the update server recorded with ``install --update-server``, and
nothing else.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from clinicam.common.errors import ProvisioningError
from clinicam.provisioning import pki

ALLOW_FILE = "allow.json"
STATION_UNIT = "clinicam-station.service"
NFT_TABLE = "inet clinicam"
Resolver = Callable[[str], Sequence[str]]
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class UpdateServer:
    """The site's update server (``install --update-server https://HOST:PORT``)."""

    url: str
    addresses: tuple[str, ...]
    port: int

    @classmethod
    def parse(cls, url: str, resolve: Resolver | None = None) -> UpdateServer:
        """Check the URL and resolve its host now (the firewall takes addresses)."""
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError as exc:
            raise ProvisioningError(f"--update-server {url!r}: {exc}; give https://HOST[:PORT]") from None
        if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ProvisioningError(
                f"--update-server {url!r}: give https://HOST[:PORT] (update-fetch speaks HTTPS only; "
                "the bundle's path comes with each update command)"
            )
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        return cls(f"https://{shown}:{port}", tuple(addresses_for(host, resolve or _resolve, "update server")), port)

    def as_dict(self) -> dict[str, object]:
        return {"url": self.url, "addresses": list(self.addresses), "port": self.port}


@dataclass(frozen=True)
class Allowed:
    """What allow.json records: the broker's addresses (and port), the update server."""

    ip_allow: list[str]
    broker_port: int | None = None
    update_server: UpdateServer | None = None


def _resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def addresses_for(host: str, resolve: Resolver = _resolve, what: str = "broker") -> list[str]:
    """The host's addresses: the literal itself, or what DNS answers now."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        found = resolve(host)
    except OSError as exc:
        raise ProvisioningError(
            f"cannot resolve the {what} host {host!r} ({exc}): install where DNS works, "
            + ("or give the broker's addresses with --allow-address" if what == "broker"
               else "or give the update server as https://ADDRESS:PORT")
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


def write(
    identity_dir: Path,
    addresses: Sequence[str],
    broker_port: int | None = None,
    update_server: UpdateServer | None = None,
) -> Path:
    path = Path(identity_dir) / ALLOW_FILE
    doc: dict[str, object] = {"ip_allow": normalise(addresses)}
    if broker_port is not None:
        doc["broker_port"] = broker_port
    if update_server is not None:
        doc["update_server"] = update_server.as_dict()
    pki.write_public(path, json.dumps(doc).encode())
    return path


def read(identity_dir: Path) -> list[str] | None:
    """The recorded broker addresses, or None for a station provisioned without them."""
    recorded = read_all(identity_dir)
    return None if recorded is None else recorded.ip_allow


def read_all(identity_dir: Path) -> Allowed | None:
    """Everything allow.json records, or None for a station provisioned without it."""
    path = Path(identity_dir) / ALLOW_FILE
    if not path.exists():
        return None
    again = "run 'clinicam provision install' again"
    try:
        doc = json.loads(path.read_text())
        recorded = doc["ip_allow"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProvisioningError(f"{path} is unreadable ({exc.__class__.__name__}): {again}") from None
    if not isinstance(recorded, list) or not all(isinstance(a, str) for a in recorded):
        raise ProvisioningError(f"{path} must hold a list of addresses: {again}")
    port = doc.get("broker_port")
    if port is not None and not _is_port(port):
        raise ProvisioningError(f"{path}: broker_port {port!r} is not a TCP port: {again}")
    update = doc.get("update_server")
    server = None
    if update is not None:
        try:
            server = UpdateServer(str(update["url"]), tuple(normalise(update["addresses"])), update["port"])
        except (KeyError, TypeError) as exc:
            raise ProvisioningError(f"{path}: update_server is damaged ({exc.__class__.__name__}): {again}") from None
        if not _is_port(server.port) or not server.url.startswith("https://"):
            raise ProvisioningError(f"{path}: update_server {update!r} is damaged: {again}")
    return Allowed(normalise(recorded), port, server)


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def set_property_argv(addresses: Sequence[str], unit: str = STATION_UNIT) -> list[str]:
    """The empty assignment resets the image's list; localhost stays for DNS."""
    allow = [f"IPAddressAllow={a}" for a in ("localhost", *normalise(addresses))]
    return ["systemctl", "set-property", "--runtime", unit, "IPAddressAllow=", *allow]


def nft_script(allowed: Allowed) -> str:
    """``nft -f -`` input: the four sets emptied, then filled from allow.json.

    No recorded broker port: the set stays empty and the image's fixed rule (the
    station's UID to port 8883) is what lets the station out, as before."""
    lines = [f"flush set {NFT_TABLE} {name}" for name in ("broker4", "broker6", "update4", "update6")]

    def add(prefix: str, addresses: Sequence[str], port: int) -> None:
        for family in ("4", "6"):
            items = [f"{a} . {port}" for a in addresses if ipaddress.ip_network(a).version == int(family)]
            if items:
                lines.append(f"add element {NFT_TABLE} {prefix}{family} {{ {', '.join(items)} }}")

    if allowed.broker_port is not None:
        add("broker", allowed.ip_allow, allowed.broker_port)
    if allowed.update_server is not None:
        add("update", allowed.update_server.addresses, allowed.update_server.port)
    return "\n".join(lines) + "\n"


def apply(identity_dir: Path, unit: str = STATION_UNIT, run: Runner = subprocess.run) -> str:
    """Set the recorded addresses on ``unit`` and in the firewall; a one-line account."""
    allowed = read_all(identity_dir)
    if allowed is None:
        return f"no {ALLOW_FILE} in {identity_dir}: the image's address list stays"
    result = run(set_property_argv(allowed.ip_allow, unit), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProvisioningError(f"systemctl set-property {unit} failed: {result.stderr.strip()}")
    result = run(["nft", "-f", "-"], input=nft_script(allowed), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProvisioningError(
            f"nft could not fill the firewall's sets in table {NFT_TABLE} ({result.stderr.strip()}): "
            "is nftables.service running with the image's /etc/nftables.conf?"
        )
    account = f"{unit} may reach {' '.join(allowed.ip_allow)} and localhost"
    if allowed.broker_port is not None:
        account += f" (firewall: port {allowed.broker_port})"
    if allowed.update_server is not None:
        account += f"; update-fetch may reach {allowed.update_server.url} ({' '.join(allowed.update_server.addresses)})"
    return account
