"""A real Prometheus (Debian's ``prometheus``) for the metrics tests.

Started on a free loopback port with a one-second scrape of the given targets and,
optionally, rule files; queried through its HTTP API like a dashboard would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clinicam.tools.brokerproc import LOOPBACK, free_port

WAIT = 60.0


class Prometheus:
    """``prometheus`` in a child process; ``query()`` returns the instant vector."""

    def __init__(self, workdir: Path, targets: Sequence[str], rules: Sequence[Path] = ()) -> None:
        exe = shutil.which("prometheus")
        assert exe, "Debian's prometheus package is missing: run scripts/bootstrap.sh base"
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(r) for r in rules],
            "scrape_configs": [{"job_name": "clinicam-relay", "static_configs": [{"targets": list(targets)}]}],
        }))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={LOOPBACK}:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.base = f"http://{LOOPBACK}:{self.port}"
        self.eventually(lambda: self._ready(), "prometheus ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        """The single sample of ``expr`` now, None when the vector is empty."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, want: Callable[[float | None], bool], what: str = "") -> float | None:
        found: list[float | None] = []

        def check() -> bool:
            found.append(self.value(expr))
            return want(found[-1])
        self.eventually(check, what or expr)
        return found[-1]

    def eventually(self, done: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline, tick = time.monotonic() + timeout, threading.Event()
        while not done():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{what}: not met in time\n{self.log_path.read_text()[-2000:]}")
            tick.wait(0.2)  # a poll interval, not a delay the test relies on

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
