"""The value shapes a station's status and audit events may carry, and the clinicam time stamp.

Status (``protocol.status``) and audit events (``protocol.events``) are read by people
at the relay, so each of their keys has a closed shape checked here: words, counts,
hex ids, RFC 3339 stamps. Free text has no shape that passes, so it cannot reach the
relay's files. :class:`ShapedMessage` is what both messages do with their shapes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

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


def shaped(shape: Shape) -> Any:
    """A field of a :class:`ShapedMessage`: ``None`` ("not said") unless set; the reader
    keeps it only if its value has ``shape``."""
    return dataclasses.field(default=None, metadata={"shape": shape})


class ShapedMessage:
    """A JSON-object message whose every key has a closed shape.

    Subclasses are frozen dataclasses of :func:`shaped` fields, which are the message's
    keys. The builder writes the fields that are set; the reader keeps a key only if its
    value has its shape, so free text is dropped, and the builder has no other keys.
    """

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # a subclass is a dataclass

    @classmethod
    def shapes(cls) -> dict[str, Shape]:
        """Each key of the message and the shape its value must have, in order."""
        return {f.name: f.metadata["shape"] for f in dataclasses.fields(cls)}

    def as_dict(self) -> dict[str, Any]:
        """The message as a JSON object: the fields that are set."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else (
                    dict(value) if isinstance(value, Mapping) else value)
        return out

    def payload(self) -> bytes:
        """The message as a station publishes it (sorted keys, no spaces)."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, obj: object) -> Self:
        """What the relay keeps of a decoded message: its keys, each only if well-formed."""
        return cls(**keep(obj, cls.shapes()))

    @classmethod
    def parse(cls, payload: bytes | bytearray) -> Self | None:
        """The well-formed part of a message; None if it is not a JSON object."""
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return cls.from_dict(obj) if isinstance(obj, dict) else None
