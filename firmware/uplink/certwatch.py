"""A certificate renewed by hand (``provision install --cert``), used without a restart.

(Renewal over MQTT, ``firmware.uplink.renewal``, swaps key and certificate itself; this
is the administrator's path of the README, for sites without a registrar.)
``clinicam provision install --cert new.pem`` replaces ``device.pem`` in the identity
folder while the station runs. ``CertificateWatch.check`` notices it (the uplink asks
every ``expire_every_s`` and before each reconnect): when the file holds a newer
certificate for the same device and the same key the station holds in memory, it
becomes the station's identity at once — captures sealed from then on carry it, the
status shows its expiry — and the TLS context loads it before the next connection
(``update_tls``, called only in paho's network thread, the one thread that connects;
``SSLContext.load_cert_chain`` replaces the chain in place). The broker does not look
at a certificate again during a connection, so the running one stays until the next
reconnect. Anything else (a new key, another device, a damaged or older file) keeps
the running certificate and says that a restart is needed.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clinicam.common.errors import ClinicamError
from clinicam.provisioning import pki
from clinicam.provisioning.identity import load_identity

log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class CertificateWatch:
    """Notices a renewed ``device.pem``; hands it to the sealer (via the caller) and to TLS."""

    def __init__(self, identity: Any, context: ssl.SSLContext,
                 load: Callable[[Path], Any] = load_identity) -> None:
        self.identity = identity
        self._context = context
        self._load = load
        self._seen = _stamp(identity.cert_path)
        self._tls_behind: Any | None = None
        self._lock = threading.Lock()

    def check(self) -> Any | None:
        """The renewed identity when one was just found on disk, else ``None`` (any thread)."""
        with self._lock:
            stamp = _stamp(self.identity.cert_path)
            if stamp is None or stamp == self._seen:
                return None
            self._seen = stamp
            new = self._acceptable(self.identity)
            if new is not None:
                self.identity = self._tls_behind = new
                log.info("uplink: renewed certificate picked up (serial %s, valid until %s)",
                         pki.serial_hex(new.cert.serial_number), f"{new.not_after:%Y-%m-%d}")
            return new

    def adopted(self, identity: Any) -> None:
        """The uplink changed identity itself (renewal over MQTT): that is the new baseline."""
        with self._lock:
            self.identity, self._tls_behind = identity, None
            self._seen = _stamp(identity.cert_path)

    def update_tls(self) -> bool:
        """Before a (re)connect, in the connecting thread: present the renewed certificate."""
        with self._lock:
            new, self._tls_behind = self._tls_behind, None
        if new is None:
            return False
        self._context.load_cert_chain(certfile=str(new.cert_path), keyfile=str(new.key_path))
        return True

    def _acceptable(self, old: Any) -> Any | None:
        try:
            new = self._load(old.dir)
        except ClinicamError as exc:
            log.warning("uplink: the installed identity changed but cannot be loaded (%s): keeping the "
                        "running certificate; 'clinicam station selftest' says why", type(exc).__name__)
            return None
        if new.cert.serial_number == old.cert.serial_number:
            return None
        if new.device_id != old.device_id or not pki.same_key(new.cert, old.key):
            log.warning("uplink: the installed certificate is for another device or key: keeping the "
                        "running one until the station restarts (systemctl restart clinicam-station)")
            return None
        if new.not_after < old.not_after:
            log.warning("uplink: the installed certificate is older than the running one: keeping it")
            return None
        return new
