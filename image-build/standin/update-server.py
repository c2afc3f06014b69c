"""update-server.py -- the site's update server, as the tests run it: HTTPS with the
site CA pinned and a client certificate required (as the broker), serving the bundles
of one directory with HTTP Range (update-fetch resumes with curl -C -).

    python3 update-server.py --dir DIR --cert PEM --key KEY --ca CA.pem
        [--bind 127.0.0.1] [--port-file FILE] [--log FILE] [--cut-first NAME]

It listens on a free port (written to --port-file once it serves). --cut-first NAME
cuts the first full transfer of NAME half way (a dropped Wi-Fi link): a client that
resumes asks for the rest with a Range header. Every request is one JSON line in --log
(path, range, status, bytes sent; bundle names only, nothing about patients).
Used by make test-update (the guest fetches from 10.0.2.2, QEMU's host) and by
tests/appliance/test_appliance_update_fetch.py. Test-only: never part of an image.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import ssl
import sys
import threading
from pathlib import Path
from typing import ClassVar

CHUNK = 1 << 20


class Handler(http.server.BaseHTTPRequestHandler):
    """GET of DIR/NAME, whole or from a byte on ("Range: bytes=N-")."""

    root: ClassVar[Path]
    cut: ClassVar[set[str]] = set()
    log: ClassVar[Path | None] = None
    lock = threading.Lock()

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        path = self.root / name
        rng = self.headers.get("Range", "")
        if "/" in name or not name or not path.is_file():
            self._record(name, rng, 404, 0)
            self.send_error(404)
            return
        size = path.stat().st_size
        try:
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
        except ValueError:
            start = size + 1
        if start > size:
            self._record(name, rng, 416, 0)
            self.send_error(416)
            return
        length = size - start
        cut = not rng and name in self.cut
        if cut:
            self.cut.discard(name)
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        sent, limit = 0, length // 2 if cut else length
        with path.open("rb") as f:
            f.seek(start)
            while sent < limit:
                block = f.read(min(CHUNK, limit - sent))
                if not block:
                    break
                self.wfile.write(block)
                sent += len(block)
        self._record(name, rng, 206 if rng else 200, sent, cut=cut)
        if cut:
            self.wfile.flush()
            self.connection.shutdown(2)  # the Wi-Fi dropped

    def _record(self, name: str, rng: str, status: int, sent: int, cut: bool = False) -> None:
        if self.log is None:
            return
        line = json.dumps({"path": name, "range": rng, "status": status, "sent": sent, "cut": cut})
        with self.lock, self.log.open("a") as f:
            f.write(line + "\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(args: argparse.Namespace) -> http.server.ThreadingHTTPServer:
    """Bind, wrap in mutual TLS and say the port; the caller runs serve_forever."""
    Handler.root = Path(args.dir)
    Handler.cut = set(args.cut_first)
    Handler.log = Path(args.log) if args.log else None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # like the broker: no certificate, no bundle
    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(f"{server.server_address[1]}\n")
        os.replace(tmp, args.port_file)
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--log")
    p.add_argument("--cut-first", action="append", default=[], metavar="NAME")
    args = p.parse_args(argv)
    try:
        server = serve(args)
    except (OSError, ssl.SSLError) as exc:
        print(f"update-server: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
