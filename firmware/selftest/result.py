"""One selftest line: a named check, its verdict, what was found and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["PASS", "WARN", "FAIL"]
PASS: Status = "PASS"  # noqa: S105 - a verdict, not a password
WARN: Status = "WARN"
FAIL: Status = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    """``detail`` says what was found; ``remedy`` (empty when nothing is to be done) how to fix it.

    Neither ever holds PHI: checks look only at configuration, identity files and devices.
    """

    name: str
    status: Status
    detail: str
    remedy: str = ""
