"""Run a real Mosquitto from a site's generated configuration (tests, benchmarks, demo).

The launcher does not write its own broker config: it copies the one ``site-init``
generated and rewrites only what must differ on a developer machine — the file paths,
the listener address (a free loopback port), the log destination, and ``user``.
Started as root, Mosquitto drops to the ``mosquitto`` user and then cannot read a 0600
root-owned key (DESIGN §9); so the copy names the current user. Everything else —
mTLS, ``require_certificate``, identity as username and client id, the ACL, the CRL,
the packet limit — is exactly what production runs.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from clinicam.common.errors import ProvisioningError
from clinicam.provisioning import brokerconf

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
RELOADED = "Reloading config."  # Mosquitto's log line on SIGHUP


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the broker binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rewrite_conf(
    text: str,
    paths: Mapping[str, Path],
    *,
    host: str,
    port: int,
    log_path: Path,
    replace: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """The generated ``mosquitto.conf`` with paths, listener, log and user rewritten.

    ``replace`` swaps the value of existing keys (e.g. ``tls_version``); ``extra``
    lines go at the end, that is into the listener's section.
    """
    replace = dict(replace or {})
    out: list[str] = []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        if key in paths:
            line = f"{key} {paths[key]}"
        elif key == "listener":
            line = f"listener {port} {host}"
        elif key in replace:
            line = f"{key} {replace.pop(key)}"
        out.append(line)
    out += [f"{k} {v}" for k, v in replace.items()]
    out += [
        "",
        "# Added by clinicam.tools.brokerproc for a local run.",
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
        f"log_dest file {log_path}",
        "log_type all",
        *extra,
    ]
    return "\n".join(out) + "\n"


class Mosquitto:
    """A Mosquitto process run from a site's ``broker/`` folder.

    ``acl_extra`` is appended to a copy of the ACL (tests add a watcher identity
    there, never to the site's own file). ``probe_cert`` = ``(cert, key)`` lets the
    readiness probe present a client certificate, so the broker's log does not show
    a refused anonymous handshake at every start. ``start()`` after ``stop()`` restarts on the
    same port, for broker-restart tests. Use as a context manager or call ``stop()``.
    """

    def __init__(
        self,
        broker_dir: Path,
        workdir: Path,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        acl_extra: str = "",
        replace: Mapping[str, str] | None = None,
        extra: Sequence[str] = (),
        binary: str = "mosquitto",
        probe_cert: tuple[Path, Path] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker_dir = Path(broker_dir).resolve()
        self.workdir = Path(workdir).resolve()
        self.host = host
        self._fixed_port = port is not None
        self.port = port or free_port(host)
        self.acl_extra = acl_extra
        self.replace = dict(replace or {})
        self.extra = list(extra)
        self.binary = shutil.which(binary) or binary
        self.probe_cert = probe_cert
        self._clock = clock
        self._proc: subprocess.Popen[bytes] | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        self.pid_path = self.workdir / "mosquitto.pid"

    # -- configuration ------------------------------------------------------------------

    def _write_conf(self) -> None:
        acl = self.workdir / "acl"
        acl.write_text((self.broker_dir / "acl").read_text() + "\n" + self.acl_extra + "\n")
        paths = {k: self.broker_dir / v for k, v in brokerconf.CONF_FILES.items()}
        paths["acl_file"] = acl
        paths["pid_file"] = self.pid_path  # the broker agent's reload signal goes here
        text = (self.broker_dir / "mosquitto.conf").read_text()
        conf = rewrite_conf(
            text,
            paths,
            host=self.host,
            port=self.port,
            log_path=self.log_path,
            replace=self.replace,
            extra=self.extra,
        )
        self.conf_path.write_text(conf)

    # -- process ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start and return once a TLS handshake on the listener succeeds."""
        if self.running:
            return self
        for attempt in range(3):
            self._write_conf()
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready(timeout):
                log.debug("mosquitto pid %s listening on %s:%s", self.pid, self.host, self.port)
                return self
            if self._fixed_port or "Address already in use" not in self.log_text():
                break
            self.port = free_port(self.host)  # lost a race for the port: take another
            log.debug("port taken, retry %d", attempt + 1)
        self.stop()
        raise ProvisioningError(
            f"mosquitto did not start on {self.host}:{self.port}: see {self.log_path}\n" + self.log_text()[-2000:]
        )

    def _wait_ready(self, timeout: float) -> bool:
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            if not self.running:
                return False
            if self._handshake():
                return True
            time.sleep(0.02)  # readiness poll of a child process, not a test delay
        return False

    def _handshake(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.broker_dir / "ca.pem"))
        ctx.check_hostname = False  # the probe only asks "is TLS up?", clients do verify
        if self.probe_cert is not None:
            ctx.load_cert_chain(*map(str, self.probe_cert))
        try:
            with (
                socket.create_connection((self.host, self.port), timeout=1) as raw,
                ctx.wrap_socket(raw),
            ):
                return True
        except (OSError, ssl.SSLError):
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def reload(self, timeout: float = 10.0) -> None:
        """Copy the site's current ACL (as an admin does) and SIGHUP; return once reloaded.

        Mosquitto re-reads the ACL — for open connections too — and the CRL for *new*
        connections only: a connected revoked station keeps its TLS session (it loses
        its ACL rights); to cut it off, restart the broker. The reload is synchronous in
        the broker's loop, after its "Reloading config." log line: nothing the broker
        handles after that line sees the old ACL.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise ProvisioningError("mosquitto is not running: start() it first")
        before = self.log_text().count(RELOADED)
        self._write_conf()
        self._proc.send_signal(signal.SIGHUP)
        deadline = self._clock() + timeout
        while self.log_text().count(RELOADED) <= before:
            if self._clock() > deadline or not self.running:
                raise ProvisioningError(f"mosquitto did not reload: see {self.log_path}")
            time.sleep(0.02)  # polling a child process's log, not a test delay

    def kill(self) -> None:
        """SIGKILL: a broker crash, for fault tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
