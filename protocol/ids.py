"""The identifier grammars of the v1 contract (DESIGN §4, §5), written once.

A device id is the CN of the station's certificate and a level of every topic; a
capture id is 128 random bits in lowercase hex and names the capture in topics, the
manifest, the AAD and the ack. Everything that checks one of them uses these patterns
(``fullmatch``), so the station, the relay, provisioning and the broker ACL agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

DEVICE_ID = re.compile(r"[a-z0-9-]{3,64}")
DEVICE_ID_RULE = "[a-z0-9-]{3,64}"  # for messages: what a device id must match
CAPTURE_ID = re.compile(r"[0-9a-f]{32}")
HEX32 = CAPTURE_ID  # a boot id has the same shape


def is_device_id(value: object) -> bool:
    return isinstance(value, str) and DEVICE_ID.fullmatch(value) is not None


def is_capture_id(value: object) -> bool:
    return isinstance(value, str) and CAPTURE_ID.fullmatch(value) is not None


def is_hex(n: int) -> Callable[[Any], bool]:
    """A check for ``n`` lowercase hex characters (ids, fingerprints, digests)."""
    pattern = re.compile(f"[0-9a-f]{{{n}}}")
    return lambda x: isinstance(x, str) and pattern.fullmatch(x) is not None
