"""The value shapes a station's status and audit events may carry, and the clinicam time stamp.

Status (``protocol.status``) and audit events (``protocol.events``) are read by people
at the relay, so each of their keys has a closed shape checked here: words, counts,
hex ids, RFC 3339 stamps. Free text has no shape that passes, so it cannot reach the
relay's files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

Shape = Callable[[object], bool]

WORD = re.compile(r"[a-z0-9-]{1,32}")  # state, event name, reason code
CMD_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
FW = re.compile(r"[A-Za-z0-9_.+-]{1,40}")


def utc_stamp(at: float) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``, the format of every clinicam time."""
    dt = datetime.fromtimestamp(at, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def matches(pattern: re.Pattern[str]) -> Shape:
    """A string that ``pattern`` matches whole."""
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


is_stamp = matches(STAMP)  # an RFC 3339 time that names its offset


def is_count(v: object) -> bool:
    """A whole number, not negative (``True`` is not a count)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def is_amount(v: object) -> bool:
    """A whole or fractional number, not negative."""
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def is_flag(v: object) -> bool:
    return isinstance(v, bool)


def list_of(shape: Shape) -> Shape:
    """A JSON list whose every item has ``shape``."""
    return lambda v: isinstance(v, list) and all(shape(x) for x in v)


def keep(obj: object, shapes: dict[str, Shape]) -> dict[str, object]:
    """The keys of ``obj`` that ``shapes`` names, each only if its value has its shape."""
    if not isinstance(obj, Mapping):
        return {}
    return {k: v for k, v in obj.items() if k in shapes and shapes[k](v)}
