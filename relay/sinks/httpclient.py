"""A small HTTPS client for the record-system sinks: CA pinning, basic or bearer auth,
and failures mapped to the closed set of sink reason codes.

The standard library is enough for a handful of POSTs and GETs, and it keeps the relay's
TLS settings in one place: the configured CA file only (never the system store, so a
public CA cannot vouch for the PACS), hostname checked, TLS 1.2 at least. Plain
``http://`` is accepted only to a loopback address (a PACS on the relay's own host).

Secrets are read from their files on each request, so a rotated token is picked up
without a restart, and neither a secret nor a response body reaches a log or a
message: a server's error text could echo PHI.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clinicam.common.errors import ConfigError
from clinicam.protocol.reasons import SinkError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Auth:
    """How to authenticate: ``none``, ``basic`` (username + password file) or ``bearer``."""

    kind: str = "none"
    username: str = ""
    password_file: Path | None = None
    token_file: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("none", "basic", "bearer"):
            raise ConfigError(f"sink auth must be none, basic or bearer, not {self.kind!r}")
        if self.kind == "basic" and not (self.username and self.password_file):
            raise ConfigError("basic auth needs username and password_file")
        if self.kind == "bearer" and not self.token_file:
            raise ConfigError("bearer auth needs token_file")

    def header(self) -> str | None:
        """The ``Authorization`` value, read fresh from the secret files."""
        if self.kind == "basic":
            assert self.password_file is not None
            password = _read_secret(self.password_file)
            raw = f"{self.username}:{password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        if self.kind == "bearer":
            assert self.token_file is not None
            return "Bearer " + _read_secret(self.token_file)
        return None


def auth_from_config(cfg: Any) -> Auth:
    """``Auth`` from a sink config's ``auth``, ``username``, ``password_file``, ``token_file``."""
    return Auth(
        cfg.auth,
        username=cfg.username,
        password_file=Path(cfg.password_file) if cfg.password_file else None,
        token_file=Path(cfg.token_file) if cfg.token_file else None,
    )


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SinkError("sink-auth", f"cannot read the sink's secret file {path}") from exc


@dataclass(frozen=True)
class Response:
    """A finished HTTP exchange: status, lower-cased headers and the body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def reason_for_status(status: int) -> str:
    """Sink reason code of an HTTP error status: every one of them means *retry*."""
    if status in (401, 403, 407):
        return "sink-auth"
    if status >= 500 or status in (404, 408, 429):
        return "sink-unavailable"  # a 404 is a wrong or missing endpoint, not a bad photo
    return "sink-refused"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpClient:
    """Requests against one base URL, with the relay's TLS and auth settings."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | str | None = None,
        auth: Auth | None = None,
        timeout_s: float = 30.0,
        sink_name: str = "sink",
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"sink {sink_name}: url must be https://host[:port]/path")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ConfigError(f"sink {sink_name}: plain http is allowed only to loopback")
        if parts.scheme == "https" and ca_file is None:  # never the system store
            raise ConfigError(f"sink {sink_name}: https needs ca_file (the CA to pin)")
        self.base_path = parts.path.rstrip("/")
        self._host, self._port = parts.hostname, parts.port
        https = parts.scheme == "https" and ca_file is not None
        self._tls = _tls_context(Path(ca_file)) if https and ca_file is not None else None
        self._auth = auth or Auth()
        self._timeout = timeout_s
        self._name = sink_name

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """One request; raises ``SinkError`` when the server cannot be reached at all."""
        all_headers = {"Accept": "*/*", **(headers or {})}
        authorization = self._auth.header()
        if authorization:
            all_headers["Authorization"] = authorization
        target = path if path.startswith(("http://", "https://")) else self.base_path + path
        conn = self._connection()
        try:
            conn.request(method, target, body=body, headers=all_headers)
            raw = conn.getresponse()
            response = Response(
                raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read()
            )
        except ssl.SSLCertVerificationError as exc:
            log.warning("sink %s: server certificate not trusted", self._name)
            raise SinkError("sink-auth", f"sink {self._name}: server certificate refused") from exc
        except (OSError, http.client.HTTPException) as exc:
            log.warning("sink %s: unreachable (%s)", self._name, type(exc).__name__)
            raise SinkError("sink-unavailable", f"sink {self._name} is unreachable") from exc
        finally:
            conn.close()
        log.debug("sink %s: %s -> %d (%d bytes)", self._name, method, response.status,
                  len(response.body))
        return response

    def checked(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = ()) -> Response:
        """Like ``request`` but an error status (≥ 400 and not in ``ok``) raises ``SinkError``."""
        response = self.request(method, path, body, headers)
        if response.status >= 400 and response.status not in ok:
            reason = reason_for_status(response.status)
            log.warning("sink %s: HTTP %d -> %s", self._name, response.status, reason)
            raise SinkError(reason, f"sink {self._name}: HTTP {response.status} ({reason})")
        return response

    def _connection(self) -> http.client.HTTPConnection:
        if self._tls is None:
            return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return http.client.HTTPSConnection(
            self._host, self._port, timeout=self._timeout, context=self._tls
        )


def _tls_context(ca_file: Path) -> ssl.SSLContext:
    """Trust only ``ca_file``; hostname verified; TLS 1.2 or later."""
    if not ca_file.is_file():
        raise ConfigError(f"sink CA file {ca_file} not found: set ca_file to the PACS/EMR CA")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


