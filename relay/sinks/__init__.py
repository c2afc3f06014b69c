"""The relay's sink interface: where an opened capture is filed (directory, PACS, EMR).

A sink is idempotent on ``(device, capture_id)``: storing the same capture twice
returns the same reference and files it once. A sink that cannot store raises
``SinkError`` with a ``sink-*`` reason code, which the relay answers with ``retry``
(never ``rejected``: a record-system failure must not lose a photo, DESIGN §3.6).
A patient the record system does not know raises ``SinkUnknownPatient`` so the relay
can route the capture to quarantine instead of a guessed chart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class OpenedCaptureLike(Protocol):
    """What a sink may read of an opened capture (``clinicam.protocol.sealing``)."""

    @property
    def device(self) -> str: ...  # device id, the certificate's CN
    @property
    def capture_id(self) -> str: ...  # 32 lowercase hex
    @property
    def manifest(self) -> Mapping[str, Any]: ...  # the verified manifest object ``m``
    @property
    def metadata(self) -> Mapping[str, Any]: ...  # part 0, DESIGN §6 keys
    @property
    def image(self) -> bytes: ...  # the station's JPEG, as taken


class Sink(Protocol):
    """One record system the relay files captures into."""

    name: str

    def store(self, capture: OpenedCaptureLike) -> str:
        """File the capture (idempotently) and return a reference to it."""
        ...

    def void(self, device: str, capture_id: str) -> None:
        """Mark a stored capture entered-in-error; never delete it."""
        ...
