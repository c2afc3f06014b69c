"""Topic names of DESIGN §5, built and parsed in one place for the station and the relay.

Topics carry only the device id, the capture id and a part index: never anything
about a patient (DESIGN §3.1). Builders refuse values that would make another topic
(a ``/``, a wildcard) and the parser refuses anything that is not exactly one of the
§5 shapes, so a relay never acts on a topic it half understands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clinicam.common.errors import TopicError
from clinicam.protocol.ids import DEVICE_ID_RULE, is_capture_id, is_device_id

DEFAULT_PREFIX = "clinicam/v1"
_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")
MAX_PART = 2**32 - 1  # the AAD carries i as uint32
DEVICE_TOPICS = ("ack", "status", "event", "cmd", "renew", "cert")
REGISTRAR = "registrar"  # the registrar's identity (CN), issue 17
ADMIN = "admin"  # the admin machine's identity (CN): publishes the root's CRL bulletin, issue 17


@dataclass(frozen=True)
class ParsedTopic:
    """One topic, understood: ``kind`` is ``part``, ``manifest``, ``ack``, ``status``,
    ``event`` or ``cmd``; ``capture_id`` and ``part`` are set only where they belong."""

    device: str
    kind: str
    capture_id: str | None = None
    part: int | None = None


def _device(device: str) -> str:
    if not is_device_id(device):
        raise TopicError(f"device id must match {DEVICE_ID_RULE}")
    return device


def _capture(capture_id: str) -> str:
    if not is_capture_id(capture_id):
        raise TopicError("capture id must be 32 lowercase hex characters")
    return capture_id


def _part(i: int) -> int:
    if type(i) is not int or not 0 <= i <= MAX_PART:
        raise TopicError(f"part index must be an integer from 0 to {MAX_PART}")
    return i


def check_prefix(prefix: str) -> str:
    """A prefix is one or more plain levels: no wildcard, no empty level, no ``$``."""
    levels = prefix.split("/")
    if (not prefix or prefix.startswith("$") or "\0" in prefix
            or any(not lv or "+" in lv or "#" in lv for lv in levels)):
        raise TopicError("topic prefix must be plain levels like 'clinicam/v1' "
                         "(no '+', '#', leading '$' or empty level)")
    return prefix


@dataclass(frozen=True)
class Topics:
    """Builders and the parser for one prefix ``P`` (default ``clinicam/v1``)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def part(self, device: str, capture_id: str, i: int) -> str:
        """``P/D/capture/<capture_id>/part/<i>``"""
        return f"{self.prefix}/{_device(device)}/capture/{_capture(capture_id)}/part/{_part(i)}"

    def manifest(self, device: str, capture_id: str) -> str:
        """``P/D/capture/<capture_id>/manifest``"""
        return f"{self.prefix}/{_device(device)}/capture/{_capture(capture_id)}/manifest"

    def ack(self, device: str) -> str:
        """``P/D/ack`` (relay → station)."""
        return f"{self.prefix}/{_device(device)}/ack"

    def status(self, device: str) -> str:
        """``P/D/status`` (retained; the will)."""
        return f"{self.prefix}/{_device(device)}/status"

    def event(self, device: str) -> str:
        """``P/D/event`` (audit events without PHI)."""
        return f"{self.prefix}/{_device(device)}/event"

    def cmd(self, device: str) -> str:
        """``P/D/cmd`` (relay → station)."""
        return f"{self.prefix}/{_device(device)}/cmd"

    def renew(self, device: str) -> str:
        """``P/D/renew`` (station → registrar): a certificate renewal request."""
        return f"{self.prefix}/{_device(device)}/renew"

    def cert(self, device: str) -> str:
        """``P/D/cert`` (registrar → station): the renewal's answer."""
        return f"{self.prefix}/{_device(device)}/cert"

    def registrar_subscriptions(self) -> list[str]:
        """What the registrar subscribes to: every station's renewal requests."""
        return [f"{self.prefix}/+/renew"]

    def station_subscriptions(self, device: str) -> list[str]:
        """What a station subscribes to: its own ack and cmd topics."""
        return [self.ack(device), self.cmd(device)]

    def relay_subscriptions(self, shared_group: str | None = None) -> list[str]:
        """What a relay worker subscribes to (partitioning happens after, by device).

        With ``shared_group`` the broker balances the messages over the group's members
        (MQTT 5 ``$share/<group>/<filter>``).
        """
        filters = [f"{self.prefix}/+/capture/#", f"{self.prefix}/+/status",
                   f"{self.prefix}/+/event"]
        return [f"$share/{shared_group}/{f}" for f in filters] if shared_group else filters

    # -- the broker ACL (rendered by clinicam.provisioning.brokerconf) ----------------
    def station_acl(self, device: str) -> tuple[list[str], list[str]]:
        """One station's topics: (write, read) — its captures, status and events; its ack and cmd."""
        base = f"{self.prefix}/{_device(device)}"
        return ([f"{base}/capture/#", f"{base}/status", f"{base}/event"],
                [f"{base}/ack", f"{base}/cmd"])

    def station_renewal_acl(self, device: str) -> tuple[list[str], list[str]]:
        """A station's renewal topics on a two-tier site: (write, read) — its request, the answer."""
        return [self.renew(device)], [self.cert(device)]

    def registrar_acl(self) -> tuple[list[str], list[str]]:
        """The registrar's topics: (read, write) — every renewal request, every answer."""
        return self.registrar_subscriptions(), [f"{self.prefix}/+/cert"]

    # -- site-wide topics (issue 17): ``_site`` can never be a device id ---------------
    def site_crl(self) -> str:
        """``P/_site/crl`` (registrar → broker agent, relays; retained): the CRL bulletin."""
        return f"{self.prefix}/_site/crl"

    def site_crl_root(self) -> str:
        """``P/_site/crl-root`` (admin → broker agent, relays, registrar; retained): the
        root-signed CRL bulletin (root-level and single-tier revocations)."""
        return f"{self.prefix}/_site/crl-root"

    def site_crls(self) -> list[str]:
        """Both bulletin topics: one author each, so neither overwrites the other's retained copy."""
        return [self.site_crl(), self.site_crl_root()]

    def site_crl_installed(self) -> str:
        """``P/_site/crl-installed`` (broker agent → registrar; retained): the receipt."""
        return f"{self.prefix}/_site/crl-installed"

    def site_recipient(self) -> str:
        """``P/_site/recipient`` (registrar → stations; retained): the recipient key."""
        return f"{self.prefix}/_site/recipient"

    def site_trust(self) -> str:
        """``P/_site/trust`` (registrar → stations, broker agent; retained): the CA rotation's trust update."""
        return f"{self.prefix}/_site/trust"

    def registrar_site_acl(self) -> tuple[list[str], list[str]]:
        """The registrar's site topics: (read, write) — the receipt, the root's bulletin; the
        bulletin, the key, the trust update."""
        return ([self.site_crl_installed(), self.site_crl_root()],
                [self.site_crl(), self.site_recipient(), self.site_trust()])

    def broker_agent_acl(self) -> tuple[list[str], list[str]]:
        """The broker agent's topics: (read, write) — both bulletins, the trust update; the receipt."""
        return [*self.site_crls(), self.site_trust()], [self.site_crl_installed()]

    def admin_acl(self) -> tuple[list[str], list[str]]:
        """The admin machine's topics (CN ``admin``): (read, write) — the receipt and the
        registrar's bulletin (to import relay-host revocations); the root's bulletin."""
        return [self.site_crl_installed(), self.site_crl()], [self.site_crl_root()]

    def relay_acl(self) -> tuple[list[str], list[str]]:
        """A relay worker's topics: (read, write) — every station's uplink, its ack and cmd."""
        return self.relay_subscriptions(), [f"{self.prefix}/+/ack", f"{self.prefix}/+/cmd"]

    def operator_acl(self) -> tuple[list[str], list[str]]:
        """An operator's topics: (write, read) — commands out, answers and statuses in.

        Never ``ack`` (a forged "stored" makes a station drop an undelivered photo) and
        never captures.
        """
        return [f"{self.prefix}/+/cmd"], [f"{self.prefix}/+/event", f"{self.prefix}/+/status"]

    def parse(self, topic: str) -> ParsedTopic:
        """Understand a topic of §5 under this prefix, or raise ``TopicError``."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise TopicError("topic is not under the configured prefix")
        levels = topic[len(head):].split("/")
        device = _device(levels[0])
        if len(levels) == 2 and levels[1] in DEVICE_TOPICS:
            return ParsedTopic(device, levels[1])
        if len(levels) == 4 and levels[1] == "capture" and levels[3] == "manifest":
            return ParsedTopic(device, "manifest", _capture(levels[2]))
        if len(levels) == 5 and levels[1] == "capture" and levels[3] == "part":
            if not _INDEX.fullmatch(levels[4]):
                raise TopicError("part index must be decimal without leading zeros")
            return ParsedTopic(device, "part", _capture(levels[2]), _part(int(levels[4])))
        raise TopicError("topic is not one of the shapes of DESIGN §5")
