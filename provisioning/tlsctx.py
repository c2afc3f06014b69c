"""The one way clinicam clients build TLS: site CA pinned, hostname checked, cert presented.

DESIGN §3.5: TLS 1.2 or later, the site CA as the only trust anchor (never the system
store), the broker's name verified, and a client certificate always presented. There
is deliberately no switch to turn any of it off.

``ca`` may hold several roots (a CA rotation's overlap, issue 17): OpenSSL takes every
certificate of the file as an anchor, so the broker verifies under either root.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from clinicam.common.errors import ProvisioningError


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """An ``SSLContext`` for a station, relay or tool connecting to the site broker."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ProvisioningError(
            f"cannot load the TLS identity ({Path(cert).name}, {Path(key).name}, "
            f"{Path(ca).name}): check that the files exist, are readable and belong together"
        ) from exc
    return ctx
